// Proves the ASD store's contract on a real directory: round trips, atomic batches, ranged reads, corruption detection, bad input, identity, restarts and recovery.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { crc32c } from '@shale/common';
import { rejectsWith } from '@shale/testing';
import { ClassicLevel } from 'classic-level';
import {
  BLOCK_SIZE_BYTES,
  INLINE_MAX_BYTES,
  MAX_ITEMS_PER_CALL,
  MAX_KEY_BYTES,
} from './constants.js';
import { type Disk, nodeDisk } from './disk.js';
import { fileKey, metaKey } from './index-keys.js';
import { AsdMetrics } from './metrics.js';
import { AsdStore, type ItemResult } from './object-store.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-test-'));
  dirs.push(dir);
  return dir;
}

/** Store logs are not needed here; assertions say what went wrong. */
const quiet = (_line: string): void => undefined;

async function openStore(
  dir: string,
  extra: Partial<Parameters<typeof AsdStore.open>[0]> = {},
): Promise<AsdStore> {
  return AsdStore.open({ dir, nodeId: 'node-a', reserveBytes: 0, log: quiet, ...extra });
}

const key = (text: string): Buffer => Buffer.from(text);

function value<T>(result: ItemResult<T> | undefined): T {
  assert.ok(result !== undefined, 'a result for every item');
  if (!result.ok)
    assert.fail(`expected a value, got ${result.error.code}: ${result.error.message}`);
  return result.value;
}

function firstValue(results: ItemResult<{ value: Buffer }>[]): Buffer {
  return value(results[0]).value;
}

function errorCode<T>(result: ItemResult<T> | undefined): string {
  assert.ok(result !== undefined, 'a result for every item');
  assert.ok(!result.ok, 'expected an error');
  return result.error.code;
}

/** Every file under dir, with its size: what "the disk is unchanged" compares. */
async function valueFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const fan of await fs.readdir(path.join(dir, 'objects'))) {
    for (const name of await fs.readdir(path.join(dir, 'objects', fan))) out.push(`${fan}/${name}`);
  }
  return out.sort();
}

describe('put and get', () => {
  test('small values (inline) and large values (files) round-trip byte for byte', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      const sizes = [
        0,
        1,
        4095,
        INLINE_MAX_BYTES,
        INLINE_MAX_BYTES + 1,
        3 * BLOCK_SIZE_BYTES + 17,
        4 * 1024 * 1024,
      ];
      const items = sizes.map((size, index) => ({
        key: key(`k/${index}`),
        value: randomBytes(size),
      }));
      const crcs = await store.put(items);
      assert.deepEqual(
        crcs,
        items.map((item) => crc32c(item.value)),
      );
      const results = await store.get(items.map((item) => item.key));
      results.forEach((result, index) => {
        assert.ok(
          value(result).value.equals((items[index] as { value: Buffer }).value),
          `size ${sizes[index]}`,
        );
      });
      // Only values above the inline threshold became files.
      assert.equal(
        (await valueFiles(dir)).length,
        sizes.filter((size) => size > INLINE_MAX_BYTES).length,
      );
      const stats = await store.stats();
      assert.equal(stats.objectCount, sizes.length);
      assert.equal(
        stats.usedBytes,
        sizes.reduce((a, b) => a + b, 0),
      );
    } finally {
      await store.close();
    }
  });

  test('a missing key answers ASD_NOT_FOUND for that item only', async () => {
    const store = await openStore(await tempDir());
    try {
      await store.put([{ key: key('here'), value: Buffer.from('x') }]);
      const [found, missing] = await store.get([key('here'), key('absent')]);
      assert.equal(value(found).value.toString(), 'x');
      assert.equal(errorCode(missing), 'ASD_NOT_FOUND');
    } finally {
      await store.close();
    }
  });

  test('overwrite replaces the value and removes the old value file', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      const first = randomBytes(200_000);
      const second = randomBytes(300_000);
      await store.put([{ key: key('o'), value: first }]);
      await store.put([{ key: key('o'), value: second }]);
      assert.ok(value((await store.get([key('o')]))[0]).value.equals(second));
      await store.close();
      // Garbage removal runs after the commit; close() waits for it.
      assert.equal((await valueFiles(dir)).length, 1);
      const reopened = await openStore(dir);
      assert.equal((await reopened.stats()).usedBytes, 300_000);
      await reopened.close();
    } finally {
      await store.close();
    }
  });

  test('concurrent puts share index commits (group commit) and all land', async () => {
    const store = await openStore(await tempDir());
    const metrics = new AsdMetrics({
      usedBytes: () => 0,
      objectCount: () => 0,
      capacityBytes: () => 0,
      inflightPutBytes: () => 0,
    });
    store.metrics = metrics;
    try {
      const count = 64;
      await Promise.all(
        Array.from({ length: count }, (_, i) =>
          store.put([{ key: key(`g/${i}`), value: Buffer.alloc(100, i) }]),
        ),
      );
      const commits = (await metrics.commits.get()).values[0]?.value ?? 0;
      assert.ok(commits >= 1 && commits < count, `${count} puts took ${commits} commits`);
      assert.equal((await store.stats()).objectCount, count);
    } finally {
      await store.close();
    }
  });
});

