/**
 * The edge's protocol core alone, as its own process: `MemoryExports` served through
 * `NbdServer` (the handshake, the request checks, out-of-order replies, backpressure and
 * the per-export Prometheus metrics of `shale edge serve`), with no volumedriver behind
 * it. The NBD benchmark runs fio against it beside `nbdkit memory`, so the difference
 * between the two is the cost of the protocol core in Node.
 *
 *   node benchmarks/dist/nbd/edge-memory.js --name NAME --size-bytes N [--port 0]
 *
 * Prints {"event":"listening","service":"edge-memory","port":N} on stdout when ready;
 * SIGTERM or SIGINT closes the server (open connections get 10 s) and exits.
 */
import { parseArgs } from 'node:util';
import { EdgeMetrics, MemoryExports, NbdServer } from '@shale/edge';
import { Registry } from 'prom-client';

const { values: args } = parseArgs({
  options: {
    name: { type: 'string' },
    'size-bytes': { type: 'string' },
    port: { type: 'string', default: '0' },
  },
});
const name = args.name;
const sizeBytes = Number(args['size-bytes']);
const port = Number(args.port);
if (name === undefined || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
  process.stderr.write('usage: edge-memory.js --name NAME --size-bytes N [--port 0]\n');
  process.exit(2);
}

const exports = new MemoryExports();
exports.add(name, sizeBytes);
const server = await NbdServer.start({
  provider: exports,
  metrics: new EdgeMetrics(new Registry()),
  port,
  log: (line) => process.stderr.write(`edge-memory: ${line}\n`),
});
process.stdout.write(
  `${JSON.stringify({ event: 'listening', service: 'edge-memory', port: server.port, export: name, sizeBytes })}\n`,
);

const signal = await new Promise<string>((resolve) => {
  process.once('SIGTERM', () => resolve('SIGTERM'));
  process.once('SIGINT', () => resolve('SIGINT'));
});
process.stderr.write(`edge-memory: ${signal}, stopping\n`);
await server.close();
await exports.close();
