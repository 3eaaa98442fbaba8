// Proves value files written through direct-write.ts read back byte for byte at their exact size (aligned, unaligned, multi-piece, small, concurrent past the staging-buffer limit), with O_DIRECT used where the file system allows it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  DIRECT_WRITE_ALIGN_BYTES,
  DIRECT_WRITE_BUFFER_BYTES,
  DIRECT_WRITE_BUFFERS_MAX,
  DIRECT_WRITE_MIN_BYTES,
} from './constants.js';
import { directWriteCounts, writeFileDurably } from './direct-write.js';

test('direct writes read back exactly', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'asd-direct-'));
  try {
    const sizes = [
      0,
      100,
      DIRECT_WRITE_MIN_BYTES - 1,
      DIRECT_WRITE_MIN_BYTES,
      2 * 1024 * 1024,
      2 * 1024 * 1024 + 8,
      DIRECT_WRITE_BUFFER_BYTES + DIRECT_WRITE_ALIGN_BYTES + 13,
      2 * DIRECT_WRITE_BUFFER_BYTES,
    ];
    const before = directWriteCounts();
    for (const [i, size] of sizes.entries()) {
      const data = randomBytes(size);
      // A view at an odd offset: the source need not be aligned.
      const view = Buffer.concat([Buffer.alloc(3), data]).subarray(3);
      const file = path.join(dir, `v${i}`);
      await writeFileDurably(file, view);
      assert.equal((await stat(file)).size, size, `size ${size}`);
      assert.ok((await readFile(file)).equals(data), `bytes of size ${size}`);
    }
    // Overwriting a longer file leaves only the new bytes.
    const short = randomBytes(DIRECT_WRITE_MIN_BYTES + 1);
    await writeFileDurably(path.join(dir, 'v7'), short);
    assert.ok((await readFile(path.join(dir, 'v7'))).equals(short));
    // More writes at once than staging buffers: the rest are buffered, all land.
    const many = Array.from({ length: DIRECT_WRITE_BUFFERS_MAX + 4 }, () =>
      randomBytes(DIRECT_WRITE_MIN_BYTES + 4096),
    );
    await Promise.all(many.map((data, i) => writeFileDurably(path.join(dir, `m${i}`), data)));
    for (const [i, data] of many.entries()) {
      assert.ok((await readFile(path.join(dir, `m${i}`))).equals(data), `concurrent ${i}`);
    }
    const after = directWriteCounts();
    const total =
      after.directWrites + after.bufferedWrites - before.directWrites - before.bufferedWrites;
    assert.equal(total, sizes.length + 1 + many.length);
    if (after.directSupported) assert.ok(after.directWrites - before.directWrites >= 5);
    else console.log(`O_DIRECT is not supported under ${os.tmpdir()}: all writes were buffered`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