describe('reads racing writes', () => {
  test('reads racing overwrites and deletes see only whole values that were written', async () => {
    const store = await openStore(await tempDir());
    try {
      // Versions of one key: inline and file-backed, so both caches are exercised.
      const versions = [10, 200_000, 5000, 300_000, 70_000].map((size) => randomBytes(size));
      const known = new Set(versions.map((v) => crc32c(v)));
      const k = key('hot');
      let stop = false;
      let reads = 0;
      const readers = Array.from({ length: 6 }, async () => {
        while (!stop) {
          const [whole] = await store.get([k]);
          assert.ok(whole !== undefined);
          if (whole.ok) {
            assert.ok(known.has(crc32c(whole.value.value)), 'a whole value that was written');
            assert.equal(whole.value.crc32c, crc32c(whole.value.value));
          } else assert.equal(whole.error.code, 'ASD_NOT_FOUND');
          const [slice] = await store.getRanges([{ key: k, offset: 0, length: 10 }]);
          assert.ok(slice !== undefined);
          if (slice.ok) {
            assert.ok(
              versions.some((v) => v.subarray(0, 10).equals(slice.value)),
              'a slice of a written value',
            );
          } else
            assert.ok(
              ['ASD_NOT_FOUND', 'ASD_BAD_RANGE'].includes(slice.error.code),
              slice.error.message,
            );
          reads += 1;
          // Cached inline reads finish in microtasks alone: yield so the writer gets its I/O.
          await new Promise((resolve) => setImmediate(resolve));
        }
      });
      try {
        for (let round = 0; round < 40; round += 1) {
          const value = versions[round % versions.length] as Buffer;
          await store.put([{ key: k, value }]);
          assert.ok(
            value.equals(firstValue(await store.get([k]))),
            'a read after an acknowledged put sees it',
          );
          if (round % 7 === 3) {
            await store.delete([k]);
            assert.equal(errorCode((await store.get([k]))[0]), 'ASD_NOT_FOUND');
          }
        }
      } finally {
        stop = true;
      }
      await Promise.all(readers);
      assert.ok(reads > 10, `${reads} racing reads`);
    } finally {
      await store.close();
    }
  });
});

