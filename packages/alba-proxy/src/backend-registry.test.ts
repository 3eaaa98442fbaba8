// Proves the registry and namespace records on a real LevelKv: backends with their OSDs and default preset (single- vs multi-node), unique ids and names, OSD add/decommission, presets validated and unique, namespaces created atomically with epoch 1, PROXY_NAMESPACE_EXISTS / PROXY_BAD_NAMESPACE, and epoch bumps by CAS.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LevelKv } from '@shale/arakoon-kv';
import { isShaleError } from '@shale/common';
import { BackendRegistry } from './backend-registry.js';
import { NamespaceManager } from './namespace-manager.js';
import { nsKeys } from './object-keys.js';
import { DEFAULT_PRESET_MULTI_NODE, DEFAULT_PRESET_SINGLE_NODE } from './preset.js';

async function rejectsCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err) => isShaleError(err, code) || assert.fail(String(err)));
}

const osd = (id: string, node: string, port: number) => ({
  osdId: id,
  nodeId: node,
  address: `127.0.0.1:${port}`,
});

describe('backend registry and namespaces', () => {
  let dir: string;
  let kv: LevelKv;
  let registry: BackendRegistry;
  let namespaces: NamespaceManager;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-registry-'));
    kv = await LevelKv.open({ dir, sync: false });
    registry = new BackendRegistry(kv);
    namespaces = new NamespaceManager(kv, registry);
  });
  after(async () => {
    namespaces.close();
    await kv.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('a backend gets its OSDs and the default preset for its node count', async () => {
    const single = await registry.createBackend({
      backendId: 'single',
      name: 'single',
      osds: [osd('a1', 'n1', 1), osd('a2', 'n1', 2)],
    });
    assert.equal(single.defaultPresetName, DEFAULT_PRESET_SINGLE_NODE.name);
    assert.deepEqual(
      await registry.getPreset('single', DEFAULT_PRESET_SINGLE_NODE.name),
      DEFAULT_PRESET_SINGLE_NODE,
    );
    const multi = await registry.createBackend({
      backendId: 'multi',
      name: 'multi',
      osds: [osd('b1', 'n1', 3), osd('b2', 'n2', 4), osd('b3', 'n3', 5)],
    });
    assert.equal(multi.defaultPresetName, DEFAULT_PRESET_MULTI_NODE.name);
    assert.deepEqual(
      (await registry.listOsds('multi')).map((o) => [o.osdId, o.nodeId, o.state]),
      [
        ['b1', 'n1', 'active'],
        ['b2', 'n2', 'active'],
        ['b3', 'n3', 'active'],
      ],
    );
    assert.equal(await registry.backendIdByName('multi'), 'multi');
    assert.deepEqual((await registry.listBackends()).map((b) => b.backendId).sort(), [
      'multi',
      'single',
    ]);
  });

  test('ids and names are unique; nothing is half-created', async () => {
    await rejectsCode(
      registry.createBackend({ backendId: 'single', name: 'other', osds: [osd('c1', 'n1', 6)] }),
      'PROXY_BACKEND_EXISTS',
    );
    await rejectsCode(
      registry.createBackend({ backendId: 'other', name: 'single', osds: [osd('c1', 'n1', 6)] }),
      'PROXY_BACKEND_EXISTS',
    );
    await rejectsCode(
      registry.createBackend({ backendId: 'other', name: 'other', osds: [osd('a1', 'n1', 6)] }),
      'PROXY_OSD_EXISTS',
    );
    assert.equal(await registry.getBackend('other'), undefined);
    assert.equal(await kv.get(Buffer.from('/shale/osds/c1')), undefined);
    await rejectsCode(
      registry.createBackend({ backendId: 'bad/id', name: 'x', osds: [] }),
      'PROXY_BAD_ID',
    );
  });

  test('OSDs are added and decommissioned; presets are validated and unique', async () => {
    await registry.addOsd('single', osd('a3', 'n1', 7));
    await rejectsCode(registry.addOsd('single', osd('b1', 'n1', 8)), 'PROXY_OSD_EXISTS');
    const decommissioned = await registry.decommissionOsd('single', 'a1');
    assert.equal(decommissioned.state, 'decommissioned');
    assert.deepEqual(
      (await registry.listOsds('single')).map((o) => `${o.osdId}:${o.state}`),
      ['a1:decommissioned', 'a2:active', 'a3:active'],
    );
    const preset = {
      name: 'small-lz4',
      policies: [[2, 1, 3, 6]],
      fragmentSizeMaxBytes: 65536,
      compression: 'lz4',
      encryption: 'none',
      checksum: 'crc32c',
    };
    await registry.addPreset('single', preset);
    await rejectsCode(registry.addPreset('single', preset), 'PROXY_PRESET_EXISTS');
    await rejectsCode(
      registry.addPreset('single', { ...preset, name: 'x', k: 1 }),
      'PROXY_BAD_PRESET',
    );
    await rejectsCode(
      registry.addPreset('nope', { ...preset, name: 'y' }),
      'PROXY_BACKEND_NOT_FOUND',
    );
    assert.deepEqual((await registry.listPresets('single')).map((p) => p.name).sort(), [
      DEFAULT_PRESET_SINGLE_NODE.name,
      'small-lz4',
    ]);
  });

  test('namespaces: created with epoch 1, unique, validated; epochs bump by CAS', async () => {
    const nsId = '0123456789abcdef0123456789abcdef';
    const info = await namespaces.create(nsId, 'single', 'small-lz4');
    assert.equal(info.state, 'active');
    assert.equal(info.backendId, 'single');
    assert.equal((await kv.get(nsKeys.epoch(nsId)))?.value.toString(), '1');
    await rejectsCode(namespaces.create(nsId, 'single', 'small-lz4'), 'PROXY_NAMESPACE_EXISTS');
    await rejectsCode(namespaces.create('0123', 'single', 'small-lz4'), 'PROXY_BAD_NAMESPACE');
    await rejectsCode(
      namespaces.create('0123456789ABCDEF0123456789ABCDEF', 'single', 'small-lz4'),
      'PROXY_BAD_NAMESPACE',
    );
    await rejectsCode(
      namespaces.create('f'.repeat(32), 'single', 'no-such-preset'),
      'PROXY_PRESET_NOT_FOUND',
    );
    const bumps = await Promise.all([1, 2, 3, 4].map(() => namespaces.bumpEpoch(nsId)));
    assert.deepEqual([...bumps].sort(), [2, 3, 4, 5]);
    assert.equal(await namespaces.epoch(nsId), 5);
    const listed = await namespaces.list();
    assert.deepEqual(
      listed.namespaces.map((n) => n.nsId),
      [nsId],
    );
    await rejectsCode(namespaces.bumpEpoch('e'.repeat(32)), 'PROXY_NAMESPACE_NOT_FOUND');
  });
});
