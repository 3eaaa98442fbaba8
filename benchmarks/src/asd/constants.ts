/** Every size, depth and duration of the ASD benchmark, with its unit. */

export const MIB = 1024 * 1024;
export const KIB = 1024;

/** The two object sizes of the throughput cases: a file value and the largest inline value. */
export const LARGE_OBJECT_BYTES = 1 * MIB;
export const SMALL_OBJECT_BYTES = 64 * KIB;

/**
 * Calls in flight for put and get throughput, for Shale (concurrent client calls) and
 * fio (numjobs). 16 is enough to fill the group commit (several puts per index fsync)
 * without turning a 2-core machine into a scheduler benchmark.
 */
export const THROUGHPUT_QUEUE_DEPTH = 16;

/** Ranged gets: a 4 KiB slice at a random 4 KiB-aligned offset, at these depths. */
export const RANGED_SLICE_BYTES = 4 * KIB;
export const RANGED_QUEUE_DEPTHS = [1, 32] as const;

/** The read set: 256 objects of 1 MiB (256 MiB), written before the read cases. */
export const READ_SET_OBJECT_COUNT = 256;

/** Measured time per case, and the unmeasured warm-up before a Shale read case. */
export const CASE_DURATION_MS = 8_000;
export const QUICK_CASE_DURATION_MS = 2_000;
export const WARMUP_MS = 1_000;
export const QUICK_WARMUP_MS = 300;

/** A put case also stops after this many bytes, so a fast disk cannot fill the file system. */
export const MAX_PUT_BYTES_PER_CASE = 4 * 1024 * MIB;

/** Latency samples kept per case; a case stops early when they run out (bounded memory). */
export const MAX_LATENCY_SAMPLES = 4_000_000;

/** Random bytes the put values are cut from: incompressible, so LevelDB's Snappy cannot flatter. */
export const VALUE_POOL_BYTES = 32 * MIB;

/** How long the ASD child may take to print its listening line, and to stop on SIGTERM. */
export const ASD_START_TIMEOUT_MS = 30_000;
export const ASD_STOP_TIMEOUT_MS = 30_000;

/** Parent of the scratch directory: /var/tmp is on the disk (not tmpfs) on the hosts we use. */
export const DEFAULT_SCRATCH_PARENT = '/var/tmp';
