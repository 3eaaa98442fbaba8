import { assert, crc32c } from '@shale/common';
import {
  coderFragmentSizeBytes,
  decodeUnitBytes,
  encodeParity,
  reconstructShards,
} from './erasure-coder.js';
import { ProxyErrorCode, proxyError } from './errors.js';

/**
 * A chunk's stored bytes S (the plaintext itself, or blockTable || payloads) become k + m
 * fragments of fragmentSizeBytes each:
 *
 *   F = ceil(len(S) / k) rounded up to a multiple of 8 (the coder's requirement)
 *   S is padded with zeros to k * F
 *   data fragment i   = S[i * F, (i + 1) * F)          (contiguous: a byte range of S is a
 *                                                       byte range of one or two fragments)
 *   parity fragment j = Reed-Solomon over the k data fragments
 *
 * Reading a byte range of S needs only the data fragments that cover it; when one of them
 * is unavailable, the same (aligned) byte range of k other fragments rebuilds it.
 */
export interface StripeLayout {
  readonly k: number;
  readonly m: number;
  readonly fragmentSizeBytes: number;
  /** len(S); the padding after it is zeros. */
  readonly storedSizeBytes: number;
}

/** F for a stored chunk of storedSizeBytes: ceil(len / k), aligned for the coder. */
export function fragmentSizeFor(storedSizeBytes: number, k: number, m: number): number {
  assert(storedSizeBytes > 0, 'a stored chunk is never empty');
  return coderFragmentSizeBytes(k, m, Math.ceil(storedSizeBytes / k));
}

export interface StripedChunk {
  readonly fragments: Buffer[];
  readonly fragmentCrcs: number[];
}

/**
 * Cuts `padded` (S followed by zeros up to k * F) into k data fragments (views, no copy)
 * and computes m parity fragments, and every fragment's CRC32C.
 */
export async function stripeChunk(layout: StripeLayout, padded: Buffer): Promise<StripedChunk> {
  const { k, m, fragmentSizeBytes: f } = layout;
  assert(padded.length === k * f, 'padded chunk must be k * F bytes');
  const fragments: Buffer[] = [];
  for (let i = 0; i < k; i++) fragments.push(padded.subarray(i * f, (i + 1) * f));
  if (m > 0) {
    const parity = await encodeParity(k, m, padded, f);
    for (let j = 0; j < m; j++) fragments.push(parity.subarray(j * f, (j + 1) * f));
  }
  return { fragments, fragmentCrcs: fragments.map((fragment) => crc32c(fragment)) };
}

