/** Test helpers shared by every package's tests: never imported by product code. */
export { ETCD_BINARY, EtcdTestCluster, requireEtcd } from './etcd-test-cluster.js';
export { freePort } from './free-port.js';
export { type CodedError, rejectsWith, throwsWith } from './rejects-with.js';
export {
  type CommandOptions,
  type CommandResult,
  mustRun,
  runCommand,
  TOOL_PATH,
} from './run-command.js';
export { type Random, seededRandom, xorshift32Random } from './seeded-random.js';
export { TcpRelay } from './tcp-relay.js';
