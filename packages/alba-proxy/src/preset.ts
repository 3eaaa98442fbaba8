import { fragmentSizeFor } from './chunk-format.js';
import {
  BLOCK_ENTRY_ENCRYPTED_BYTES,
  CODEC_BLOCK_SIZE_BYTES,
  DEFAULT_FRAGMENT_SIZE_MAX_BYTES,
  FRAGMENT_SIZE_ALIGN_BYTES,
  FRAGMENT_SIZE_MAX_BYTES,
  FRAGMENT_SIZE_MIN_BYTES,
  MAX_DATA_FRAGMENTS,
  MAX_PARITY_FRAGMENTS,
  STORED_FRAGMENT_MAX_BYTES,
} from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';

export type Compression = 'none' | 'lz4' | 'zstd';
export type Encryption = 'none' | 'aes-256-gcm';
export type Checksum = 'crc32c';

/**
 * One erasure-coding policy (k, m, c, x): k data fragments, m parity fragments, c fragments
 * stored before a write is acknowledged, at most x fragments of a chunk per node.
 */
export interface Policy {
  readonly k: number;
  readonly m: number;
  readonly c: number;
  readonly x: number;
}

export interface Preset {
  readonly name: string;
  /** Tried in order: the first one the live OSDs can satisfy is used (see policy.ts). */
  readonly policies: readonly Policy[];
  readonly fragmentSizeMaxBytes: number;
  readonly compression: Compression;
  readonly encryption: Encryption;
  readonly checksum: Checksum;
}

/** The JSON form: policies as [k, m, c, x] tuples, as in ALBA. */
export interface PresetJson {
  name: string;
  policies: [number, number, number, number][];
  fragmentSizeMaxBytes: number;
  compression: Compression;
  encryption: Encryption;
  checksum: Checksum;
}

const PRESET_FIELDS = [
  'name',
  'policies',
  'fragmentSizeMaxBytes',
  'compression',
  'encryption',
  'checksum',
] as const;
const COMPRESSIONS: readonly string[] = ['none', 'lz4', 'zstd'];
const ENCRYPTIONS: readonly string[] = ['none', 'aes-256-gcm'];
const CHECKSUMS: readonly string[] = ['crc32c'];

