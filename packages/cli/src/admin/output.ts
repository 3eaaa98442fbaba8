import { formatBytes, ShaleError } from '@shale/common';
import type { Operation } from '@shale/framework-api';

/**
 * Exit codes scripts can trust (documented in the CLI README):
 *   0 done; 1 failed (the cluster refused or broke); 2 usage; 3 no API reachable (no
 *   cluster, wrong URL, bad token); 4 not found; 5 conflict (exists, has clones, busy).
 */
export const EXIT_UNREACHABLE = 3;
export const EXIT_NOT_FOUND = 4;
export const EXIT_CONFLICT = 5;

const UNREACHABLE = new Set([
  'CLI_NO_CLUSTER',
  'API_UNREACHABLE',
  'API_UNAUTHORIZED',
  'API_CLIENT_TIMEOUT',
]);

/** Host-side answers of `shale vdisk map`, `unmap`, `mapped` (no HTTP status to go by). */
const NOT_FOUND = new Set(['MAP_NOT_MAPPED']);
const CONFLICT = new Set([
  'MAP_ALREADY_MAPPED',
  'MAP_DEVICE_MOUNTED',
  'MAP_DEVICE_BUSY',
  'MAP_BUSY',
]);

export function exitCodeOf(err: ShaleError): number {
  if (UNREACHABLE.has(err.code)) return EXIT_UNREACHABLE;
  const status = Number(err.details.httpStatus);
  if (status === 404 || err.code.endsWith('_NOT_FOUND') || NOT_FOUND.has(err.code))
    return EXIT_NOT_FOUND;
  if (status === 409 || CONFLICT.has(err.code)) return EXIT_CONFLICT;
  return 1;
}

/** Runs a verb: a ShaleError is printed as `shale: CODE: message` and becomes its exit code. */
export async function runVerb(work: () => Promise<number>): Promise<number> {
  try {
    return await work();
  } catch (err) {
    if (!(err instanceof ShaleError) || err.code === 'CLI_USAGE') throw err;
    process.stderr.write(`shale: ${err.code}: ${err.message}\n`);
    return exitCodeOf(err);
  }
}

/** Warnings of an answer that succeeded (thin over-commitment, ...): on stderr, one a line. */
export function printWarnings(warnings: readonly { code: string; message: string }[] = []): void {
  for (const warning of warnings)
    process.stderr.write(`shale: warning: ${warning.code}: ${warning.message}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A table with a header row; columns padded to their widest cell. */
export function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ');
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
}

/** Key: value lines. */
export function printFields(fields: readonly (readonly [string, string])[]): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  process.stdout.write(
    `${fields.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`).join('\n')}\n`,
  );
}

export const size = (bytes: number): string => formatBytes(bytes);
export const time = (ms: number): string => new Date(ms).toISOString().replace('.000Z', 'Z');

/**
 * Shows a long operation's progress on stderr while it runs (a spinner with the elapsed
 * time when stderr is a terminal, nothing otherwise), and clears it at the end.
 */
export function operationProgress(what: string): {
  onProgress: (operation: Operation) => void;
  done: () => void;
} {
  const tty = process.stderr.isTTY === true;
  const frames = ['|', '/', '-', '\\'];
  const started = Date.now();
  let frame = 0;
  return {
    onProgress: (operation) => {
      if (!tty || operation.state !== 'running') return;
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      process.stderr.write(`\r${frames[frame++ % frames.length]} ${what}: running ${seconds} s `);
    },
    done: () => {
      if (tty) process.stderr.write('\r\x1b[K');
    },
  };
}
