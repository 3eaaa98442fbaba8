/** The edge's test helpers (`@shale/edge/testing`), for other packages' tests; never loaded by the product entry. */
export * from './raw-nbd-client.js';