describe('ranged gets', () => {
  test('slices across block boundaries equal the same bytes of the value', async () => {
    const store = await openStore(await tempDir());
    try {
      const big = randomBytes(1024 * 1024 + 123);
      const small = randomBytes(5000);
      await store.put([
        { key: key('big'), value: big },
        { key: key('small'), value: small },
      ]);
      const slices = [
        { key: key('big'), offset: 0, length: 4096 },
        { key: key('big'), offset: BLOCK_SIZE_BYTES - 10, length: 20 },
        { key: key('big'), offset: 5 * BLOCK_SIZE_BYTES + 3, length: 3 * BLOCK_SIZE_BYTES },
        { key: key('big'), offset: big.length - 1, length: 1 },
        { key: key('big'), offset: 77, length: 0 },
        { key: key('small'), offset: 4000, length: 1000 },
      ];
      const results = await store.getRanges(slices);
      slices.forEach((slice, index) => {
        const source = slice.key.toString() === 'big' ? big : small;
        assert.ok(
          value(results[index]).equals(source.subarray(slice.offset, slice.offset + slice.length)),
          `slice ${index}`,
        );
      });
    } finally {
      await store.close();
    }
  });

  test('a slice past the end answers ASD_BAD_RANGE; one of a missing key ASD_NOT_FOUND', async () => {
    const store = await openStore(await tempDir());
    try {
      await store.put([{ key: key('v'), value: Buffer.alloc(100) }]);
      const [past, missing, ok] = await store.getRanges([
        { key: key('v'), offset: 90, length: 11 },
        { key: key('nope'), offset: 0, length: 1 },
        { key: key('v'), offset: 90, length: 10 },
      ]);
      assert.equal(errorCode(past), 'ASD_BAD_RANGE');
      assert.equal(errorCode(missing), 'ASD_NOT_FOUND');
      assert.equal(value(ok).length, 10);
    } finally {
      await store.close();
    }
  });
});

describe('corruption', () => {
  test('a flipped bit answers ASD_CORRUPT naming the key; untouched blocks still read', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      const data = randomBytes(4 * BLOCK_SIZE_BYTES);
      await store.put([{ key: key('victim'), value: data }]);
      const file = await store.valueFileOf(key('victim'));
      assert.ok(file !== undefined);
      const handle = await fs.open(file, 'r+');
      const byte = Buffer.alloc(1);
      const position = 2 * BLOCK_SIZE_BYTES + 1234;
      await handle.read(byte, 0, 1, position);
      byte[0] = (byte[0] as number) ^ 0x10;
      await handle.write(byte, 0, 1, position);
      await handle.close();

      const [whole] = await store.get([key('victim')]);
      assert.ok(whole !== undefined && !whole.ok);
      assert.equal(whole.error.code, 'ASD_CORRUPT');
      assert.match(whole.error.message, /"victim"/);
      assert.match(whole.error.message, /block 2/);

      const [bad, good] = await store.getRanges([
        { key: key('victim'), offset: 2 * BLOCK_SIZE_BYTES + 1000, length: 4096 },
        { key: key('victim'), offset: 0, length: 4096 },
      ]);
      assert.equal(errorCode(bad), 'ASD_CORRUPT');
      assert.ok(value(good).equals(data.subarray(0, 4096)));
    } finally {
      await store.close();
    }
  });

  test('a truncated or missing value file answers ASD_CORRUPT, never short data', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      await store.put([
        { key: key('short'), value: randomBytes(300_000) },
        { key: key('gone'), value: randomBytes(300_000) },
      ]);
      await fs.truncate((await store.valueFileOf(key('short'))) as string, 100_000);
      await fs.unlink((await store.valueFileOf(key('gone'))) as string);
      const [short, gone] = await store.get([key('short'), key('gone')]);
      assert.equal(errorCode(short), 'ASD_CORRUPT');
      assert.equal(errorCode(gone), 'ASD_CORRUPT');
    } finally {
      await store.close();
    }
  });
});

