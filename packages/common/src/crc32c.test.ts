// Proves crc32cCombine(crc(a), crc(b), len(b)) equals crc(a ++ b) for seeded random splits and lengths (SHALE_SEED replays), and that the table CRC32C used for short inputs equals the native one.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { crc32c, crc32cCombine } from './crc32c.js';

test('crc32cCombine matches the checksum of the concatenation', () => {
  const seed = Number(process.env.SHALE_SEED ?? Date.now() % 1_000_000);
  console.log(`seed ${seed}`);
  let state = seed >>> 0 || 1;
  const next = (n: number): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
  const data = randomBytes(1 << 20);
  for (let i = 0; i < 200; i += 1) {
    const total = next(data.length + 1);
    const split = next(total + 1);
    const a = data.subarray(0, split);
    const b = data.subarray(split, total);
    assert.equal(
      crc32cCombine(crc32c(a), crc32c(b), b.length),
      crc32c(data.subarray(0, total)),
      `seed ${seed}, split ${split} of ${total}`,
    );
  }
  // Block-wise, as the ASD does: 64 KiB blocks combined into the whole.
  let whole = 0;
  for (let at = 0; at < data.length; at += 65536) {
    const block = data.subarray(at, at + 65536);
    whole = at === 0 ? crc32c(block) : crc32cCombine(whole, crc32c(block), block.length);
  }
  assert.equal(whole, crc32c(data));
  assert.equal(crc32cCombine(0x12345678, crc32c(Buffer.alloc(0)), 0), 0x12345678);
});

test('the table CRC32C for short inputs equals the native one, with and without a seed', async () => {
  const { crc32c: native } = await import('@node-rs/crc32');
  // The known answer: CRC32C("123456789") = 0xe3069283.
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  for (let length = 0; length < 300; length += 1) {
    const data = randomBytes(length);
    const seed = length % 3 === 0 ? 0 : randomBytes(4).readUInt32LE(0);
    assert.equal(crc32c(data, seed), native(data, seed) >>> 0, `length ${length}`);
  }
});
