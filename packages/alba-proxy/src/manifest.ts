import { assert, crc32c, errorMessage, isShaleError } from '@shale/common';
import { fragmentSizeFor } from './chunk-format.js';
import { chunkSpans } from './chunking.js';
import {
  FRAGMENT_SIZE_ALIGN_BYTES,
  FRAGMENT_SIZE_MAX_BYTES,
  FRAGMENT_SIZE_MIN_BYTES,
  MANIFEST_FORMAT_VERSION,
  MANIFEST_MAX_OSDS,
  NONCE_PREFIX_BYTES,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { ChunkInfo, ObjectCodecInfo } from './object-codec.js';
import { type Compression, type Encryption, type Policy, validatePolicy } from './preset.js';

/**
 * An object's manifest: everything needed to find and decode it. Stored in the KV at
 * /shale/ns/<ns>/m/<name>. Fragment keys are not stored: they are derived from
 * (namespace, version, chunk index, fragment index) (see fragmentKey in proxy-engine.ts).
 */
export interface Manifest {
  readonly name: string;
  /** From /shale/ns/<ns>/seq/version: every put of an object gets a new one (fresh fragment keys). */
  readonly version: number;
  /** The namespace epoch the writer held when it committed. */
  readonly writerEpoch: number;
  readonly createdAtMs: number;
  /** The policy the object was written with (c and x matter to repair). */
  readonly policy: Policy;
  /** What the codec needs: k, m, transforms, sizes, CRCs, nonces, key id. */
  readonly info: ObjectCodecInfo;
  /** Per chunk, per fragment index (k + m): the OSD holding it, or undefined when missing. */
  readonly placement: readonly (readonly (string | undefined)[])[];
}

/*
 * Binary encoding, version 1 (all integers unsigned LEB128 varints unless said otherwise):
 *
 *   u8   format version (1)
 *   str  name                      (varint length + ASCII)
 *        version, writerEpoch, createdAtMs
 *   u8   k, m, c, x
 *   u8   transforms                (compression: bits 0-1 none/lz4/zstd; encryption: bit 2)
 *        fragmentSizeMaxBytes / 64 KiB
 *        sizeBytes
 *   u32  objectCrc32c (BE)
 *   str  keyId                     (only when encrypted)
 *        osdCount, then per OSD:   u8 form (0 string, 1 32-hex, 2 uuid) + 16 bytes | str
 *        chunkCount, then per chunk:
 *          plainSizeBytes
 *          storedSizeBytes         (only when compressed or encrypted; else = plain)
 *          8-byte nonce            (only when encrypted)
 *          compressedBlocks        (only when compressed)
 *          u32 BE CRC32C per fragment (k + m)
 *          u8 OSD table index per fragment (0xff = missing)
 *   u32  CRC32C (BE) of every byte before it
 *
 * fragmentSizeBytes is derived (fragmentSizeFor(stored, k, m)); chunk boundaries are derived
 * (chunkSpans), and checked against the stored plain sizes.
 */

const MISSING = 0xff;
const OSD_FORM_STRING = 0;
const OSD_FORM_HEX32 = 1;
const OSD_FORM_UUID = 2;
const COMPRESSION_CODES: readonly Compression[] = ['none', 'lz4', 'zstd'];
const HEX32 = /^[0-9a-f]{32}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CRC_BYTES = 4;

class Writer {
  private buffer = Buffer.allocUnsafe(512);
  private at = 0;

  private room(bytes: number): void {
    if (this.at + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.at + bytes));
    this.buffer.copy(grown, 0, 0, this.at);
    this.buffer = grown;
  }

  u8(value: number): void {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xff, `u8 out of range: ${value}`);
    this.room(1);
    this.buffer[this.at++] = value;
  }

  u32(value: number): void {
    this.room(4);
    this.buffer.writeUInt32BE(value >>> 0, this.at);
    this.at += 4;
  }

  varint(value: number): void {
    assert(Number.isSafeInteger(value) && value >= 0, `varint out of range: ${value}`);
    this.room(8);
    let rest = value;
    while (rest >= 0x80) {
      this.buffer[this.at++] = (rest % 0x80) | 0x80;
      rest = Math.floor(rest / 0x80);
    }
    this.buffer[this.at++] = rest;
  }

  bytes(value: Uint8Array): void {
    this.room(value.length);
    this.buffer.set(value, this.at);
    this.at += value.length;
  }

  str(value: string): void {
    const bytes = Buffer.from(value, 'utf8');
    this.varint(bytes.length);
    this.bytes(bytes);
  }

  finish(): Buffer {
    this.u32(crc32c(this.buffer.subarray(0, this.at)));
    return this.buffer.subarray(0, this.at);
  }
}

