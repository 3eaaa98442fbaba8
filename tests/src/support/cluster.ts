import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { EtcdTestCluster } from '@shale/testing';
import { type ShaleProcess, startShale } from './shale-process.js';

/** The backend id every test cluster's proxy serves. */
export const TEST_BACKEND = 'local';

/** etcd + 6 ASDs + a proxy, each a real process; everything under one temp dir. */
export interface Cluster {
  readonly dir: string;
  readonly etcd: EtcdTestCluster;
  /** The --kv argument for daemons of this cluster. */
  readonly kv: string;
  readonly proxy: ShaleProcess;
  readonly processes: ShaleProcess[];
  /**
   * A volumedriver on this cluster (its write buffer in `dir`; port 0 picks one); stopped
   * by stop(). It reaches the backend with the proxy engine in its own process (`engine`,
   * as `shale up` runs it) or through the cluster's proxy process over gRPC (`proxy`).
   */
  startVolumedriver(
    nodeId: string,
    dir: string,
    port?: number,
    extra?: readonly string[],
    backendVia?: 'engine' | 'proxy',
  ): Promise<ShaleProcess>;
  /** An edge in front of the given volumedriver ports; stopped by stop(). */
  startEdge(volumedriverPorts: readonly number[], extra?: readonly string[]): Promise<ShaleProcess>;
  /** SIGKILLs every process it started (newest first), stops etcd, removes the dir. */
  stop(): Promise<void>;
}

export async function startCluster(prefix: string): Promise<Cluster> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  const processes: ShaleProcess[] = [];
  let etcd: EtcdTestCluster | undefined;
  const stop = async (): Promise<void> => {
    for (const proc of [...processes].reverse()) await proc.kill9();
    await etcd?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    const t0 = Date.now();
    etcd = await EtcdTestCluster.start(1);
    const kv = `etcd://${etcd.endpoint(0)}`;
    const asds = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((i) =>
        startShale([
          'asd',
          'serve',
          '--dir',
          path.join(dir, `asd${i}`),
          '--port',
          '0',
          '--node-id',
          'node1',
          '--reserve-bytes',
          '0',
        ]),
      ),
    );
    processes.push(...asds);
    const proxy = await startShale([
      'proxy',
      'serve',
      '--kv',
      kv,
      '--backend',
      TEST_BACKEND,
      '--port',
      '0',
      '--cache-dir',
      path.join(dir, 'cache'),
      '--cache-bytes',
      '64MiB',
      ...asds.flatMap((asd) => ['--asd', `127.0.0.1:${asd.port}`]),
    ]);
    processes.push(proxy);
    process.stdout.write(`cluster up in ${Date.now() - t0} ms\n`);
    const started = etcd;
    return {
      dir,
      etcd: started,
      kv,
      proxy,
      processes,
      async startVolumedriver(nodeId, vdDir, port = 0, extra = [], backendVia = 'engine') {
        const vd = await startShale(
          [
            'volumedriver',
            'serve',
            '--kv',
            kv,
            ...(backendVia === 'engine'
              ? ['--backend', TEST_BACKEND]
              : ['--proxy', `127.0.0.1:${proxy.port}`]),
            '--dir',
            vdDir,
            '--port',
            String(port),
            '--node-id',
            nodeId,
            ...extra,
          ],
          60_000,
        );
        processes.push(vd);
        return vd;
      },
      async startEdge(volumedriverPorts, extra = []) {
        const edge = await startShale([
          'edge',
          'serve',
          '--port',
          '0',
          ...volumedriverPorts.flatMap((port) => ['--volumedriver', `127.0.0.1:${port}`]),
          ...extra,
        ]);
        processes.push(edge);
        return edge;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
