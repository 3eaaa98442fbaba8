// Proves AsdOsd meets the OSD contract (osd-conformance.ts) against real ASD daemons, both one with a data server (bulk calls over frames, checked by the daemon's counters) and one without (an older ASD: gRPC only), and that a restarted ASD with a new data port is found again with no failed call.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AsdDaemon } from '@shale/asd';
import { crc32c } from '@shale/common';
import { AsdOsd } from './osd.js';
import { osdConformance } from './osd-conformance.js';

async function startAsd(
  dataServer: boolean,
): Promise<{ daemon: AsdDaemon; osd: AsdOsd; dir: string; done: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'osd-conf-'));
  const daemon = await AsdDaemon.start({
    dir,
    port: 0,
    nodeId: 'n1',
    reserveBytes: 0,
    dataServer,
    log: () => undefined,
  });
  const osd = new AsdOsd({
    osdId: daemon.store.identity.asdId,
    nodeId: 'n1',
    address: daemon.address,
  });
  return {
    daemon,
    osd,
    dir,
    done: async () => {
      osd.close();
      await daemon.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

osdConformance('AsdOsd over a real ASD (data protocol)', () => startAsd(true));
osdConformance('AsdOsd over a real ASD without a data server (gRPC)', () => startAsd(false));

const frag = (key: string, value: Buffer) => ({
  key: Buffer.from(key),
  value,
  crc32c: crc32c(value),
});

test('the bulk calls go over the data server when the ASD has one, over gRPC when not', async () => {
  for (const dataServer of [true, false]) {
    const { daemon, osd, done } = await startAsd(dataServer);
    try {
      const value = randomBytes(1 << 20);
      await osd.putFragments([frag('b/1', value)]);
      const [whole] = await osd.getFragments([Buffer.from('b/1')]);
      const [slice] = await osd.getFragmentRanges([
        { key: Buffer.from('b/1'), offset: 7, length: 9 },
      ]);
      assert.ok(whole?.ok && whole.value.equals(value));
      assert.ok(slice?.ok && slice.value.equals(value.subarray(7, 16)));
      if (dataServer)
        assert.equal(daemon.dataCounters?.requests, 3, 'put, get, ranged get as frames');
      else assert.equal(daemon.dataPort, 0);
    } finally {
      await done();
    }
  }
});

test('an ASD restarted on another data port is found again; no call fails', async () => {
  const { daemon, osd, dir } = await startAsd(true);
  const value = randomBytes(300_000);
  await osd.putFragments([frag('r/1', value)]);
  const { port, dataPort } = daemon;
  await daemon.stop();
  const again = await AsdDaemon.start({
    dir,
    port,
    nodeId: 'n1',
    reserveBytes: 0,
    log: () => undefined,
  });
  try {
    assert.notEqual(again.dataPort, dataPort);
    // The old data port refuses: this call goes over gRPC, the next asks stats again.
    const [first] = await osd.getFragments([Buffer.from('r/1')]);
    assert.ok(first?.ok && first.value.equals(value));
    await osd.putFragments([frag('r/2', value)]);
    const [second] = await osd.getFragments([Buffer.from('r/2')]);
    assert.ok(second?.ok && second.value.equals(value));
    assert.ok((again.dataCounters?.requests ?? 0) >= 2, 'back on the data server');
  } finally {
    osd.close();
    await again.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