describe('bad input changes nothing', () => {
  test('each malformed put is refused with its code and the disk stays as it was', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      await store.put([{ key: key('keep'), value: randomBytes(100_000) }]);
      const filesBefore = await valueFiles(dir);
      const statsBefore = await store.stats();
      const big = randomBytes(100_000);
      const cases: [string, Promise<unknown>][] = [
        ['ASD_KEY_EMPTY', store.put([{ key: Buffer.alloc(0), value: big }])],
        ['ASD_KEY_TOO_LARGE', store.put([{ key: Buffer.alloc(MAX_KEY_BYTES + 1, 1), value: big }])],
        ['ASD_INVALID_ARGUMENT', store.put([])],
        [
          'ASD_DUPLICATE_KEY',
          store.put([
            { key: key('d'), value: big },
            { key: key('d'), value: big },
          ]),
        ],
        [
          'ASD_CHECKSUM_MISMATCH',
          store.put([{ key: key('c'), value: big, crc32c: crc32c(big) ^ 1 }]),
        ],
        // A good item with a bad one: the call is atomic, the good one is not stored either.
        [
          'ASD_KEY_TOO_LARGE',
          store.put([
            { key: key('good'), value: big },
            { key: Buffer.alloc(5000), value: big },
          ]),
        ],
        [
          'ASD_TOO_MANY_ITEMS',
          store.put(
            Array.from({ length: MAX_ITEMS_PER_CALL + 1 }, (_, i) => ({
              key: key(`m${i}`),
              value: Buffer.alloc(1),
            })),
          ),
        ],
        ['ASD_KEY_EMPTY', store.get([Buffer.alloc(0)])],
        ['ASD_INVALID_ARGUMENT', store.delete([])],
        ['ASD_BAD_RANGE', store.getRanges([{ key: key('keep'), offset: -1, length: 1 }])],
        ['ASD_INVALID_ARGUMENT', store.list({ limit: 1_000_000 })],
      ];
      for (const [code, promise] of cases) await rejectsWith(promise, code);
      assert.deepEqual(await valueFiles(dir), filesBefore);
      const statsAfter = await store.stats();
      assert.equal(statsAfter.objectCount, statsBefore.objectCount);
      assert.equal(statsAfter.usedBytes, statsBefore.usedBytes);
      assert.equal(errorCode((await store.get([key('good')]))[0]), 'ASD_NOT_FOUND');
    } finally {
      await store.close();
    }
  });

  test('traversal-looking and binary keys are inert opaque bytes: nothing is created outside the directory', async () => {
    const parent = await tempDir();
    const dir = path.join(parent, 'asd');
    const store = await openStore(dir);
    try {
      const hostile = [
        '../escape',
        '../../../../../../tmp/asd-escape-probe',
        '/etc/passwd',
        'asd-identity.json',
        'index/CURRENT',
        'objects/00/000000000001',
        'a\0b',
      ].map(key);
      const items = hostile.map((k, i) => ({
        key: k,
        value: randomBytes(i % 2 === 0 ? 10 : 100_000),
      }));
      await store.put(items);
      const results = await store.get(hostile);
      results.forEach((result, index) => {
        assert.ok(value(result).value.equals((items[index] as { value: Buffer }).value));
      });
      // Nothing appeared beside the ASD directory, and its own files are intact.
      assert.deepEqual(await fs.readdir(parent), ['asd']);
      await assert.rejects(fs.stat('/tmp/asd-escape-probe'));
      const identity = JSON.parse(
        await fs.readFile(path.join(dir, 'asd-identity.json'), 'utf8'),
      ) as { asdId: string };
      assert.equal(identity.asdId, store.identity.asdId);
      const listed = (await store.list({})).entries
        .map((entry) => entry.key.toString('latin1'))
        .sort();
      assert.deepEqual(listed, hostile.map((k) => k.toString('latin1')).sort());
    } finally {
      await store.close();
    }
  });
});

describe('delete and list', () => {
  test('delete is atomic per call, reports existence, and frees value files', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      await store.put([
        { key: key('a'), value: randomBytes(200_000) },
        { key: key('b'), value: randomBytes(10) },
      ]);
      assert.deepEqual(await store.delete([key('a'), key('b'), key('c')]), [true, true, false]);
      assert.equal(errorCode((await store.get([key('a')]))[0]), 'ASD_NOT_FOUND');
      const stats = await store.stats();
      assert.equal(stats.objectCount, 0);
      assert.equal(stats.usedBytes, 0);
      await store.close();
      assert.deepEqual(await valueFiles(dir), []);
    } finally {
      await store.close();
    }
  });

  test('list pages through a prefix in key order with start-after', async () => {
    const store = await openStore(await tempDir());
    try {
      const names = Array.from({ length: 25 }, (_, i) => `ns1/obj${String(i).padStart(3, '0')}`);
      await store.put(
        [...names, 'ns0/x', 'ns2/y', 'ns1'].map((name) => ({
          key: key(name),
          value: Buffer.from(name),
        })),
      );
      const seen: string[] = [];
      let startAfter: Buffer | undefined;
      let pages = 0;
      for (;;) {
        const page = await store.list({ prefix: key('ns1/'), startAfter, limit: 10 });
        pages += 1;
        seen.push(...page.entries.map((entry) => entry.key.toString()));
        if (!page.more) break;
        startAfter = page.entries.at(-1)?.key;
      }
      assert.deepEqual(seen, names);
      assert.equal(pages, 3);
      const all = await store.list({ limit: 100 });
      assert.equal(all.entries.length, 28);
      assert.equal(all.more, false);
      const entry = all.entries.find((e) => e.key.toString() === 'ns2/y');
      assert.equal(entry?.sizeBytes, 5);
      assert.equal(entry?.crc32c, crc32c(Buffer.from('ns2/y')));
      // Keys ending in 0xff bytes still bound their prefix range correctly.
      await store.put([{ key: Buffer.from([0xff, 0xff, 1]), value: Buffer.alloc(1) }]);
      assert.equal((await store.list({ prefix: Buffer.from([0xff, 0xff]) })).entries.length, 1);
    } finally {
      await store.close();
    }
  });
});