function corrupt(message: string, cause?: unknown): never {
  throw proxyError(
    ProxyErrorCode.CorruptManifest,
    `manifest: ${message}`,
    cause === undefined ? {} : { cause },
  );
}

class Reader {
  private at = 0;
  constructor(private readonly buffer: Buffer) {}

  private need(bytes: number, what: string): void {
    if (this.at + bytes > this.buffer.length) corrupt(`truncated in ${what}`);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buffer[this.at++] as number;
  }

  u32(what: string): number {
    this.need(4, what);
    const value = this.buffer.readUInt32BE(this.at);
    this.at += 4;
    return value;
  }

  varint(what: string): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const byte = this.u8(what);
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) {
        if (!Number.isSafeInteger(value)) corrupt(`${what} is not a safe integer`);
        return value;
      }
      scale *= 0x80;
    }
    return corrupt(`${what} is not a valid varint`);
  }

  bytes(length: number, what: string): Buffer {
    this.need(length, what);
    const value = this.buffer.subarray(this.at, this.at + length);
    this.at += length;
    return value;
  }

  str(what: string, maxBytes: number): string {
    const length = this.varint(`${what} length`);
    if (length > maxBytes) corrupt(`${what} is ${length} bytes, more than ${maxBytes}`);
    return this.bytes(length, what).toString('utf8');
  }

  get remaining(): number {
    return this.buffer.length - this.at;
  }
}

function osdIdToBytes(osdId: string, writer: Writer): void {
  if (HEX32.test(osdId)) {
    writer.u8(OSD_FORM_HEX32);
    writer.bytes(Buffer.from(osdId, 'hex'));
  } else if (UUID.test(osdId)) {
    writer.u8(OSD_FORM_UUID);
    writer.bytes(Buffer.from(osdId.replaceAll('-', ''), 'hex'));
  } else {
    writer.u8(OSD_FORM_STRING);
    writer.str(osdId);
  }
}

