import { EtcdKv, type KvStore, LevelKv, RemoteKv } from '@shale/arakoon-kv';
import { type OptionSpec, type OptionValues, optionalString, UsageError } from '../command.js';

/** The options that pick a metadata store, shared by every daemon that needs one. */
export const KV_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  kv: {
    type: 'string',
    valueName: 'etcd://HOST:PORT[,HOST:PORT...]|kv://HOST:PORT',
    description:
      'the metadata store: an etcd cluster, or a `shale kv serve` shared by the daemons of one machine',
  },
  'kv-dir': {
    type: 'string',
    valueName: 'DIR',
    description:
      'an embedded metadata store in DIR instead (this process only; to share one, run `shale kv serve --dir DIR` and pass --kv kv://HOST:PORT)',
  },
};

const KV_SPEC_HELP = 'etcd://HOST:PORT[,HOST:PORT...] or kv://HOST:PORT';

export async function openKv(values: Readonly<OptionValues>): Promise<KvStore> {
  const spec = optionalString(values, 'kv');
  const dir = optionalString(values, 'kv-dir');
  if ((spec === undefined) === (dir === undefined)) {
    throw new UsageError(`give exactly one of --kv ${KV_SPEC_HELP} and --kv-dir DIR`);
  }
  if (dir !== undefined) return LevelKv.open({ dir });
  const given = spec as string;
  if (given.startsWith('kv://')) {
    const endpoint = given.slice('kv://'.length);
    if (!/^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):[0-9]{1,5}$/.test(endpoint)) {
      throw new UsageError(`--kv kv:// names one server as kv://HOST:PORT, not "${given}"`);
    }
    return new RemoteKv({ endpoint });
  }
  if (!given.startsWith('etcd://')) {
    throw new UsageError(`--kv must look like ${KV_SPEC_HELP}, not "${given}"`);
  }
  const endpoints = given
    .slice('etcd://'.length)
    .split(',')
    .filter((endpoint) => endpoint.length > 0);
  if (endpoints.length === 0) throw new UsageError('--kv names no endpoint');
  return new EtcdKv({ endpoints });
}