describe('identity and restarts', () => {
  test('objects survive a clean restart; the identity is kept', async () => {
    const dir = await tempDir();
    const first = await openStore(dir);
    const data = randomBytes(500_000);
    await first.put([{ key: key('persist'), value: data }]);
    const asdId = first.identity.asdId;
    await first.close();
    const second = await openStore(dir);
    try {
      assert.equal(second.identity.asdId, asdId);
      assert.ok(value((await second.get([key('persist')]))[0]).value.equals(data));
      assert.equal((await second.stats()).objectCount, 1);
    } finally {
      await second.close();
    }
  });

  test('another node or ASD id is refused unless claimed; a foreign non-empty directory too', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const asdId = store.identity.asdId;
    await store.put([{ key: key('mine'), value: Buffer.from('data') }]);
    await store.close();

    await rejectsWith(openStore(dir, { nodeId: 'node-b' }), 'ASD_IDENTITY_MISMATCH');
    await rejectsWith(openStore(dir, { asdId: 'some-other-id' }), 'ASD_IDENTITY_MISMATCH');
    const claimed = await openStore(dir, { nodeId: 'node-b', claim: true });
    assert.equal(claimed.identity.asdId, asdId);
    assert.equal(claimed.identity.nodeId, 'node-b');
    assert.equal(value((await claimed.get([key('mine')]))[0]).value.toString(), 'data');
    await claimed.close();

    const foreign = await tempDir();
    await fs.writeFile(path.join(foreign, 'precious.txt'), 'not yours');
    await rejectsWith(openStore(foreign), 'ASD_DIR_NOT_EMPTY');
    assert.deepEqual(await fs.readdir(foreign), ['precious.txt']);
  });

  test('a second store on the same directory is refused with ASD_DIR_LOCKED', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    try {
      await rejectsWith(openStore(dir), 'ASD_DIR_LOCKED');
    } finally {
      await store.close();
    }
  });

  test('after an unclean shutdown, value files no index record names are swept; named ones stay', async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const kept = randomBytes(100_000);
    await store.put([{ key: key('kept'), value: kept }]);
    await store.close();
    // Simulate a crash between a value file write and its index commit: an unnamed file,
    // and the run-state mark left at "running".
    const orphan = path.join(dir, 'objects', '07', '000000000007');
    await fs.writeFile(orphan, randomBytes(1000));
    const db = new ClassicLevel<Buffer, Buffer>(path.join(dir, 'index'), {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
    });
    assert.equal(await db.get(fileKey(7)), undefined);
    await db.put(metaKey('state'), Buffer.from('running'));
    await db.close();

    const reopened = await openStore(dir);
    await reopened.settled(); // the sweep runs in the background
    await reopened.close();
    await assert.rejects(fs.stat(orphan));
    const again = await openStore(dir);
    try {
      assert.ok(value((await again.get([key('kept')]))[0]).value.equals(kept));
    } finally {
      await again.close();
    }
  });
});