function bad(field: string, message: string): never {
  throw proxyError(ProxyErrorCode.BadPreset, `preset field ${field}: ${message}`, {
    details: { field },
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function oneOf<T extends string>(value: unknown, allowed: readonly string[], field: string): T {
  if (typeof value !== 'string' || !allowed.includes(value)) {
    bad(
      field,
      `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as T;
}

function integer(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    bad(field, `must be an integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Checks one policy; `field` names it in errors (policies[1]). */
export function validatePolicy(value: unknown, field: string): Policy {
  if (!Array.isArray(value) || value.length !== 4) {
    bad(field, `must be [k, m, c, x], got ${JSON.stringify(value)}`);
  }
  const k = integer(value[0], `${field}.k`);
  const m = integer(value[1], `${field}.m`);
  const c = integer(value[2], `${field}.c`);
  const x = integer(value[3], `${field}.x`);
  if (k < 1 || k > MAX_DATA_FRAGMENTS) {
    bad(`${field}.k`, `must be in 1..${MAX_DATA_FRAGMENTS} (the erasure coder's limit), got ${k}`);
  }
  if (m < 0 || m > MAX_PARITY_FRAGMENTS) {
    bad(
      `${field}.m`,
      `must be in 0..${MAX_PARITY_FRAGMENTS} (the erasure coder's limit), got ${m}`,
    );
  }
  if (c < k || c > k + m) bad(`${field}.c`, `must be in k..k+m = ${k}..${k + m}, got ${c}`);
  if (x < 1) bad(`${field}.x`, `must be >= 1, got ${x}`);
  return { k, m, c, x };
}

/**
 * Largest fragment a chunk of this preset can produce. With compression or encryption the
 * stored chunk is blockTable || payloads, and payloads are never larger than the plaintext
 * (a block that does not compress is stored raw; GCM does not expand), so the worst case is
 * fragmentSizeMaxBytes + ceil(tableBytes / k), rounded up as the coder needs.
 */
export function worstFragmentSizeBytes(
  k: number,
  m: number,
  fragmentSizeMaxBytes: number,
  compression: Compression,
  encryption: Encryption,
): number {
  if (compression === 'none' && encryption === 'none') return fragmentSizeMaxBytes;
  const blocks = Math.ceil((k * fragmentSizeMaxBytes) / CODEC_BLOCK_SIZE_BYTES);
  const stored = k * fragmentSizeMaxBytes + blocks * BLOCK_ENTRY_ENCRYPTED_BYTES;
  return fragmentSizeFor(stored, k, m);
}

/**
 * Validates a preset given as parsed JSON (unknown input: an operator's file or a REST
 * body). Throws PROXY_BAD_PRESET naming the first bad field; unknown fields are refused
 * too, so a typo ("fragmentSizeMax") is not silently replaced by a default.
 */
export function parsePreset(value: unknown): Preset {
  if (!isPlainObject(value)) bad('(preset)', 'must be a JSON object');
  for (const key of Object.keys(value)) {
    if (!(PRESET_FIELDS as readonly string[]).includes(key)) bad(key, 'unknown field');
  }
  const name = value.name;
  if (typeof name !== 'string' || name.length === 0 || name.length > 128) {
    bad('name', 'must be a string of 1..128 characters');
  }
  const policiesValue = value.policies;
  if (!Array.isArray(policiesValue) || policiesValue.length === 0) {
    bad('policies', 'must be a non-empty array of [k, m, c, x]');
  }
  const policies = policiesValue.map((p, i) => validatePolicy(p, `policies[${i}]`));
  const fragmentSizeMaxBytes = integer(value.fragmentSizeMaxBytes, 'fragmentSizeMaxBytes');
  if (
    fragmentSizeMaxBytes < FRAGMENT_SIZE_MIN_BYTES ||
    fragmentSizeMaxBytes > FRAGMENT_SIZE_MAX_BYTES ||
    fragmentSizeMaxBytes % FRAGMENT_SIZE_ALIGN_BYTES !== 0
  ) {
    bad(
      'fragmentSizeMaxBytes',
      `must be a multiple of ${FRAGMENT_SIZE_ALIGN_BYTES} in ${FRAGMENT_SIZE_MIN_BYTES}..${FRAGMENT_SIZE_MAX_BYTES}, got ${fragmentSizeMaxBytes}`,
    );
  }
  const compression = oneOf<Compression>(value.compression, COMPRESSIONS, 'compression');
  const encryption = oneOf<Encryption>(value.encryption, ENCRYPTIONS, 'encryption');
  const checksum = oneOf<Checksum>(value.checksum, CHECKSUMS, 'checksum');
  for (const policy of policies) {
    const worst = worstFragmentSizeBytes(
      policy.k,
      policy.m,
      fragmentSizeMaxBytes,
      compression,
      encryption,
    );
    if (worst > STORED_FRAGMENT_MAX_BYTES) {
      bad(
        'fragmentSizeMaxBytes',
        `with compression or encryption a fragment carries part of the block table and would reach ${worst} bytes, over the ASD's ${STORED_FRAGMENT_MAX_BYTES}; use at most ${FRAGMENT_SIZE_MAX_BYTES - FRAGMENT_SIZE_ALIGN_BYTES}`,
      );
    }
  }
  return { name, policies, fragmentSizeMaxBytes, compression, encryption, checksum };
}

/** The JSON form of a preset (policies as tuples); parsePreset(presetToJson(p)) equals p. */
export function presetToJson(preset: Preset): PresetJson {
  return {
    name: preset.name,
    policies: preset.policies.map((p) => [p.k, p.m, p.c, p.x]),
    fragmentSizeMaxBytes: preset.fragmentSizeMaxBytes,
    compression: preset.compression,
    encryption: preset.encryption,
    checksum: preset.checksum,
  };
}

/**
 * Single node with 6 ASDs: every fragment may sit on the node (x = 6), so the unit of
 * failure is a disk. (4,2) costs 1.5x and survives two disks. The fallbacks keep c = k + 1,
 * so that even a degraded write is acknowledged with one fragment of redundancy: 5 live
 * ASDs -> (4,2) places 5, maintenance adds the 6th; 4 live -> (3,2) places 4; 3 live ->
 * (2,1) places all 3; 2 or fewer live -> PROXY_NO_POLICY rather than an unprotected ack.
 */
export const DEFAULT_PRESET_SINGLE_NODE: Preset = parsePreset({
  name: 'default-single-node',
  policies: [
    [4, 2, 5, 6],
    [3, 2, 4, 6],
    [2, 1, 3, 6],
  ],
  fragmentSizeMaxBytes: DEFAULT_FRAGMENT_SIZE_MAX_BYTES,
  compression: 'none',
  encryption: 'none',
  checksum: 'crc32c',
});

/**
 * Three or more nodes: x <= m in every policy, so losing a whole node loses at most m
 * fragments of any fully written chunk. (4,2,5,2) spreads 6 fragments 2/2/2 over 3 nodes
 * (1.5x). With one node of three down only 4 fragments fit (2 per live node), so (2,2,3,2)
 * takes over (2x), still surviving the loss of one more node.
 */
export const DEFAULT_PRESET_MULTI_NODE: Preset = parsePreset({
  name: 'default-multi-node',
  policies: [
    [4, 2, 5, 2],
    [2, 2, 3, 2],
  ],
  fragmentSizeMaxBytes: DEFAULT_FRAGMENT_SIZE_MAX_BYTES,
  compression: 'none',
  encryption: 'none',
  checksum: 'crc32c',
});
