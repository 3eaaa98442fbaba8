/**
 * The ALBA proxy object codec benchmark (pure CPU, no network, no disk): raw Reed-Solomon
 * encode of (4,2) over 64 MiB, then the whole encode pipeline (compress -> encrypt ->
 * chunk -> erasure-code -> CRC32C) for none/lz4/zstd x none/aes-256-gcm on a 64 MiB SCO
 * with (4,2) and 4 MiB fragments, whole-object decode, and 4 KiB ranged reads (healthy and
 * with a data fragment missing). Reference systems in the same run: memcpy, CRC32C, one
 * AES-256-GCM call over the whole object and the raw coder, so the pipeline can be read as
 * a ratio of its parts. Measures, never asserts.
 *
 *   node benchmarks/dist/proxy/codec.js [--quick] [--out FILE]
 */
import { execFileSync } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  type Compression,
  decodeObject,
  type EncodedObject,
  type Encryption,
  encodeObject,
  encodeParity,
  memoryKeyProvider,
  readRange,
} from '@shale/alba-proxy';
import { crc32c } from '@shale/common';

const MIB = 1024 * 1024;
const OBJECT_BYTES = 64 * MIB;

/**
 * Expected before measuring (back of the envelope, 2 vCPUs): the coder's README gives
 * ~2.5 GB/s for (4,2) per thread with 256 KiB shards; with 4-16 MiB shards it blocks for
 * cache, so ~1.5-2.5 GiB/s of data per call. The plain pipeline adds one CRC32C pass over
 * data + parity (~10+ GiB/s, SSE4.2) and no copy: ~1.2-2 GiB/s. AES-GCM with AES-NI runs
 * ~1.5-3 GiB/s on one thread, lz4 ~0.5-1 GiB/s per thread on half-compressible data,
 * zstd-3 ~0.2-0.4 GiB/s per thread; the thread pool spreads compression over both CPUs.
 */
const EXPECTED = {
  rawRs42EncodeMiBps: 2000,
  pipelineNoneNoneMiBps: 1500,
  pipelineNoneAesMiBps: 700,
  pipelineLz4NoneMiBps: 700,
  pipelineZstdNoneMiBps: 300,
};

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, out: { type: 'string' } },
});
const REPEATS = values.quick ? 2 : 5;

/** Half random, half repeated text, in 48 KiB runs: about 2:1 compressible overall. */
function testData(sizeBytes: number): Buffer {
  const data = Buffer.allocUnsafe(sizeBytes);
  const run = 48 * 1024;
  for (let at = 0, i = 0; at < sizeBytes; at += run, i++) {
    const end = Math.min(at + run, sizeBytes);
    if (i % 2 === 0) randomBytes(end - at).copy(data, at);
    else data.fill(`shale sco cluster ${at} `, at, end);
  }
  return data;
}

/** Median of REPEATS timed runs (after one warm-up) of fn, in ms. */
async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const start = performance.now();
    await fn();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] as number;
}

const mibps = (bytes: number, ms: number): number =>
  Math.round((bytes / MIB / (ms / 1000)) * 10) / 10;

interface CaseResult {
  readonly name: string;
  readonly bytes: number;
  readonly medianMs: number;
  readonly throughputMiBps: number;
  readonly storedBytes?: number;
  readonly expectedMiBps?: number;
}

