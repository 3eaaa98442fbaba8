// Proves that fragment puts received into reused (pooled) buffers store exactly what was sent: values put after a buffer was reused read back intact, large and inline, across concurrent connections, and the pool is really reused.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AsdDaemon } from './daemon.js';
import { AsdDataClient } from './data-client.js';

test('values received into pooled buffers read back intact after the buffers were reused', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-pool-'));
  const daemon = await AsdDaemon.start({
    dir,
    port: 0,
    nodeId: 'n1',
    reserveBytes: 0,
    log: () => undefined,
  });
  const clients = [0, 1, 2].map(
    () => new AsdDataClient('127.0.0.1', daemon.dataPort, { deadlineMs: 30_000 }),
  );
  try {
    const expected = new Map<string, Buffer>();
    // Rounds of puts, three connections at a time: each round's large payloads land in
    // buffers the previous round gave back. Every put also carries a small (inline) value
    // that shares the large value's receive buffer.
    for (let round = 0; round < 6; round += 1) {
      await Promise.all(
        clients.map(async (client, c) => {
          const bigKey = `r${round}/c${c}/big`;
          const smallKey = `r${round}/c${c}/small`;
          const big = randomBytes(1024 * 1024 + round * 4097 + c);
          const small = randomBytes(3000 + round);
          expected.set(bigKey, big);
          expected.set(smallKey, small);
          await client.put([
            { key: Buffer.from(smallKey), value: small },
            { key: Buffer.from(bigKey), value: big },
          ]);
        }),
      );
    }
    const stats = daemon.dataPoolStats;
    assert.ok(stats !== undefined);
    assert.ok(stats.taken >= 18, `${stats.taken} pooled payloads`);
    assert.ok(stats.reused > 0, 'no receive buffer was ever reused');
    const keys = [...expected.keys()];
    const got = await clients[0]?.get(keys.map((key) => Buffer.from(key)));
    assert.ok(got !== undefined);
    got.forEach((result, i) => {
      assert.ok(result.ok, `${keys[i]}: ${result.ok ? '' : result.error.message}`);
      assert.ok(
        result.value.value.equals(expected.get(keys[i] as string) as Buffer),
        `${keys[i]} differs`,
      );
    });
  } finally {
    for (const client of clients) client.close();
    await daemon.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
