// Proves the server's memory budget bounds what all connections hold together: slow readers (large READs, replies never read) over real TCP on 127.0.0.1 against NbdServer + MemoryExports keep the server's accounted bytes and the process's buffer memory within the budget, a client that reads its replies is served correct bytes meanwhile, the bytes return to 0 when the slow readers leave, and one request larger than the budget still runs alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Registry } from 'prom-client';
import { EdgeMetrics } from './edge-metrics.js';
import { MemoryExports } from './memory-exports.js';
import { NBD_CMD_READ } from './nbd-protocol.js';
import { NbdServer, type NbdServerOptions } from './nbd-server.js';
import { RawNbdClient } from './testing/raw-nbd-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BUDGET_BYTES = 16 * MiB;
const SLOW_READERS = 6;
const READS_PER_SLOW_READER = 64;
const SLOW_READ_BYTES = 1 * MiB;
/** Reply headers are counted when sent, not when admitted: 16 B per queued reply. */
const HEADER_SLACK_BYTES = 64 * KiB;
/** What else this process allocates meanwhile: the good client's requests, sockets, pools. */
const PROCESS_SLACK_BYTES = 8 * MiB;

// A full GC between measurements: without it, garbage buffers would count as held. Only
// this test process gets the flag; the edge itself never calls gc.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

function bufferMemoryBytes(): number {
  gc();
  gc();
  return process.memoryUsage().arrayBuffers;
}

function pattern(lengthBytes: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  for (let i = 0; i < lengthBytes; i += 4) out.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return out;
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function metric(registry: Registry, name: string): Promise<number> {
  const found = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (found?.values ?? []).reduce((sum, v) => sum + v.value, 0);
}

test('slow readers stay within the memory budget; a good client is served; the bytes come back', async () => {
  const exports = new MemoryExports();
  exports.add('disk', 64 * MiB);
  const registry = new Registry();
  const options: NbdServerOptions = {
    provider: exports,
    metrics: new EdgeMetrics(registry),
    port: 0,
    host: '127.0.0.1',
    maxBufferedBytes: BUDGET_BYTES,
  };
  const server = await NbdServer.start(options);
  const clients: RawNbdClient[] = [];
  const open = async (): Promise<RawNbdClient> => {
    const client = await RawNbdClient.connect(server.port);
    clients.push(client);
    await client.handshake({ name: 'disk' });
    return client;
  };
  let maxSeenBytes = 0;
  const sampler = setInterval(() => {
    maxSeenBytes = Math.max(maxSeenBytes, server.bufferBudget.bufferedBytes);
  }, 2);
  try {
    // Real bytes where the slow readers read (never-written pages would be calloc'd zeros,
    // which cost no memory and would hide what the server holds).
    const setup = await open();
    const data = pattern(8 * MiB, 1);
    assert.equal((await setup.nbdWrite(0, data)).error, 0);
    setup.destroy();
    const baselineBytes = bufferMemoryBytes();

    const slow: RawNbdClient[] = [];
    for (let i = 0; i < SLOW_READERS; i += 1) {
      const client = await open();
      client.socket.pause();
      for (let r = 0; r < READS_PER_SLOW_READER; r += 1) {
        client.request({
          command: NBD_CMD_READ,
          offsetBytes: (r % 8) * MiB,
          lengthBytes: SLOW_READ_BYTES,
        });
      }
      slow.push(client);
    }
    // Let the server stall on them: reads answered stop growing.
    let answered = -1;
    for (;;) {
      await sleep(200);
      const now = await metric(registry, 'shale_edge_requests_total');
      if (now === answered) break;
      answered = now;
    }
    const requestedBytes = SLOW_READERS * READS_PER_SLOW_READER * SLOW_READ_BYTES;
    const heldBytes = bufferMemoryBytes() - baselineBytes;
    process.stdout.write(
      `budget ${BUDGET_BYTES} B: ${SLOW_READERS} slow readers asked ${requestedBytes} B; process buffers grew ${heldBytes} B; accounted now ${server.bufferBudget.bufferedBytes} B, peak ${server.bufferBudget.peakBytes} B\n`,
    );
    assert.ok(
      heldBytes <= BUDGET_BYTES + PROCESS_SLACK_BYTES,
      `slow readers made the process hold ${heldBytes} B of buffers (budget ${BUDGET_BYTES} B)`,
    );

    // A client that reads its replies is served, correct bytes, while the slow ones wait.
    const good = await open();
    for (let i = 0; i < 16; i += 1) {
      const offsetBytes = 16 * MiB + i * 256 * KiB;
      const block = pattern(256 * KiB, 100 + i);
      assert.equal((await good.nbdWrite(offsetBytes, block)).error, 0, `write ${i}`);
      const back = await good.nbdRead(offsetBytes, 256 * KiB);
      assert.equal(back.error, 0, `read ${i}`);
      assert.ok(back.data.equals(block), `read ${i} returned other bytes`);
    }
    assert.ok((await good.nbdRead(3 * MiB, MiB)).data.equals(data.subarray(3 * MiB, 4 * MiB)));

    const stats = server.bufferBudget;
    assert.ok(stats.peakBytes <= BUDGET_BYTES + HEADER_SLACK_BYTES, `peak ${stats.peakBytes} B`);
    assert.ok(maxSeenBytes <= BUDGET_BYTES + HEADER_SLACK_BYTES, `sampled ${maxSeenBytes} B`);
    assert.ok(stats.bufferedBytes > 0, 'the slow readers hold their replies');
    assert.ok(stats.waiting >= 1, 'slow readers wait for the budget');
    assert.ok((await metric(registry, 'shale_edge_budget_pauses_total')) >= 1);
    assert.equal(await metric(registry, 'shale_edge_buffered_bytes'), stats.bufferedBytes);
    assert.equal(await metric(registry, 'shale_edge_buffered_bytes_limit'), BUDGET_BYTES);

    // The slow readers leave: everything they held is given back.
    for (const client of slow) client.destroy();
    await waitFor(() => server.connectionCount === 1, 'the slow readers to be gone');
    await waitFor(() => server.bufferBudget.bufferedBytes === 0, 'the good client to be idle');
    assert.equal(server.bufferBudget.holders, 0);
    assert.ok(bufferMemoryBytes() - baselineBytes <= PROCESS_SLACK_BYTES, 'buffers kept');

    // One request larger than the whole budget runs alone.
    const big = await good.nbdRead(0, 32 * MiB);
    assert.equal(big.error, 0);
    assert.ok(big.data.subarray(0, 8 * MiB).equals(data));
    assert.ok(server.bufferBudget.peakBytes >= 32 * MiB);
    await waitFor(() => server.bufferBudget.bufferedBytes === 0, 'the big reply to be sent');
  } finally {
    clearInterval(sampler);
    for (const client of clients) client.destroy();
    await server.close(1_000);
  }
});