function osdIdFromBytes(reader: Reader): string {
  const form = reader.u8('OSD id form');
  if (form === OSD_FORM_STRING) return reader.str('OSD id', 1024);
  if (form !== OSD_FORM_HEX32 && form !== OSD_FORM_UUID) corrupt(`unknown OSD id form ${form}`);
  const hex = reader.bytes(16, 'OSD id').toString('hex');
  if (form === OSD_FORM_HEX32) return hex;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function isTransformed(info: { compression: Compression; encryption: Encryption }): boolean {
  return info.compression !== 'none' || info.encryption !== 'none';
}

/** Encodes a manifest (see the layout above). Inconsistent input is a programmer error. */
export function encodeManifest(manifest: Manifest): Buffer {
  const { info, policy } = manifest;
  const total = info.k + info.m;
  assert(policy.k === info.k && policy.m === info.m, 'manifest policy matches the codec info');
  assert(manifest.placement.length === info.chunks.length, 'one placement per chunk');
  const osdIndex = new Map<string, number>();
  for (const chunkPlacement of manifest.placement) {
    assert(chunkPlacement.length === total, 'placement has k + m entries per chunk');
    for (const osdId of chunkPlacement) {
      if (osdId !== undefined && !osdIndex.has(osdId)) osdIndex.set(osdId, osdIndex.size);
    }
  }
  assert(osdIndex.size <= MANIFEST_MAX_OSDS, `a manifest names at most ${MANIFEST_MAX_OSDS} OSDs`);
  assert(
    info.fragmentSizeMaxBytes % FRAGMENT_SIZE_ALIGN_BYTES === 0,
    'fragmentSizeMaxBytes is aligned',
  );
  const w = new Writer();
  w.u8(MANIFEST_FORMAT_VERSION);
  w.str(manifest.name);
  w.varint(manifest.version);
  w.varint(manifest.writerEpoch);
  w.varint(manifest.createdAtMs);
  w.u8(policy.k);
  w.u8(policy.m);
  w.u8(policy.c);
  w.u8(Math.min(policy.x, 0xff));
  w.u8(COMPRESSION_CODES.indexOf(info.compression) | (info.encryption === 'none' ? 0 : 4));
  w.varint(info.fragmentSizeMaxBytes / FRAGMENT_SIZE_ALIGN_BYTES);
  w.varint(info.sizeBytes);
  w.u32(info.objectCrc32c);
  if (info.encryption !== 'none') {
    assert(info.keyId !== undefined, 'an encrypted object has a key id');
    w.str(info.keyId);
  }
  w.varint(osdIndex.size);
  for (const osdId of osdIndex.keys()) osdIdToBytes(osdId, w);
  w.varint(info.chunks.length);
  const transformed = isTransformed(info);
  info.chunks.forEach((chunk, chunkIndex) => {
    assert(chunk.fragmentCrcs.length === total, 'k + m fragment CRCs per chunk');
    assert(
      chunk.fragmentSizeBytes === fragmentSizeFor(chunk.storedSizeBytes, info.k, info.m),
      'fragmentSizeBytes is derived from storedSizeBytes',
    );
    w.varint(chunk.plainSizeBytes);
    if (transformed) w.varint(chunk.storedSizeBytes);
    else assert(chunk.storedSizeBytes === chunk.plainSizeBytes, 'untransformed: stored = plain');
    if (info.encryption !== 'none') {
      assert(chunk.nonce?.length === NONCE_PREFIX_BYTES, 'an encrypted chunk has a nonce');
      w.bytes(chunk.nonce);
    }
    if (info.compression !== 'none') w.varint(chunk.compressedBlocks ?? 0);
    for (const crc of chunk.fragmentCrcs) w.u32(crc);
    for (const osdId of manifest.placement[chunkIndex] as (string | undefined)[]) {
      w.u8(osdId === undefined ? MISSING : (osdIndex.get(osdId) as number));
    }
  });
  return w.finish();
}

/**
 * Decodes and checks a stored manifest. Anything wrong (unknown format version, CRC32C
 * mismatch, truncation, trailing bytes, impossible values): PROXY_CORRUPT_MANIFEST.
 */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < 1 + CRC_BYTES) corrupt(`only ${buffer.length} bytes`);
  if (buffer[0] !== MANIFEST_FORMAT_VERSION) corrupt(`unknown format version ${buffer[0]}`);
  const body = buffer.subarray(0, buffer.length - CRC_BYTES);
  const stored = buffer.readUInt32BE(buffer.length - CRC_BYTES);
  if (crc32c(body) !== stored) corrupt('CRC32C mismatch');
  try {
    return decodeBody(new Reader(body));
  } catch (err) {
    if (isShaleError(err, ProxyErrorCode.CorruptManifest)) throw err;
    return corrupt(errorMessage(err), err);
  }
}

