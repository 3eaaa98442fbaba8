// Proves a full backend stays readable: when every one of 6 real ASDs refuses fragment puts with ASD_NO_SPACE while its last probe still showed room (the disk, shared with a write buffer, filled in between), every object the proxy acknowledged before still reads back byte-exact (whole and ranged), the puts fail with a clear code, and once there is room again puts go through; by driving a real ProxyEngine over real ASD processes, the refusal injected at the fragment-put seam.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { AsdErrorCode } from '@shale/asd';
import { isShaleError, ShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { AsdOsd, type Osd } from './osd.js';
import { ProxyEngine } from './proxy-engine.js';
import { nsIdOf, startTestBackend, type TestBackend } from './proxy-test-support.js';

const KiB = 1024;
const OBJECT_BYTES = 256 * KiB;
let backend: TestBackend;
let engine: ProxyEngine;
/** While set, every fragment put is refused as a full disk refuses it. */
let diskFull = false;

before(async () => {
  backend = await startTestBackend(6);
  engine = new ProxyEngine({
    kv: backend.kv,
    backendId: backend.backendId,
    random: seededRandom(11),
    log: () => undefined,
    osdFactory: (address): Osd => {
      const osd = new AsdOsd(address);
      return Object.assign(Object.create(osd) as Osd, {
        putFragments: async (...args: Parameters<Osd['putFragments']>) => {
          if (diskFull) {
            throw new ShaleError(AsdErrorCode.NoSpace, 'no space: 4198400 bytes asked, 0 free');
          }
          return osd.putFragments(...args);
        },
      });
    },
  });
});

after(async () => {
  await engine?.close();
  await backend?.close();
});

test('objects stored before the disks filled up read back; puts refuse clearly; room takes puts again', async () => {
  await backend.registry.addPreset(backend.backendId, {
    name: 'small',
    policies: [[2, 1, 3, 6]],
    fragmentSizeMaxBytes: 64 * KiB,
    compression: 'none',
    encryption: 'none',
    checksum: 'crc32c',
  });
  const nsId = nsIdOf(1);
  await engine.namespaces.create(nsId, backend.backendId, 'small');
  const stored = new Map<string, Buffer>();
  for (let i = 0; i < 4; i++) {
    const data = randomBytes(OBJECT_BYTES);
    await engine.putObject(nsId, `o${i}`, data, { writerEpoch: 1 });
    stored.set(`o${i}`, data);
  }

  diskFull = true;
  // Puts meet full disks (several tries, as uploads retry): each is refused, clearly.
  for (let attempt = 0; attempt < 3; attempt++) {
    await assert.rejects(
      engine.putObject(nsId, `late${attempt}`, randomBytes(OBJECT_BYTES), { writerEpoch: 1 }),
      (err: unknown) =>
        isShaleError(err, 'PROXY_NOT_ENOUGH_OSDS') || isShaleError(err, 'PROXY_NO_POLICY'),
    );
  }
  // A full disk still holds its data: every read works, whole and ranged.
  for (const [name, data] of stored) {
    assert.ok((await engine.getObject(nsId, name)).equals(data), `${name} on full disks`);
  }
  const ranges = [...stored.keys()].map((name) => ({ name, offsetBytes: 1000, lengthBytes: 5000 }));
  const got = await engine.readRanges(nsId, ranges);
  for (const [i, r] of ranges.entries()) {
    const data = stored.get(r.name) as Buffer;
    assert.ok((got[i] as Buffer).equals(data.subarray(1000, 6000)), `range of ${r.name}`);
  }

  // The way out: once there is room (space freed or added), puts go through again.
  diskFull = false;
  await engine.refreshOsdStates();
  const again = randomBytes(OBJECT_BYTES);
  await engine.putObject(nsId, 'again', again, { writerEpoch: 1 });
  assert.ok((await engine.getObject(nsId, 'again')).equals(again));
});
