/**
 * Deterministic random sources for seeded tests, so that a failing run replays exactly from
 * its seed. Not for cryptography. Each returns numbers in [0, 1), like Math.random, so it fits
 * wherever the product takes a `RandomSource` (`@shale/alba-proxy`).
 */
export type Random = () => number;

/**
 * mulberry32: small, fast, and the same sequence for the same seed everywhere. Every seeded
 * test uses it (SHALE_SEED / VD_TEST_SEED replays and recorded seeds depend on this exact
 * sequence), except the one that documents xorshift32 below.
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * xorshift32 (13, 17, 5): kept as a named variant because volumedriver's volume-service test
 * prints `VOLUME_SERVICE_SEED=<n>` replays made with it. Seed 0 is taken as 1 (xorshift32 is
 * stuck at 0 otherwise).
 */
export function xorshift32Random(seed: number): Random {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}