async function main(): Promise<void> {
  const data = testData(OBJECT_BYTES);
  const cases: CaseResult[] = [];
  const report = (result: CaseResult): void => {
    cases.push(result);
    const expected =
      result.expectedMiBps === undefined ? '' : ` (expected ~${result.expectedMiBps})`;
    const stored =
      result.storedBytes === undefined
        ? ''
        : `, stored ${(result.storedBytes / MIB).toFixed(1)} MiB`;
    console.log(
      `${result.name.padEnd(44)} ${String(result.throughputMiBps).padStart(8)} MiB/s${expected}${stored}`,
    );
  };
  const measure = async (
    name: string,
    bytes: number,
    fn: () => Promise<unknown>,
    extra: Partial<CaseResult> = {},
  ): Promise<void> => {
    const ms = await timeMs(fn);
    report({
      name,
      bytes,
      medianMs: Math.round(ms * 100) / 100,
      throughputMiBps: mibps(bytes, ms),
      ...extra,
    });
  };

  console.log(`expected (MiB/s of object data): ${JSON.stringify(EXPECTED)}`);
  // References.
  const copyTarget = Buffer.allocUnsafe(OBJECT_BYTES);
  await measure('reference: memcpy 64 MiB', OBJECT_BYTES, async () => data.copy(copyTarget));
  await measure('reference: crc32c 64 MiB', OBJECT_BYTES, async () => crc32c(data));
  const key = randomBytes(32);
  await measure('reference: aes-256-gcm one call 64 MiB', OBJECT_BYTES, async () => {
    const cipher = createCipheriv('aes-256-gcm', key, randomBytes(12));
    cipher.update(data);
    cipher.final();
  });
  // Raw coder: (4,2) over the 64 MiB as one stripe of 16 MiB shards, and as 4 stripes of
  // 4 MiB shards (what a (4,2) 4 MiB-fragment preset does), sequential and 4 at once.
  await measure(
    'raw rs (4,2) encode, 16 MiB shards x1',
    OBJECT_BYTES,
    () => encodeParity(4, 2, data, 16 * MIB),
    {
      expectedMiBps: EXPECTED.rawRs42EncodeMiBps,
    },
  );
  const stripes = [0, 1, 2, 3].map((i) => data.subarray(i * 16 * MIB, (i + 1) * 16 * MIB));
  await measure('raw rs (4,2) encode, 4 MiB shards x4 seq', OBJECT_BYTES, async () => {
    for (const stripe of stripes) await encodeParity(4, 2, stripe, 4 * MIB);
  });
  await measure('raw rs (4,2) encode, 4 MiB shards x4 parallel', OBJECT_BYTES, () =>
    Promise.all(stripes.map((stripe) => encodeParity(4, 2, stripe, 4 * MIB))),
  );
  // The pipeline.
  const keyProvider = memoryKeyProvider(new Map([['k-bench', key]]), 'k-bench');
  const aad = Buffer.from('bench-namespace/sco-00000001');
  const expectedFor: Record<string, number> = {
    'none/none': EXPECTED.pipelineNoneNoneMiBps,
    'none/aes-256-gcm': EXPECTED.pipelineNoneAesMiBps,
    'lz4/none': EXPECTED.pipelineLz4NoneMiBps,
    'zstd/none': EXPECTED.pipelineZstdNoneMiBps,
  };
  for (const compression of ['none', 'lz4', 'zstd'] as Compression[]) {
    for (const encryption of ['none', 'aes-256-gcm'] as Encryption[]) {
      const params = { k: 4, m: 2, fragmentSizeMaxBytes: 4 * MIB, compression, encryption };
      let encoded: EncodedObject | undefined;
      const label = `${compression}/${encryption}`;
      await measure(
        `encode (4,2) 4 MiB ${label}`,
        OBJECT_BYTES,
        async () => {
          encoded = await encodeObject(data, { ...params, keyProvider, aad });
        },
        { ...(expectedFor[label] === undefined ? {} : { expectedMiBps: expectedFor[label] }) },
      );
      if (encoded === undefined) throw new Error('encode produced nothing');
      const done = encoded;
      const storedBytes = done.chunks.reduce((sum, c) => sum + c.storedSizeBytes, 0);
      cases[cases.length - 1] = { ...(cases[cases.length - 1] as CaseResult), storedBytes };
      const fragments = done.chunks.map((c) => [...c.fragments]);
      await measure(`decode whole object ${label}`, OBJECT_BYTES, () =>
        decodeObject(done, fragments, { keyProvider, aad }),
      );
      const fetch = async (
        reads: readonly {
          chunkIndex: number;
          fragmentIndex: number;
          offsetBytes: number;
          lengthBytes: number;
        }[],
      ) =>
        reads.map((r) =>
          fragments[r.chunkIndex]?.[r.fragmentIndex]?.subarray(
            r.offsetBytes,
            r.offsetBytes + r.lengthBytes,
          ),
        );
      const offsets = Array.from(
        { length: 2000 },
        (_, i) => (i * 7919 * 4096) % (OBJECT_BYTES - 4096),
      );
      await measure(`2000 x 4 KiB ranged reads ${label}`, 2000 * 4096, async () => {
        for (const offset of offsets)
          await readRange(done, offset, 4096, { keyProvider, aad, fetch });
      });
      await measure(`2000 x 4 KiB degraded reads ${label}`, 2000 * 4096, async () => {
        for (const offset of offsets) {
          await readRange(done, offset, 4096, {
            keyProvider,
            aad,
            fetch,
            isAvailable: (_c, f) => f !== Math.floor((offset % (16 * MIB)) / (4 * MIB)),
          });
        }
      });
    }
  }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const git = (args: string[]): string => {
    try {
      return execFileSync('git', args, { cwd: root, encoding: 'utf8' }).trim();
    } catch (err) {
      return `unknown (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`;
    }
  };
  const results = {
    benchmark: 'proxy-codec',
    finishedAtIso: new Date().toISOString(),
    gitCommit: git(['rev-parse', 'HEAD']),
    gitDirty: git(['status', '--porcelain']).length > 0,
    nodeVersion: process.version,
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
    quick: values.quick,
    repeats: REPEATS,
    host: {
      cpuCount: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryBytes: os.totalmem(),
    },
    objectBytes: OBJECT_BYTES,
    expectedMiBps: EXPECTED,
    cases,
  };
  const date = new Date().toISOString().slice(0, 10);
  const out =
    values.out ??
    path.join(
      root,
      'benchmarks',
      'results',
      `proxy-codec-${date}${values.quick ? '-quick' : ''}.json`,
    );
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`results: ${out}`);
}

await main();
