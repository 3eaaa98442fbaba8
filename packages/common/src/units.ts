import { ShaleError } from './errors.js';

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** Parses "4096", "64KiB", "10GiB", "1.5G" (binary for bare K/M/G/T). Whole bytes only. */
export function parseSizeBytes(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!match) throw new ShaleError('BAD_SIZE', `not a size: "${text}" (try 4096, 64KiB, 10GiB)`);
  const unit = (match[2] ?? '').toLowerCase() || 'b';
  const multiplier = SIZE_UNITS[unit];
  if (multiplier === undefined) {
    throw new ShaleError('BAD_SIZE', `unknown size unit "${match[2]}" in "${text}"`);
  }
  const bytes = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(bytes)) {
    throw new ShaleError('BAD_SIZE', `size "${text}" is not a whole number of bytes`);
  }
  return bytes;
}

/** 1536 -> "1.5 KiB". For humans only; never parse it back. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}