describe('a failing disk', () => {
  test('EIO while syncing a directory fails the put, degrades the ASD, and reads keep working', async () => {
    let failFsync = false;
    const faulty: Disk = {
      ...nodeDisk,
      async fsyncDir(dirPath) {
        if (failFsync) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
        return nodeDisk.fsyncDir(dirPath);
      },
    };
    const store = await openStore(await tempDir(), { disk: faulty });
    try {
      await store.put([{ key: key('before'), value: randomBytes(100_000) }]);
      failFsync = true;
      await rejectsWith(
        store.put([{ key: key('during'), value: randomBytes(100_000) }]),
        'ASD_IO_ERROR',
      );
      failFsync = false;
      assert.equal(store.health().status, 'degraded');
      await rejectsWith(store.put([{ key: key('after'), value: Buffer.alloc(1) }]), 'ASD_IO_ERROR');
      assert.equal(value((await store.get([key('before')]))[0]).value.length, 100_000);
      assert.equal(errorCode((await store.get([key('during')]))[0]), 'ASD_NOT_FOUND');
    } finally {
      await store.close();
    }
  });

  test('ENOSPC while writing a value file answers ASD_NO_SPACE and leaves no file behind', async () => {
    let failWrites = false;
    const faulty: Disk = {
      ...nodeDisk,
      async writeFileDurably(filePath, data) {
        if (failWrites) {
          await nodeDisk.writeFileDurably(filePath, data.subarray(0, 10));
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), {
            code: 'ENOSPC',
          });
        }
        return nodeDisk.writeFileDurably(filePath, data);
      },
    };
    const dir = await tempDir();
    const store = await openStore(dir, { disk: faulty });
    try {
      failWrites = true;
      await rejectsWith(
        store.put([{ key: key('big'), value: randomBytes(200_000) }]),
        'ASD_NO_SPACE',
      );
      assert.deepEqual(await valueFiles(dir), []);
      failWrites = false;
      assert.equal(store.health().status, 'ok');
      await store.put([{ key: key('big'), value: randomBytes(200_000) }]);
    } finally {
      await store.close();
    }
  });

  test('--capacity-bytes caps what is stored with ASD_NO_SPACE; deletes make room again', async () => {
    const store = await openStore(await tempDir(), { capacityBytes: 1024 * 1024 });
    try {
      await store.put([{ key: key('a'), value: randomBytes(600_000) }]);
      await rejectsWith(
        store.put([{ key: key('b'), value: randomBytes(600_000) }]),
        'ASD_NO_SPACE',
      );
      assert.equal((await store.stats()).capacityBytes, 1024 * 1024);
      await store.delete([key('a')]);
      await store.put([{ key: key('b'), value: randomBytes(600_000) }]);
    } finally {
      await store.close();
    }
  });

  test('far from full a recent statfs serves the next puts; near full every put asks the file system', async () => {
    let available = 64 * 1024 ** 3;
    let statfsCalls = 0;
    const counting: Disk = {
      ...nodeDisk,
      async statfs(dirPath) {
        statfsCalls += 1;
        const real = await nodeDisk.statfs(dirPath);
        return { totalBytes: real.totalBytes, availableBytes: available };
      },
    };
    const store = await openStore(await tempDir(), { disk: counting });
    try {
      statfsCalls = 0;
      for (let i = 0; i < 10; i += 1) {
        await store.put([{ key: key(`far${i}`), value: randomBytes(100_000) }]);
      }
      // One statfs, then nine puts within STATFS_REUSE_MS on its figure (minus what they took).
      assert.ok(statfsCalls <= 2, `${statfsCalls} statfs calls for 10 puts far from full`);
      // Near full (less than the margin left): each put checks for itself, and is refused
      // as soon as the file system says so.
      available = 512 * 1024 ** 2;
      await new Promise((resolve) => setTimeout(resolve, 300));
      statfsCalls = 0;
      for (let i = 0; i < 5; i += 1) {
        await store.put([{ key: key(`near${i}`), value: randomBytes(100_000) }]);
      }
      assert.equal(statfsCalls, 5);
      available = 50_000;
      await rejectsWith(
        store.put([{ key: key('full'), value: randomBytes(100_000) }]),
        'ASD_NO_SPACE',
      );
    } finally {
      await store.close();
    }
  });
});