function decodeBody(r: Reader): Manifest {
  r.u8('format version');
  const name = r.str('name', 4096);
  const version = r.varint('version');
  const writerEpoch = r.varint('writerEpoch');
  const createdAtMs = r.varint('createdAtMs');
  const k = r.u8('k');
  const m = r.u8('m');
  const c = r.u8('c');
  const x = r.u8('x');
  const policy = validatePolicy([k, m, c, x], 'policy');
  const transforms = r.u8('transforms');
  const compression = COMPRESSION_CODES[transforms & 3];
  if (compression === undefined || (transforms & ~7) !== 0)
    corrupt(`bad transforms byte ${transforms}`);
  const encryption: Encryption = (transforms & 4) === 0 ? 'none' : 'aes-256-gcm';
  const fragmentSizeMaxBytes = r.varint('fragmentSizeMax') * FRAGMENT_SIZE_ALIGN_BYTES;
  if (
    fragmentSizeMaxBytes < FRAGMENT_SIZE_MIN_BYTES ||
    fragmentSizeMaxBytes > FRAGMENT_SIZE_MAX_BYTES
  ) {
    corrupt(`fragmentSizeMaxBytes ${fragmentSizeMaxBytes} out of range`);
  }
  const sizeBytes = r.varint('sizeBytes');
  const objectCrc32c = r.u32('objectCrc32c');
  const keyId = encryption === 'none' ? undefined : r.str('keyId', 1024);
  const osdCount = r.varint('OSD count');
  if (osdCount > MANIFEST_MAX_OSDS) corrupt(`${osdCount} OSDs`);
  const osdIds: string[] = [];
  for (let i = 0; i < osdCount; i++) osdIds.push(osdIdFromBytes(r));
  const chunkCount = r.varint('chunk count');
  const spans = chunkSpans(sizeBytes, k, fragmentSizeMaxBytes);
  if (chunkCount !== spans.length)
    corrupt(`${chunkCount} chunks for ${sizeBytes} bytes (expected ${spans.length})`);
  const transformed = compression !== 'none' || encryption !== 'none';
  const total = k + m;
  const chunks: ChunkInfo[] = [];
  const placement: (string | undefined)[][] = [];
  for (const span of spans) {
    const where = `chunk ${span.chunkIndex}`;
    const plainSizeBytes = r.varint(`${where} plainSize`);
    if (plainSizeBytes !== span.plainSizeBytes)
      corrupt(`${where} has ${plainSizeBytes} plain bytes, expected ${span.plainSizeBytes}`);
    const storedSizeBytes = transformed ? r.varint(`${where} storedSize`) : plainSizeBytes;
    // The block table adds at most 24 bytes per 64 KiB block; payloads never grow.
    if (storedSizeBytes < 1 || storedSizeBytes > plainSizeBytes * 2 + 1024)
      corrupt(`${where} storedSize ${storedSizeBytes} impossible for ${plainSizeBytes}`);
    const nonce =
      encryption === 'none'
        ? undefined
        : Buffer.from(r.bytes(NONCE_PREFIX_BYTES, `${where} nonce`));
    const compressedBlocks =
      compression === 'none' ? undefined : r.varint(`${where} compressedBlocks`);
    const fragmentCrcs: number[] = [];
    for (let f = 0; f < total; f++) fragmentCrcs.push(r.u32(`${where} fragment CRC`));
    const osds: (string | undefined)[] = [];
    for (let f = 0; f < total; f++) {
      const index = r.u8(`${where} placement`);
      if (index === MISSING) osds.push(undefined);
      else if (index >= osdIds.length) corrupt(`${where} names OSD #${index} of ${osdIds.length}`);
      else osds.push(osdIds[index]);
    }
    chunks.push({
      plainSizeBytes,
      storedSizeBytes,
      fragmentSizeBytes: fragmentSizeFor(storedSizeBytes, k, m),
      ...(nonce === undefined ? {} : { nonce }),
      ...(compressedBlocks === undefined ? {} : { compressedBlocks }),
      fragmentCrcs,
    });
    placement.push(osds);
  }
  if (r.remaining !== 0) corrupt(`${r.remaining} trailing bytes`);
  const info: ObjectCodecInfo = {
    k,
    m,
    fragmentSizeMaxBytes,
    compression,
    encryption,
    sizeBytes,
    objectCrc32c,
    chunks,
    ...(keyId === undefined ? {} : { keyId }),
  };
  return { name, version, writerEpoch, createdAtMs, policy, info, placement };
}

/** How many fragments of each chunk are placed (not missing). */
export function placedCounts(manifest: Manifest): number[] {
  return manifest.placement.map((p) => p.filter((osdId) => osdId !== undefined).length);
}
