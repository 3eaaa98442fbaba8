/**
 * Where the time of a small ASD read goes, in one process (client and daemon together, so
 * CPU per op is the sum of both): the store alone, an empty gRPC call (the floor of any
 * call), and 4 KiB ranged gets with 1, 8 and 32 slices per call. Expected: the gRPC call
 * costs several times the store's work, so CPU per slice falls almost by the batch size.
 *
 *   node benchmarks/dist/asd/batching.js [--scratch DIR]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { AsdClient, AsdDaemon, type Slice } from '@shale/asd';

const OBJECTS = 64;
const OBJECT_BYTES = 1024 * 1024;
const SLICE_BYTES = 4096;

function cpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

async function measure(
  name: string,
  calls: number,
  perCall: number,
  op: (i: number) => Promise<unknown>,
) {
  for (let i = 0; i < Math.min(200, calls); i += 1) await op(i);
  const cpu0 = cpuUs();
  const t0 = performance.now();
  for (let i = 0; i < calls; i += 1) await op(i);
  const wallUs = ((performance.now() - t0) * 1000) / (calls * perCall);
  const cpuPerOpUs = (cpuUs() - cpu0) / (calls * perCall);
  const row = {
    name,
    itemsPerCall: perCall,
    wallUsPerItem: Math.round(wallUs),
    cpuUsPerItem: Math.round(cpuPerOpUs),
  };
  process.stdout.write(`${JSON.stringify(row)}\n`);
  return row;
}

const scratchArg = process.argv.indexOf('--scratch');
const parent = scratchArg > 0 ? (process.argv[scratchArg + 1] as string) : '/var/tmp';
const dir = await mkdtemp(path.join(parent, 'asd-batching-'));
const daemon = await AsdDaemon.start({ dir, port: 0, nodeId: 'bench', log: () => undefined });
const client = new AsdClient(daemon.address);
try {
  const keys = Array.from({ length: OBJECTS }, (_, i) => Buffer.from(`obj/${i}`));
  for (const key of keys) await daemon.store.put([{ key, value: randomBytes(OBJECT_BYTES) }]);
  const slice = (i: number): Slice => ({
    key: keys[i % OBJECTS] as Buffer,
    offset: ((i * 7919) % (OBJECT_BYTES / SLICE_BYTES)) * SLICE_BYTES,
    length: SLICE_BYTES,
  });
  const rows = [
    await measure('store.getRanges, no gRPC', 3000, 1, (i) => daemon.store.getRanges([slice(i)])),
    await measure('gRPC Health (empty call)', 2000, 1, () => client.health()),
    await measure('gRPC GetRanges', 2000, 1, (i) => client.getRanges([slice(i)])),
    await measure('gRPC GetRanges', 500, 8, (i) =>
      client.getRanges(Array.from({ length: 8 }, (_, j) => slice(i * 8 + j))),
    ),
    await measure('gRPC GetRanges', 200, 32, (i) =>
      client.getRanges(Array.from({ length: 32 }, (_, j) => slice(i * 32 + j))),
    ),
  ];
  process.stdout.write(
    '\n| what | slices per call | wall us per slice | CPU us per slice |\n|---|---:|---:|---:|\n',
  );
  for (const row of rows)
    process.stdout.write(
      `| ${row.name} | ${row.itemsPerCall} | ${row.wallUsPerItem} | ${row.cpuUsPerItem} |\n`,
    );
} finally {
  client.close();
  await daemon.stop();
  await rm(dir, { recursive: true, force: true });
}
