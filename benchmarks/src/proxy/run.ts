/**
 * The proxy benchmark: a whole backend of real processes (six `shale asd serve`, one
 * `shale proxy serve` on an embedded metadata store) driven over gRPC by ProxyClient:
 *
 *   - 64 MiB SCO put and get throughput with (4,2), 4 MiB fragments (4 chunks x 6 fragments);
 *   - 4 KiB ranged reads at QD1 and QD32 (one slice per call), and 32 slices per call;
 *   - erasure coding inside the pipeline (encodeObject, none/none) next to the raw
 *     @ronomon/reed-solomon coder on the same 64 MiB, in this process.
 *
 * References in the same run: the same fragment bytes put to and read from the six ASDs
 * directly (AsdClient, no proxy: what the proxy adds on top of the ASDs), and direct 4 KiB
 * ASD ranged gets (the HPRM fast path's shape). Measures, never asserts.
 *
 *   node benchmarks/dist/proxy/run.js [--quick] [--scratch DIR]
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encodeObject, encodeParity, ProxyClient } from '@shale/alba-proxy';
import { AsdClient } from '@shale/asd';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const MIB = 1024 * 1024;
const SCO_BYTES = 64 * MIB;

const { values: args } = parseArgs({
  options: { quick: { type: 'boolean' }, scratch: { type: 'string' } },
});
const quick = args.quick === true;
const SCOS = quick ? 3 : 8;
const RANGED_MS = quick ? 2000 : 6000;

// Back of the envelope, written before measuring: a 64 MiB put moves 96 MiB of fragments
// through gRPC to six ASDs (each ~80 MiB/s for 1 MiB values on this VM, CPU-bound at ~1 ms
// per call plus ~15 ms per MiB): ~60-100 MiB/s of SCO, near the direct-to-ASD reference
// (the proxy adds one more gRPC hop of 64 MiB and the coder, ~2 GiB/s). Gets read 4 data
// fragments: ~100 MiB/s. A 4 KiB ranged read is two gRPC hops (client -> proxy -> ASD):
// ~2x the direct ASD latency, ~400 IOPS at QD1. Pipeline encode ~ raw coder speed (views).
const EXPECTED = {
  scoPutMiBps: 80,
  scoGetMiBps: 100,
  ranged4KiBQd1Iops: 400,
  ranged4KiBQd32Iops: 700,
  pipelineEncodeVsRawCoderRatio: 0.9,
};

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
  stop(): Promise<void>;
}

async function startShale(argv: string[], logFile: string): Promise<Started> {
  const child = spawn(path.join(REPO, 'bin', 'shale'), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  child.stderr?.on('data', (chunk: Buffer) => chunks.push(chunk));
  const port = await new Promise<number>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on('line', (line) => {
      if (!line.startsWith('{')) return;
      const parsed = JSON.parse(line) as { event?: string; port?: number };
      if (parsed.event === 'listening') resolve(Number(parsed.port));
    });
    child.once('exit', (code) =>
      reject(new Error(`shale ${argv[0]} exited ${code}: ${Buffer.concat(chunks).toString()}`)),
    );
  });
  return {
    child,
    port,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
      await writeFile(logFile, Buffer.concat(chunks));
    },
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

async function loops(depth: number, durationMs: number, op: () => Promise<void>) {
  const latenciesUs: number[] = [];
  const deadline = performance.now() + durationMs;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async () => {
      while (performance.now() < deadline) {
        const s = performance.now();
        await op();
        latenciesUs.push((performance.now() - s) * 1000);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  latenciesUs.sort((a, b) => a - b);
  return {
    opsPerSec: Math.round(latenciesUs.length / seconds),
    latencyUsP50: Math.round(percentile(latenciesUs, 50)),
    latencyUsP99: Math.round(percentile(latenciesUs, 99)),
  };
}

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

say(`expected (before measuring): ${JSON.stringify(EXPECTED)}`);
const scratch = await mkdtemp(path.join(args.scratch ?? '/var/tmp', 'proxy-bench-'));
const started: Started[] = [];
const results: Record<string, unknown> = {};
try {
  const asds: Started[] = [];
  for (let i = 0; i < 6; i += 1) {
    const asd = await startShale(
      ['asd', 'serve', '--dir', path.join(scratch, `asd${i}`), '--port', '0', '--node-id', 'bench'],
      path.join(scratch, `asd${i}.log`),
    );
    asds.push(asd);
    started.push(asd);
  }
  const proxy = await startShale(
    [
      'proxy',
      'serve',
      '--kv-dir',
      path.join(scratch, 'kv'),
      '--backend',
      'bench',
      '--port',
      '0',
      ...asds.flatMap((a) => ['--asd', `127.0.0.1:${a.port}`]),
    ],
    path.join(scratch, 'proxy.log'),
  );
  started.push(proxy);
  const client = new ProxyClient(`127.0.0.1:${proxy.port}`, 120_000);
  const asdClients = asds.map((a) => new AsdClient(`127.0.0.1:${a.port}`, { deadlineMs: 120_000 }));
  const ns = 'be'.repeat(16);
  await client.createNamespace(ns);
  const scos = Array.from({ length: SCOS }, () => randomBytes(SCO_BYTES));

  // ---- 64 MiB SCO puts and gets through the proxy.
  const put = await timed(async () => {
    for (const [i, sco] of scos.entries()) await client.putObject(ns, `sco/${i}`, sco, 1);
  });
  const get = await timed(async () => {
    for (let i = 0; i < SCOS; i += 1) {
      const data = await client.getObject(ns, `sco/${i}`);
      if (!data.equals(scos[i] as Buffer)) throw new Error(`sco/${i} read back differently`);
    }
  });
  const policy = (await client.putObject(ns, 'probe', randomBytes(1024), 1)).policy;
  results.scoPut = {
    policy,
    scos: SCOS,
    throughputMiBps: Math.round((SCOS * SCO_BYTES) / MIB / (put.ms / 1000)),
  };
  results.scoGet = {
    scos: SCOS,
    throughputMiBps: Math.round((SCOS * SCO_BYTES) / MIB / (get.ms / 1000)),
  };

  // ---- Reference: the same fragment bytes straight to the ASDs (no proxy, no manifest).
  const encoded = await encodeObject(scos[0] as Buffer, {
    k: 4,
    m: 2,
    fragmentSizeMaxBytes: 4 * MIB,
    compression: 'none',
    encryption: 'none',
    aad: Buffer.from('bench'),
  });
  const directPut = await timed(async () => {
    for (let s = 0; s < SCOS; s += 1) {
      await Promise.all(
        encoded.chunks.flatMap((chunk, c) =>
          chunk.fragments.map((fragment, f) =>
            (asdClients[f] as AsdClient).put([
              { key: Buffer.from(`direct/${s}/${c}/${f}`), value: fragment },
            ]),
          ),
        ),
      );
    }
  });
  const directGet = await timed(async () => {
    for (let s = 0; s < SCOS; s += 1) {
      await Promise.all(
        encoded.chunks.flatMap((_, c) =>
          [0, 1, 2, 3].map((f) =>
            (asdClients[f] as AsdClient).getOne(Buffer.from(`direct/${s}/${c}/${f}`)),
          ),
        ),
      );
    }
  });
  results.directAsdPut = {
    throughputMiBps: Math.round((SCOS * SCO_BYTES) / MIB / (directPut.ms / 1000)),
  };
  results.directAsdGet = {
    throughputMiBps: Math.round((SCOS * SCO_BYTES) / MIB / (directGet.ms / 1000)),
  };

  // ---- 4 KiB ranged reads through the proxy, and directly from an ASD.
  const slice = () => {
    const i = Math.floor(Math.random() * SCOS);
    return {
      name: `sco/${i}`,
      offset: Math.floor(Math.random() * (SCO_BYTES / 4096)) * 4096,
      length: 4096,
    };
  };
  for (const depth of [1, 32]) {
    results[`ranged4KiBQd${depth}`] = await loops(depth, RANGED_MS, async () => {
      await client.readRanges(ns, [slice()]);
    });
    results[`directAsdRanged4KiBQd${depth}`] = await loops(depth, RANGED_MS, async () => {
      const f = Math.floor(Math.random() * 4);
      const offset = Math.floor(Math.random() * (MIB / 4096)) * 4096;
      await (asdClients[f] as AsdClient).getRanges([
        { key: Buffer.from(`direct/0/0/${f}`), offset, length: 4096 },
      ]);
    });
  }
  const batched = await loops(1, RANGED_MS, async () => {
    await client.readRanges(ns, Array.from({ length: 32 }, slice));
  });
  results.ranged4KiB32PerCall = {
    slicesPerSec: batched.opsPerSec * 32,
    callLatencyUsP50: batched.latencyUsP50,
  };

  // ---- Erasure coding: the pipeline beside the raw coder, same 64 MiB, this process.
  // The raw coder on the same layout as the pipeline: 4 chunks of 16 MiB, 4 MiB shards.
  const sco = scos[0] as Buffer;
  const chunkBytes = 16 * MIB;
  const raw = await timed(async () => {
    for (let r = 0; r < 3; r += 1) {
      for (let c = 0; c < SCO_BYTES / chunkBytes; c += 1) {
        await encodeParity(4, 2, sco.subarray(c * chunkBytes, (c + 1) * chunkBytes), 4 * MIB);
      }
    }
  });
  const pipe = await timed(async () => {
    for (let r = 0; r < 3; r += 1) {
      await encodeObject(sco, {
        k: 4,
        m: 2,
        fragmentSizeMaxBytes: 4 * MIB,
        compression: 'none',
        encryption: 'none',
        aad: Buffer.from('x'),
      });
    }
  });
  results.rawCoderEncodeMiBps = Math.round((3 * SCO_BYTES) / MIB / (raw.ms / 1000));
  results.pipelineEncodeMiBps = Math.round((3 * SCO_BYTES) / MIB / (pipe.ms / 1000));

  client.close();
  for (const c of asdClients) c.close();
} finally {
  for (const s of started.reverse()) await s.stop();
  await rm(scratch, { recursive: true, force: true });
}

let commit = 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO }).toString().trim();
} catch {
  // Not a git checkout: the results say so.
}
const out = {
  benchmark: 'proxy',
  finishedAtIso: new Date().toISOString(),
  gitCommit: commit,
  nodeVersion: process.version,
  cpus: os.cpus().length,
  quick,
  expected: EXPECTED,
  results,
};
const resultsDir = path.join(REPO, 'benchmarks', 'results');
await mkdir(resultsDir, { recursive: true });
const file = path.join(
  resultsDir,
  `proxy-${new Date().toISOString().slice(0, 10)}${quick ? '-quick' : ''}.json`,
);
await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
say(JSON.stringify(results, null, 2));
say(`results: ${file}`);
