// Proves the frame decoder, fed random and mutated byte streams cut into random chunks (at least 100,000 frames, seeded: SHALE_SEED replays), only ever yields frames that respect the header format and the limits, or fails with a FrameError, never buffers more than one header plus one allowed payload beyond the chunk being cut, and decodes valid streams exactly regardless of how they are cut.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { seededRandom } from '@shale/testing';
import { crc32c } from '../crc32c.js';
import { isShaleError } from '../errors.js';
import { FrameDecoder } from './frame-decoder.js';
import { encodeFrameHeader, FRAME_HEADER_BYTES, type Frame, FrameFlag } from './frame-format.js';

const SEED = Number(process.env.SHALE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MAX_PAYLOAD = 4096;

function randomFrame(int: (n: number) => number): { bytes: Buffer; payload: Buffer } {
  const payload = Buffer.alloc(int(3) === 0 ? 0 : int(MAX_PAYLOAD + 1));
  for (let i = 0; i < payload.length; i += 97) payload[i] = int(256);
  const header = encodeFrameHeader(
    {
      op: int(256),
      flags: int(2) === 0 ? FrameFlag.PayloadCrc : int(4) & ~FrameFlag.PayloadCrc,
      handle: int(2 ** 32),
      status: int(3),
      offset: int(2 ** 40) * 4096,
      extent: int(2 ** 32),
    },
    payload,
  );
  return { bytes: Buffer.concat([header, payload]), payload };
}

/** Feeds `stream` in random chunks; returns the frames and the error, if any. */
function feed(
  stream: Buffer,
  int: (n: number) => number,
): { frames: Frame[]; error: unknown; maxBuffered: number } {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder({ maxPayloadBytes: MAX_PAYLOAD }, (f) => frames.push(f));
  let maxBuffered = 0;
  let error: unknown;
  // Chunks arrive in one reused buffer, as from a socket read with onread: the decoder must
  // copy what it keeps, so the buffer is scribbled over after every push.
  const scratch = Buffer.alloc(1 + 3 * MAX_PAYLOAD);
  for (let at = 0; at < stream.length; ) {
    const n = 1 + int(int(4) === 0 ? 8 : 3 * MAX_PAYLOAD);
    const chunk = scratch.subarray(0, stream.copy(scratch, 0, at, at + n));
    at += n;
    try {
      decoder.push(chunk);
    } catch (err) {
      error = err;
      break;
    }
    chunk.fill(0xa5);
    maxBuffered = Math.max(maxBuffered, decoder.bufferedBytes - chunk.length);
  }
  return { frames, error, maxBuffered };
}

test(`valid frames cut at random decode exactly (seed ${SEED})`, () => {
  const random = seededRandom(SEED);
  const int = (n: number) => Math.floor(random() * n);
  let decoded = 0;
  for (let round = 0; round < 200; round += 1) {
    const made = Array.from({ length: 1 + int(200) }, () => randomFrame(int));
    const { frames, error } = feed(Buffer.concat(made.map((m) => m.bytes)), int);
    assert.equal(error, undefined, `seed ${SEED} round ${round}: ${String(error)}`);
    assert.equal(frames.length, made.length);
    frames.forEach((f, i) => {
      assert.ok(f.payload.equals((made[i] as { payload: Buffer }).payload));
      assert.equal(f.payloadBytes, f.payload.length);
    });
    decoded += frames.length;
  }
  console.log(`valid: ${decoded} frames decoded (seed ${SEED})`);
  assert.ok(decoded > 10_000);
});

test(`random and mutated streams: a FrameError or frames within the limits, bounded memory (seed ${SEED})`, () => {
  const random = seededRandom(SEED ^ 0x5eed);
  const int = (n: number) => Math.floor(random() * n);
  let frames = 0;
  let errors = 0;
  let inputs = 0;
  const codes = new Map<string, number>();
  while (frames + errors < 100_000) {
    inputs += 1;
    let stream: Buffer;
    const kind = int(4);
    if (kind === 0) {
      // Pure noise, sometimes starting with a valid magic.
      stream = Buffer.alloc(1 + int(4 * MAX_PAYLOAD));
      for (let i = 0; i < stream.length; i += 1) stream[i] = int(256);
      if (int(2) === 0 && stream.length >= 4) stream.writeUInt32BE(0x53484c46, 0);
    } else {
      // Valid frames, then mutations: flipped bytes, truncation, a length past the limit,
      // a header with a re-computed checksum over mutated fields.
      const made = Array.from({ length: 1 + int(40) }, () => randomFrame(int).bytes);
      stream = Buffer.concat(made);
      const mutations = kind === 1 ? 1 : 1 + int(5);
      for (let m = 0; m < mutations; m += 1) {
        const what = int(4);
        if (stream.length === 0) break;
        if (what === 0) {
          const at = int(stream.length);
          stream[at] = (stream[at] as number) ^ (1 << int(8));
        } else if (what === 1) stream = stream.subarray(0, int(stream.length));
        else if (what === 3 && stream.length >= FRAME_HEADER_BYTES) {
          // A version this side does not speak, with a checksum that matches.
          stream.writeUInt8(2 + int(254), 4);
          stream.writeUInt32LE(crc32c(stream.subarray(0, 36)), 36);
        } else if (what === 2 && stream.length >= FRAME_HEADER_BYTES) {
          // The first header announces too much, with a checksum that matches.
          stream.writeUInt32LE(MAX_PAYLOAD + 1 + int(2 ** 30), 28);
          stream.writeUInt32LE(crc32c(stream.subarray(0, 36)), 36);
        }
      }
    }
    const { frames: got, error, maxBuffered } = feed(stream, int);
    for (const f of got) {
      assert.ok(f.payload.length === f.payloadBytes && f.payloadBytes <= MAX_PAYLOAD);
      assert.ok(Number.isSafeInteger(f.offset) && f.offset >= 0);
    }
    assert.ok(
      maxBuffered <= FRAME_HEADER_BYTES + MAX_PAYLOAD,
      `buffered ${maxBuffered} B beyond a chunk (seed ${SEED}, input ${inputs})`,
    );
    frames += got.length;
    if (error !== undefined) {
      assert.ok(
        isShaleError(error) && error.code.startsWith('FRAME_'),
        `seed ${SEED} input ${inputs}: ${String(error)}`,
      );
      errors += 1;
      codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
    }
  }
  // Every kind of damage was met, not just one.
  for (const code of ['FRAME_MALFORMED', 'FRAME_TOO_LARGE', 'FRAME_VERSION']) {
    assert.ok((codes.get(code) ?? 0) > 0, `no ${code} in ${JSON.stringify([...codes])}`);
  }
  console.log(
    `fuzz: ${inputs} inputs, ${frames} frames, ${errors} FrameErrors ${JSON.stringify([...codes])} (seed ${SEED})`,
  );
});
