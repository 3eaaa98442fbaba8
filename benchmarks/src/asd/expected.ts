/**
 * The numbers we expect, written before measuring (STYLE rule 21). Inputs, measured once
 * with a 10-second fio probe on the 2-vCPU VM this was written on (ext4 on virtio):
 *   - 1 MiB write + fsync, one at a time: ~200 MiB/s (~5 ms each); 64 KiB: ~300 MiB/s.
 *   - a loopback gRPC unary call in Node costs ~100-150 us of CPU, client and server together.
 *   - a 4 KiB read from the page cache costs fio ~2-4 us; memcpy runs at several GB/s.
 * The `why` line is the back-of-envelope; the run prints it before each case.
 */

export type Metric = 'throughputMiBps' | 'opsPerSec';

export interface Expectation {
  readonly metric: Metric;
  readonly shale: number;
  readonly fio: number;
  readonly why: string;
}

export const EXPECTED: Readonly<Record<string, Expectation>> = {
  'put-1MiB': {
    metric: 'throughputMiBps',
    shale: 250,
    fio: 350,
    why:
      'fio: 16 writers of one fsynced 1 MiB file each ~ 350 MiB/s (disk-bound). Shale: the same ' +
      'file writes, plus ~4 copies and 2 CRCs of each MiB through gRPC on 2 cores (~1.5 ms CPU/MiB) ' +
      'and a shared dir + LevelDB fsync per group: ~250 MiB/s, ratio ~0.7',
  },
  'put-64KiB': {
    metric: 'throughputMiBps',
    shale: 150,
    fio: 400,
    why:
      'fio: 16 appenders with fdatasync per 64 KiB, journal commits shared: ~400 MiB/s. Shale: ' +
      'inline in LevelDB (WAL append, one fsync per group of puts) but ~150 us CPU per call and ' +
      'LevelDB compaction rewriting the values: ~150 MiB/s (~2400 puts/s), ratio ~0.4',
  },
  'get-1MiB': {
    metric: 'throughputMiBps',
    shale: 800,
    fio: 6000,
    why:
      'both from the page cache. fio: memcpy on 2 cores ~6 GiB/s. Shale: read + CRC + protobuf ' +
      'and HTTP/2 copies on both sides, ~1.2 ms CPU per MiB over 2 cores: ~800 MiB/s, ratio ~0.13',
  },
  'get-64KiB': {
    metric: 'throughputMiBps',
    shale: 300,
    fio: 4000,
    why:
      'fio: cached 64 KiB preads ~4 GiB/s. Shale: per-call gRPC cost dominates, ~5000 calls/s ' +
      'x 64 KiB: ~300 MiB/s, ratio ~0.08',
  },
  'ranged-4KiB-qd1': {
    metric: 'opsPerSec',
    shale: 5500,
    fio: 300_000,
    why:
      'fio: one cached 4 KiB pread ~3 us: ~300k IOPS. Shale: a loopback gRPC round trip ~150 us ' +
      'plus open + 64 KiB block read + CRC + close ~30 us: ~5500 IOPS, p50 ~180 us, ratio ~0.02',
  },
  'ranged-4KiB-qd32': {
    metric: 'opsPerSec',
    shale: 10_000,
    fio: 1_000_000,
    why:
      'fio: 32 threads of cached preads on 2 cores ~1M IOPS. Shale: CPU-bound at ~100 us CPU per ' +
      'call over 2 cores shared by client and ASD: ~10k IOPS, p50 ~3 ms (32 / 10k), ratio ~0.01',
  },
};

export function expectationOf(caseName: string): Expectation {
  const expectation = EXPECTED[caseName];
  if (expectation === undefined) throw new Error(`no expectation written for case ${caseName}`);
  return expectation;
}
