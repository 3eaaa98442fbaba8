/**
 * Helpers for the proxy engine's tests (not exported from the package): real ASD daemons
 * as child processes (`bin/shale asd serve`), a LevelKv in a temporary directory, and a
 * backend registered over them. Copied in spirit from tests/src/support/shale-process.ts
 * (a package does not import from tests/).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { LevelKv } from '@shale/arakoon-kv';
import { AsdClient } from '@shale/asd';
import { BackendRegistry } from './backend-registry.js';
import type { OsdAddress } from './osd.js';

/** The repository root, from packages/alba-proxy/dist/. */
export const REPO_ROOT = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
);
export const SHALE_BIN = path.join(REPO_ROOT, 'bin', 'shale');

interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

async function startAsdProcess(
  dir: string,
  port: number,
  nodeId: string,
  extraArgs: readonly string[] = [],
): Promise<{ running: Running; ready: Record<string, unknown> }> {
  const args = [
    'asd',
    'serve',
    '--dir',
    dir,
    '--port',
    String(port),
    '--node-id',
    nodeId,
    ...extraArgs,
  ];
  const child = spawn(SHALE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ASD in ${dir} not ready in 30 s; stderr:\n${stderr}`));
    }, 30_000);
    const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => {
      if (!line.startsWith('{')) return;
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (parsed.event === 'listening') {
        clearTimeout(timer);
        resolve(parsed);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`ASD in ${dir} exited before it was ready; stderr:\n${stderr}`));
    });
  });
  return { running: { child, exited }, ready };
}

export interface TestAsd {
  readonly dir: string;
  port: number;
  osdId: string;
  readonly nodeId: string;
  running: Running | undefined;
}

/** N real ASDs on one node, each in its own directory under `root`. */
export class AsdCluster {
  private constructor(
    readonly asds: TestAsd[],
    private readonly extraArgs: readonly string[],
  ) {}

  /** `extraArgs` go to every `shale asd serve` (e.g. --capacity-bytes). */
  static async start(
    root: string,
    count: number,
    nodeId = 'node1',
    extraArgs: readonly string[] = [],
  ): Promise<AsdCluster> {
    const cluster = new AsdCluster([], extraArgs);
    try {
      for (let i = 0; i < count; i++) {
        const dir = path.join(root, `asd${i}`);
        const { running, ready } = await startAsdProcess(dir, 0, nodeId, extraArgs);
        cluster.asds.push({
          dir,
          port: Number(ready.port),
          osdId: String(ready.asdId),
          nodeId,
          running,
        });
      }
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  addresses(): OsdAddress[] {
    return this.asds.map((a) => ({
      osdId: a.osdId,
      nodeId: a.nodeId,
      address: `127.0.0.1:${a.port}`,
    }));
  }

  indexOf(osdId: string): number {
    const i = this.asds.findIndex((a) => a.osdId === osdId);
    if (i < 0) throw new Error(`no ASD ${osdId}`);
    return i;
  }

  /** Stops ASD i with a real signal and waits for its exit. */
  async stop(i: number, signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const asd = this.asds[i] as TestAsd;
    const running = asd.running;
    if (running === undefined) return;
    asd.running = undefined;
    running.child.kill(signal);
    await running.exited;
  }

  /** Starts ASD i again on its directory and port. */
  async restart(i: number): Promise<void> {
    const asd = this.asds[i] as TestAsd;
    if (asd.running !== undefined) return;
    const { running } = await startAsdProcess(asd.dir, asd.port, asd.nodeId, this.extraArgs);
    asd.running = running;
  }

  /** Every key on ASD i under a prefix (the ASD's own List). */
  async listKeys(i: number, prefix: string): Promise<string[]> {
    const asd = this.asds[i] as TestAsd;
    const client = new AsdClient(`127.0.0.1:${asd.port}`, { deadlineMs: 10_000 });
    try {
      const keys: string[] = [];
      for await (const entry of client.listAll(Buffer.from(prefix, 'latin1')))
        keys.push(entry.key.toString('latin1'));
      return keys;
    } finally {
      client.close();
    }
  }

  /** Keys under a prefix on every ASD, as "i:key". */
  async listAllKeys(prefix: string): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < this.asds.length; i++) {
      for (const key of await this.listKeys(i, prefix)) out.push(`${i}:${key}`);
    }
    return out;
  }

  /** Value files (objects/xx/<file id>) of ASD i with their modification times. */
  async valueFiles(i: number): Promise<{ file: string; mtimeMs: number; sizeBytes: number }[]> {
    const objects = path.join((this.asds[i] as TestAsd).dir, 'objects');
    const out: { file: string; mtimeMs: number; sizeBytes: number }[] = [];
    for (const fan of await fs.readdir(objects)) {
      for (const name of await fs.readdir(path.join(objects, fan))) {
        const file = path.join(objects, fan, name);
        const stat = await fs.stat(file);
        out.push({ file, mtimeMs: stat.mtimeMs, sizeBytes: stat.size });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.asds.map((_, i) => this.stop(i, 'SIGTERM')));
  }
}

export interface TestBackend {
  readonly root: string;
  readonly cluster: AsdCluster;
  readonly kv: LevelKv;
  readonly registry: BackendRegistry;
  readonly backendId: string;
  close(): Promise<void>;
}

/** A temp dir, N ASDs, a LevelKv and a backend over the ASDs. Close it in `after`. */
export async function startTestBackend(
  count = 6,
  asdArgs: readonly string[] = [],
): Promise<TestBackend> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-proxy-'));
  const cluster = await AsdCluster.start(root, count, 'node1', asdArgs);
  let kv: LevelKv | undefined;
  try {
    kv = await LevelKv.open({ dir: path.join(root, 'kv'), sync: false });
    const registry = new BackendRegistry(kv);
    const backendId = 'b0000000000000000000000000000001';
    await registry.createBackend({ backendId, name: 'local', osds: cluster.addresses() });
    const openedKv = kv;
    return {
      root,
      cluster,
      kv,
      registry,
      backendId,
      async close() {
        await cluster.close();
        await openedKv.close();
        await fs.rm(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await cluster.close();
    await kv?.close();
    throw err;
  }
}

/** Deterministic test bytes: random runs and compressible text runs. */
export function patternedData(sizeBytes: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(sizeBytes);
  let state = seed >>> 0 || 1;
  const run = 40 * 1024;
  for (let at = 0; at < sizeBytes; at++) {
    if (Math.floor(at / run) % 2 === 0) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      data[at] = state & 0xff;
    } else {
      data[at] = 0x41 + ((at + seed) % 26);
    }
  }
  return data;
}

/** A namespace id from a number (32 lowercase hex). */
export function nsIdOf(n: number): string {
  return n.toString(16).padStart(32, '0');
}
