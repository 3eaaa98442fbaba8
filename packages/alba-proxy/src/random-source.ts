/**
 * Where placement and maintenance draw their random numbers, in [0, 1) like Math.random
 * (which production passes). Taken as a parameter so that tests and simulations replay
 * exactly from a seed (they pass `seededRandom` of `@shale/testing`).
 */
export type RandomSource = () => number;
