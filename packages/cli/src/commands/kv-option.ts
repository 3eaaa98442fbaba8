import { EtcdKv, type KvStore, LevelKv } from '@shale/arakoon-kv';
import { type OptionSpec, type OptionValues, optionalString, UsageError } from '../command.js';

/** The options that pick a metadata store, shared by every daemon that needs one. */
export const KV_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  kv: {
    type: 'string',
    valueName: 'etcd://HOST:PORT[,HOST:PORT...]',
    description: 'the etcd cluster holding the metadata',
  },
  'kv-dir': {
    type: 'string',
    valueName: 'DIR',
    description: 'an embedded metadata store in DIR instead of etcd (one process only)',
  },
};

export async function openKv(values: Readonly<OptionValues>): Promise<KvStore> {
  const etcd = optionalString(values, 'kv');
  const dir = optionalString(values, 'kv-dir');
  if ((etcd === undefined) === (dir === undefined)) {
    throw new UsageError('give exactly one of --kv etcd://HOST:PORT,... and --kv-dir DIR');
  }
  if (dir !== undefined) return LevelKv.open({ dir });
  const spec = etcd as string;
  if (!spec.startsWith('etcd://'))
    throw new UsageError(`--kv must look like etcd://HOST:PORT[,HOST:PORT...], not "${spec}"`);
  const endpoints = spec
    .slice('etcd://'.length)
    .split(',')
    .filter((endpoint) => endpoint.length > 0);
  if (endpoints.length === 0) throw new UsageError('--kv names no endpoint');
  return new EtcdKv({ endpoints });
}
