// Proves shale up's port layout: a new data dir's daemons never get a port the command line gave the NBD server or the API (nor one port twice), and an existing layout that holds such a port is refused with UP_PORT_CONFLICT before anything starts.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isShaleError } from '@shale/common';
import { loadOrCreateLayout } from './cluster-layout.js';

test('daemon ports avoid the given ports and each other; a clash with a saved layout is refused', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-layout-'));
  try {
    const wanted = { asdCount: 6, kv: 'embedded', host: '127.0.0.1' };
    const avoid = [41_001, 41_002];
    const { layout, created } = await loadOrCreateLayout(
      dir,
      { ...wanted, avoidPorts: avoid },
      () => undefined,
    );
    assert.equal(created, true);
    const own = [
      layout.ports.kv,
      ...layout.ports.asds,
      layout.ports.proxy,
      layout.ports.volumedriver,
    ];
    assert.equal(new Set(own).size, own.length, 'no port twice');
    for (const port of avoid) assert.ok(!own.includes(port));

    const again = await loadOrCreateLayout(dir, { ...wanted, avoidPorts: avoid }, () => undefined);
    assert.equal(again.created, false);
    await assert.rejects(
      loadOrCreateLayout(dir, { ...wanted, avoidPorts: [layout.ports.proxy] }, () => undefined),
      (err: unknown) =>
        isShaleError(err, 'UP_PORT_CONFLICT') && String(err).includes(String(layout.ports.proxy)),
    );
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