/** One byte range of one fragment to fetch. */
export interface FragmentSlice {
  readonly fragmentIndex: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** Rebuild `targets` over [offsetBytes, offsetBytes + lengthBytes) from the same range of `sources`. */
export interface DecodeStep {
  readonly sources: readonly number[];
  readonly targets: readonly number[];
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** What planRead decided: fetch `slices`, run `decodes`, then assemble the range. */
export interface ReadPlan {
  readonly storedOffsetBytes: number;
  readonly lengthBytes: number;
  readonly slices: readonly FragmentSlice[];
  readonly decodes: readonly DecodeStep[];
}

interface Interval {
  start: number;
  end: number;
}

function mergeIntervals(intervals: Interval[]): Interval[] {
  const sorted = [...intervals].sort((a, b) => a.start - b.start);
  const out: Interval[] = [];
  for (const interval of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && interval.start <= last.end)
      last.end = Math.max(last.end, interval.end);
    else out.push({ ...interval });
  }
  return out;
}

function checkAvailable(layout: StripeLayout, available: readonly boolean[]): void {
  if (available.length !== layout.k + layout.m) {
    throw proxyError(
      ProxyErrorCode.BadArgument,
      `availability must list k + m = ${layout.k + layout.m} fragments, got ${available.length}`,
    );
  }
}

/**
 * Plans the read of S[storedOffsetBytes, storedOffsetBytes + lengthBytes): the slices of
 * fragments to fetch (one per covering data fragment when all are available: one round
 * trip, no decoding) and, for each unavailable covering data fragment, a decode of the same
 * range, aligned as the coder needs, from k available fragments (data ones first).
 * `available[i]` says whether fragment i can be read now (placed and its OSD up).
 */
export function planRead(
  layout: StripeLayout,
  storedOffsetBytes: number,
  lengthBytes: number,
  available: readonly boolean[],
): ReadPlan {
  const { k, m, fragmentSizeBytes: f, storedSizeBytes } = layout;
  checkAvailable(layout, available);
  if (
    !Number.isSafeInteger(storedOffsetBytes) ||
    !Number.isSafeInteger(lengthBytes) ||
    storedOffsetBytes < 0 ||
    lengthBytes < 0 ||
    storedOffsetBytes + lengthBytes > storedSizeBytes
  ) {
    throw proxyError(
      ProxyErrorCode.BadArgument,
      `range ${storedOffsetBytes}+${lengthBytes} is outside the stored chunk of ${storedSizeBytes} bytes`,
    );
  }
  if (lengthBytes === 0) return { storedOffsetBytes, lengthBytes, slices: [], decodes: [] };
  const end = storedOffsetBytes + lengthBytes;
  const firstFragment = Math.floor(storedOffsetBytes / f);
  const lastFragment = Math.floor((end - 1) / f);
  const wanted = new Map<number, Interval[]>();
  const want = (fragmentIndex: number, start: number, stop: number): void => {
    const list = wanted.get(fragmentIndex) ?? [];
    list.push({ start, end: stop });
    wanted.set(fragmentIndex, list);
  };
  const missing: { fragmentIndex: number; start: number; end: number }[] = [];
  for (let i = firstFragment; i <= lastFragment; i++) {
    const start = Math.max(storedOffsetBytes - i * f, 0);
    const stop = Math.min(end - i * f, f);
    if (available[i] === true) want(i, start, stop);
    else missing.push({ fragmentIndex: i, start, end: stop });
  }
  const decodes: DecodeStep[] = [];
  if (missing.length > 0) {
    const usable = available.flatMap((ok, i) => (ok ? [i] : []));
    if (usable.length < k) {
      throw proxyError(
        ProxyErrorCode.NotEnoughFragments,
        `data fragment ${missing[0]?.fragmentIndex} is unavailable and only ${usable.length} of ${k + m} fragments are (k = ${k})`,
      );
    }
    const dataMissing = available.slice(0, k).filter((ok) => !ok).length;
    // One data fragment missing and parity 0 present: plain XOR, byte-wise (erasure-coder.ts).
    const xorSources =
      dataMissing === 1 && m >= 1 && available[k] === true
        ? Array.from({ length: k + 1 }, (_, i) => i).filter((i) => i !== missing[0]?.fragmentIndex)
        : undefined;
    const sources = xorSources ?? usable.slice(0, k);
    const groups = new Map<string, { start: number; end: number; targets: number[] }>();
    // One alignment for all groups: byte-wise only for a single target (erasure-coder.ts).
    const unit = decodeUnitBytes(
      k,
      m,
      f,
      sources,
      missing.map((miss) => miss.fragmentIndex),
    );
    for (const miss of missing) {
      const start = Math.floor(miss.start / unit) * unit;
      const stop = Math.min(Math.ceil(miss.end / unit) * unit, f);
      const key = `${start}-${stop}`;
      const group = groups.get(key) ?? { start, end: stop, targets: [] };
      group.targets.push(miss.fragmentIndex);
      groups.set(key, group);
    }
    for (const group of groups.values()) {
      decodes.push({
        sources,
        targets: group.targets,
        offsetBytes: group.start,
        lengthBytes: group.end - group.start,
      });
      for (const s of sources) want(s, group.start, group.end);
    }
  }
  const slices: FragmentSlice[] = [];
  for (const [fragmentIndex, intervals] of [...wanted.entries()].sort((a, b) => a[0] - b[0])) {
    for (const interval of mergeIntervals(intervals)) {
      slices.push({
        fragmentIndex,
        offsetBytes: interval.start,
        lengthBytes: interval.end - interval.start,
      });
    }
  }
  return { storedOffsetBytes, lengthBytes, slices, decodes };
}

/** Finds [offset, offset + length) of a fragment among the fetched or rebuilt pieces (a view). */
function lookup(
  pieces: readonly { fragmentIndex: number; offsetBytes: number; bytes: Buffer }[],
  fragmentIndex: number,
  offsetBytes: number,
  lengthBytes: number,
): Buffer {
  for (const piece of pieces) {
    if (
      piece.fragmentIndex === fragmentIndex &&
      piece.offsetBytes <= offsetBytes &&
      offsetBytes + lengthBytes <= piece.offsetBytes + piece.bytes.length
    ) {
      const at = offsetBytes - piece.offsetBytes;
      return piece.bytes.subarray(at, at + lengthBytes);
    }
  }
  assert(false, `plan does not cover fragment ${fragmentIndex} at ${offsetBytes}+${lengthBytes}`);
}

/**
 * Turns the fetched slices (in plan.slices order, each exactly as long as asked) into
 * S[plan.storedOffsetBytes, + plan.lengthBytes), running the plan's decodes when a data
 * fragment was missing. Returns a view of the fetched bytes when the range lies in one
 * available fragment, a new buffer otherwise.
 */
export async function assemble(
  layout: StripeLayout,
  plan: ReadPlan,
  fetched: readonly Buffer[],
): Promise<Buffer> {
  if (fetched.length !== plan.slices.length) {
    throw proxyError(
      ProxyErrorCode.BadArgument,
      `expected ${plan.slices.length} fetched slices, got ${fetched.length}`,
    );
  }
  const pieces = plan.slices.map((slice, i) => {
    const bytes = fetched[i] as Buffer;
    if (bytes.length !== slice.lengthBytes) {
      throw proxyError(
        ProxyErrorCode.BadArgument,
        `fragment ${slice.fragmentIndex} slice at ${slice.offsetBytes}: got ${bytes.length} bytes, asked ${slice.lengthBytes}`,
      );
    }
    return { fragmentIndex: slice.fragmentIndex, offsetBytes: slice.offsetBytes, bytes };
  });
  for (const step of plan.decodes) {
    const shards: (Buffer | undefined)[] = new Array(layout.k + layout.m).fill(undefined);
    for (const s of step.sources) shards[s] = lookup(pieces, s, step.offsetBytes, step.lengthBytes);
    const rebuilt = await reconstructShards(
      layout.k,
      layout.m,
      layout.fragmentSizeBytes,
      shards,
      step.sources,
      step.targets,
    );
    step.targets.forEach((t, i) => {
      pieces.push({ fragmentIndex: t, offsetBytes: step.offsetBytes, bytes: rebuilt[i] as Buffer });
    });
  }
  const f = layout.fragmentSizeBytes;
  const start = plan.storedOffsetBytes;
  const end = start + plan.lengthBytes;
  const firstFragment = Math.floor(start / f);
  const lastFragment = Math.floor((end - 1) / f);
  if (plan.lengthBytes === 0) return Buffer.alloc(0);
  if (firstFragment === lastFragment) {
    return lookup(pieces, firstFragment, start - firstFragment * f, plan.lengthBytes);
  }
  const out = Buffer.allocUnsafe(plan.lengthBytes);
  for (let i = firstFragment; i <= lastFragment; i++) {
    const from = Math.max(start - i * f, 0);
    const to = Math.min(end - i * f, f);
    lookup(pieces, i, from, to - from).copy(out, i * f + from - start);
  }
  return out;
}

export interface StoredChunkDecode {
  /** S (len storedSizeBytes): a view when it could be, else a new buffer. */
  readonly stored: Buffer;
  /** Fragments given but failing their size or CRC32C: maintenance should rewrite them. */
  readonly badFragments: number[];
}

/** Drops fragments whose size or CRC32C is wrong; returns the good ones and the bad indices. */
export function verifyFragments(
  layout: StripeLayout,
  fragments: readonly (Buffer | undefined)[],
  fragmentCrcs: readonly number[],
): { good: (Buffer | undefined)[]; badFragments: number[] } {
  const total = layout.k + layout.m;
  if (fragments.length !== total || fragmentCrcs.length !== total) {
    throw proxyError(
      ProxyErrorCode.BadArgument,
      `expected k + m = ${total} fragments and CRCs, got ${fragments.length} and ${fragmentCrcs.length}`,
    );
  }
  const badFragments: number[] = [];
  const good = fragments.map((fragment, i) => {
    if (fragment === undefined) return undefined;
    if (fragment.length !== layout.fragmentSizeBytes || crc32c(fragment) !== fragmentCrcs[i]) {
      badFragments.push(i);
      return undefined;
    }
    return fragment;
  });
  return { good, badFragments };
}

/**
 * Rebuilds whole fragments `targets` (data or parity, at most m) from k good ones: what
 * maintenance does to complete or repair a chunk. Each rebuilt fragment is checked against
 * its CRC32C from the manifest before it is returned.
 */
export async function rebuildFragments(
  layout: StripeLayout,
  fragments: readonly (Buffer | undefined)[],
  fragmentCrcs: readonly number[],
  targets: readonly number[],
): Promise<{ rebuilt: Buffer[]; badFragments: number[] }> {
  const { good, badFragments } = verifyFragments(layout, fragments, fragmentCrcs);
  const usable = good.flatMap((fragment, i) =>
    fragment !== undefined && !targets.includes(i) ? [i] : [],
  );
  if (usable.length < layout.k) {
    throw proxyError(
      ProxyErrorCode.NotEnoughFragments,
      `need ${layout.k} good fragments to rebuild, have ${usable.length}`,
    );
  }
  if (targets.length === 0) return { rebuilt: [], badFragments };
  assert(targets.length <= layout.m, 'at most m fragments can be rebuilt at once');
  const rebuilt = await reconstructShards(
    layout.k,
    layout.m,
    layout.fragmentSizeBytes,
    good,
    usable.slice(0, layout.k),
    targets,
  );
  targets.forEach((t, i) => {
    if (crc32c(rebuilt[i] as Buffer) !== fragmentCrcs[t]) {
      throw proxyError(ProxyErrorCode.Corrupt, `rebuilt fragment ${t} does not match its CRC32C`);
    }
  });
  return { rebuilt, badFragments };
}

/**
 * Whole-chunk decode: verifies the data fragments' CRC32C (and the parity's when a data
 * fragment is missing or bad; a bad one counts as missing and is reported), then returns S
 * from the data fragments, rebuilding the missing ones from parity. PROXY_NOT_ENOUGH_FRAGMENTS when fewer than k good fragments remain.
 */
export async function decodeStored(
  layout: StripeLayout,
  fragments: readonly (Buffer | undefined)[],
  fragmentCrcs: readonly number[],
): Promise<StoredChunkDecode> {
  const { k, fragmentSizeBytes: f, storedSizeBytes } = layout;
  // Parity is checked only when it is needed: a healthy read checksums k fragments, not k + m.
  const dataOnly = fragments.map((fragment, i) => (i < k ? fragment : undefined));
  let { good, badFragments } = verifyFragments(layout, dataOnly, fragmentCrcs);
  if (good.slice(0, k).some((fragment) => fragment === undefined)) {
    ({ good, badFragments } = verifyFragments(layout, fragments, fragmentCrcs));
  }
  const missingData = good
    .slice(0, k)
    .flatMap((fragment, i) => (fragment === undefined ? [i] : []));
  let data: Buffer[];
  if (missingData.length === 0) {
    data = good.slice(0, k) as Buffer[];
  } else {
    const usable = good.flatMap((fragment, i) => (fragment !== undefined ? [i] : []));
    if (usable.length < k) {
      throw proxyError(
        ProxyErrorCode.NotEnoughFragments,
        `only ${usable.length} good fragments of ${layout.k + layout.m}, need k = ${k}` +
          (badFragments.length > 0 ? ` (bad: ${badFragments.join(', ')})` : ''),
      );
    }
    const rebuilt = await reconstructShards(k, layout.m, f, good, usable.slice(0, k), missingData);
    data = good
      .slice(0, k)
      .map((fragment, i) => fragment ?? (rebuilt[missingData.indexOf(i)] as Buffer));
  }
  if (storedSizeBytes <= f)
    return { stored: (data[0] as Buffer).subarray(0, storedSizeBytes), badFragments };
  const stored = Buffer.concat(data, k * f).subarray(0, storedSizeBytes);
  return { stored, badFragments };
}
