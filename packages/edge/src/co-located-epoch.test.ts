// Proves the co-located edge tells a durable epoch (boot id, vDisk id, last data-loss restore) only for a vDisk open in its own process, in OPT_INFO/LIST and on an opened export alike, and that NBD_INFO_DESCRIPTION carries it as "; durable-epoch=E".
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { ShaleError } from '@shale/common';
import type { VdiskInfo, VolumeIo } from '@shale/volumedriver/client';
import type { BlockExport, ExportInfo, ExportProvider } from './block-export.js';
import { CoLocatedExports, durableEpoch, type LocalVolumes } from './co-located-exports.js';
import { describe } from './nbd-handshake.js';

const BOOT_ID = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

function vdisk(name: string, id: string, dataLossAtMs?: number): VdiskInfo {
  return {
    id,
    name,
    vpoolName: 'pool',
    sizeBytes: 1 << 20,
    clusterSizeBytes: 4096,
    scoSizeBytes: 4 << 20,
    namespace: id,
    parent: undefined,
    ownerNodeId: 'n1',
    createdAtMs: 0,
    snapshots: [],
    stats: undefined,
    state: 'running',
    openError: undefined,
    dataLoss:
      dataLossAtMs === undefined
        ? undefined
        : { sinceMs: 1, nodeId: 'n1', detectedAtMs: dataLossAtMs },
  } as unknown as VdiskInfo;
}

const LOCAL = vdisk('here', 'a'.repeat(32), 1234);
const ELSEWHERE = vdisk('there', 'b'.repeat(32));

const local: LocalVolumes = {
  listVdisks: async () => [LOCAL, ELSEWHERE],
  vdiskInfo: async (name) => (name === LOCAL.name ? LOCAL : ELSEWHERE),
  io: (name) => {
    if (name === LOCAL.name) return { sizeBytes: LOCAL.sizeBytes } as unknown as VolumeIo;
    throw new ShaleError('VD_NOT_FOUND', `${name} is not open here`);
  },
};

const remoteInfo: ExportInfo = {
  name: 'there',
  sizeBytes: 1 << 20,
  readOnly: false,
  description: 'vDisk there on n2',
};
const remote: ExportProvider = {
  list: async () => [],
  info: async () => remoteInfo,
  open: async () => ({ info: remoteInfo }) as unknown as BlockExport,
  close: async () => undefined,
};

test('epoch only for a vDisk open here; in the description as "; durable-epoch=E"', async () => {
  const exports = new CoLocatedExports({ local, remote });
  const epoch = `${BOOT_ID}.${'a'.repeat(32)}.1234`;
  assert.equal(durableEpoch(LOCAL), epoch);
  assert.equal(durableEpoch(vdisk('x', 'c'.repeat(32))), `${BOOT_ID}.${'c'.repeat(32)}.0`);

  const listed = await exports.list();
  assert.equal(listed.find((e) => e.name === 'here')?.durableEpoch, epoch);
  assert.equal(listed.find((e) => e.name === 'there')?.durableEpoch, undefined);
  assert.equal((await exports.info('here')).durableEpoch, epoch);
  assert.equal((await exports.info('there')).durableEpoch, undefined);

  const opened = await exports.open('here');
  assert.equal(opened.info.durableEpoch, epoch);
  assert.equal(describe(opened.info), `vDisk here (co-located); durable-epoch=${epoch}`);
  const away = await exports.open('there');
  assert.equal(away.info.durableEpoch, undefined);
  assert.equal(describe(away.info), 'vDisk there on n2');
  opened.release();
  await exports.close();
});
