import { parseSizeBytes } from '@shale/common';
import type { ApiClient, Operation, Snapshot, Vdisk } from '@shale/framework-api';
import { type Command, EXIT_OK, type OptionValues, UsageError } from '../command.js';
import { API_OPTIONS, apiClient } from './api-target.js';
import {
  operationProgress,
  printFields,
  printJson,
  printTable,
  printWarnings,
  runVerb,
  size,
  time,
} from './output.js';
import { vdiskMapVerbs } from './vdisk-map-verbs.js';

const asJson = (values: Readonly<OptionValues>): boolean => values.json === true;

function positional(
  positionals: readonly string[],
  index: number,
  what: string,
  usage: string,
): string {
  const value = positionals[index];
  if (value === undefined || value.length === 0)
    throw new UsageError(`${what} is required: ${usage}`);
  return value;
}

function noMore(positionals: readonly string[], count: number, usage: string): void {
  if (positionals.length > count) {
    throw new UsageError(`unexpected argument "${positionals[count]}": ${usage}`);
  }
}

function sizeOption(values: Readonly<OptionValues>, name: string): number {
  const text = values[name];
  if (typeof text !== 'string') throw new UsageError(`--${name} SIZE is required (e.g. 10GiB)`);
  try {
    return parseSizeBytes(text);
  } catch (err) {
    throw new UsageError(`--${name}: ${(err as Error).message}`);
  }
}

/** Splits VDISK@SNAPSHOT. */
function splitAt(spec: string, usage: string): [string, string] {
  const at = spec.indexOf('@');
  if (at <= 0 || at === spec.length - 1)
    throw new UsageError(`expected VDISK@SNAPSHOT, not "${spec}": ${usage}`);
  return [spec.slice(0, at), spec.slice(at + 1)];
}

/** VDISK SNAPSHOT, or VDISK@SNAPSHOT, and nothing more. */
function vdiskAndSnapshot(positionals: readonly string[], usage: string): [string, string] {
  const pair: [string, string] =
    positionals.length === 1
      ? splitAt(positional(positionals, 0, 'VDISK@SNAPSHOT', usage), usage)
      : [positional(positionals, 0, 'VDISK', usage), positional(positionals, 1, 'SNAPSHOT', usage)];
  noMore(positionals, 2, usage);
  return pair;
}

/**
 * A long operation from start to report: waits for it (spinner on a terminal) unless
 * --no-wait, then prints it as JSON, or the `running` / `done` line.
 */
async function longOperation(
  values: Readonly<OptionValues>,
  client: ApiClient,
  started: Operation,
  lines: { readonly what: string; readonly running: string; readonly done: string },
): Promise<number> {
  const operation =
    values['no-wait'] === true ? started : await finish(client, started, lines.what);
  if (asJson(values)) printJson(operation);
  else if (operation.state === 'running')
    process.stdout.write(`${lines.running}: operation ${operation.id}\n`);
  else process.stdout.write(`${lines.done}\n`);
  return EXIT_OK;
}

/** Waits for a long operation, with a spinner on a terminal. */
async function finish(client: ApiClient, operation: Operation, what: string): Promise<Operation> {
  const progress = operationProgress(what);
  try {
    return await client.waitForOperation(operation.id, { onProgress: progress.onProgress });
  } finally {
    progress.done();
  }
}

function vdiskRows(vdisks: readonly Vdisk[]): string[][] {
  return vdisks.map((v) => [
    v.name,
    size(v.sizeBytes),
    v.vpool,
    v.ownerNodeId,
    String(v.snapshots.length),
    v.parent === undefined ? '-' : `${v.parent.vdisk}@${v.parent.snapshot}`,
    v.state === 'failed' ? 'FAILED' : v.state,
    v.stats === undefined ? '-' : atRisk(v.stats.dataAtRiskBytes, v.stats.dataAtRiskAgeMs),
  ]);
}

/** "12.0 MiB, 4.2 s" or "-": acknowledged writes not in the backend yet, and the oldest's age. */
function atRisk(bytes: number, ageMs: number): string {
  return bytes === 0 && ageMs === 0 ? '-' : `${size(bytes)}, ${(ageMs / 1000).toFixed(1)} s`;
}

const VDISK_HEADER = ['NAME', 'SIZE', 'VPOOL', 'OWNER', 'SNAPSHOTS', 'PARENT', 'STATE', 'AT RISK'];

function printVdisk(vdisk: Vdisk): void {
  const fields: [string, string][] = [
    ['name', vdisk.name],
    ['id', vdisk.id],
    ['size', `${size(vdisk.sizeBytes)} (${vdisk.sizeBytes} B)`],
    ['vpool', vdisk.vpool],
    ['owner', vdisk.ownerNodeId],
    ['state', vdisk.state],
    ...(vdisk.openError === undefined
      ? []
      : [
          ['cannot open', `${vdisk.openError.code}: ${vdisk.openError.message}`] as [
            string,
            string,
          ],
        ]),
    ...(vdisk.dataLoss === undefined
      ? []
      : [
          [
            'DATA LOST',
            `writes made on ${vdisk.dataLoss.nodeId} since ${time(vdisk.dataLoss.sinceMs)} (restore at ${time(vdisk.dataLoss.detectedAtMs)})`,
          ] as [string, string],
        ]),
    ['parent', vdisk.parent === undefined ? '-' : `${vdisk.parent.vdisk}@${vdisk.parent.snapshot}`],
    ['cluster size', size(vdisk.clusterSizeBytes)],
    ['SCO size', size(vdisk.scoSizeBytes)],
    ['created', time(vdisk.createdAtMs)],
    ['snapshots', vdisk.snapshots.map((s) => s.name).join(', ') || '-'],
  ];
  const stats = vdisk.stats;
  if (stats !== undefined) {
    fields.push(
      ['reads', `${stats.readOps} (${size(stats.readBytes)})`],
      ['writes', `${stats.writeOps} (${size(stats.writeBytes)})`],
      ['write buffer', `${size(stats.writeBufferDirtyBytes)} not in the backend yet`],
      ['upload backlog', `${stats.uploadBacklogObjects} objects`],
      [
        'data at risk',
        `${atRisk(stats.dataAtRiskBytes, stats.dataAtRiskAgeMs)} (bound ${(stats.dataAtRiskBoundMs / 1000).toFixed(0)} s)`,
      ],
      ...(stats.uploadError === ''
        ? []
        : [['upload error', stats.uploadError] as [string, string]]),
      ...(stats.writeLaneError === ''
        ? []
        : [['WRITES STOPPED', stats.writeLaneError] as [string, string]]),
      [
        'uploaded',
        `${stats.scosUploaded} SCOs, ${stats.tlogsUploaded} TLogs, ${size(stats.bytesUploaded)}`,
      ],
    );
  }
  printFields(fields);
}

function printSnapshots(snapshots: readonly Snapshot[]): void {
  printTable(
    ['NAME', 'ID', 'CREATED', 'IN BACKEND', 'CLONES'],
    snapshots.map((s) => [
      s.name,
      String(s.id),
      time(s.createdAtMs),
      s.inBackend ? 'yes' : 'no',
      s.clones.join(',') || '-',
    ]),
  );
}

const create: Command = {
  name: 'create',
  summary: 'create a thin vDisk',
  usage: 'shale vdisk create NAME --size SIZE [--vpool VPOOL] [--json]',
  options: {
    size: { type: 'string', valueName: 'SIZE', description: 'its size (4096, 64MiB, 10GiB, ...)' },
    vpool: { type: 'string', valueName: 'VPOOL', description: 'its vPool (default: the only one)' },
    ...API_OPTIONS,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = create.usage as string;
      const name = positional(positionals, 0, 'NAME', usage);
      noMore(positionals, 1, usage);
      const sizeBytes = sizeOption(values, 'size');
      const client = await apiClient(values);
      const vdisk = await client.createVdisk({
        name,
        sizeBytes,
        ...(typeof values.vpool === 'string' ? { vpool: values.vpool } : {}),
      });
      printWarnings(vdisk.warnings);
      if (asJson(values)) printJson(vdisk);
      else
        process.stdout.write(
          `created vDisk ${vdisk.name} (${size(vdisk.sizeBytes)}, vPool ${vdisk.vpool})\n`,
        );
      return EXIT_OK;
    }),
};

const list: Command = {
  name: 'list',
  summary: 'list every vDisk',
  usage: 'shale vdisk list [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      noMore(positionals, 0, list.usage as string);
      const vdisks = await (await apiClient(values)).listVdisks();
      if (asJson(values)) printJson(vdisks);
      else printTable(VDISK_HEADER, vdiskRows(vdisks));
      return EXIT_OK;
    }),
};

const show: Command = {
  name: 'show',
  summary: 'show one vDisk (with its statistics when it is open)',
  usage: 'shale vdisk show NAME [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = show.usage as string;
      const name = positional(positionals, 0, 'NAME', usage);
      noMore(positionals, 1, usage);
      const vdisk = await (await apiClient(values)).getVdisk(name);
      if (asJson(values)) printJson(vdisk);
      else printVdisk(vdisk);
      return EXIT_OK;
    }),
};

const resize: Command = {
  name: 'resize',
  summary: 'grow a vDisk (shrinking needs --force and discards the tail)',
  usage: 'shale vdisk resize NAME --size SIZE [--force] [--json]',
  options: {
    size: { type: 'string', valueName: 'SIZE', description: 'the new size' },
    force: { type: 'boolean', description: 'allow shrinking: the data past the new end is lost' },
    ...API_OPTIONS,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = resize.usage as string;
      const name = positional(positionals, 0, 'NAME', usage);
      noMore(positionals, 1, usage);
      const sizeBytes = sizeOption(values, 'size');
      const vdisk = await (await apiClient(values)).resizeVdisk(name, {
        sizeBytes,
        ...(values.force === true ? { force: true } : {}),
      });
      printWarnings(vdisk.warnings);
      if (asJson(values)) printJson(vdisk);
      else process.stdout.write(`vDisk ${vdisk.name} is now ${size(vdisk.sizeBytes)}\n`);
      return EXIT_OK;
    }),
};

const remove: Command = {
  name: 'delete',
  summary: 'delete a vDisk and its data in the backend (refused while clones depend on it)',
  usage: 'shale vdisk delete NAME [--no-wait] [--json]',
  options: {
    'no-wait': { type: 'boolean', description: 'print the operation and return at once' },
    ...API_OPTIONS,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = remove.usage as string;
      const name = positional(positionals, 0, 'NAME', usage);
      noMore(positionals, 1, usage);
      const client = await apiClient(values);
      return longOperation(values, client, await client.deleteVdisk(name), {
        what: `deleting ${name}`,
        running: `deleting vDisk ${name}`,
        done: `deleted vDisk ${name}`,
      });
    }),
};

export const vdiskCommand: Command = {
  name: 'vdisk',
  summary:
    'vDisks: create, list, show, resize, delete (through the framework API); map, unmap, mapped (on this host)',
  subcommands: [create, list, show, resize, remove, ...vdiskMapVerbs],
};

const snapshotCreate: Command = {
  name: 'create',
  summary: 'snapshot a vDisk',
  usage: 'shale snapshot create VDISK SNAPSHOT [--json]   (or VDISK@SNAPSHOT)',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = snapshotCreate.usage as string;
      const [vdisk, snapshot] = vdiskAndSnapshot(positionals, usage);
      const created = await (await apiClient(values)).createSnapshot(vdisk, snapshot);
      if (asJson(values)) printJson(created);
      else process.stdout.write(`created snapshot ${vdisk}@${created.name}\n`);
      return EXIT_OK;
    }),
};

const snapshotList: Command = {
  name: 'list',
  summary: "list a vDisk's snapshots",
  usage: 'shale snapshot list VDISK [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = snapshotList.usage as string;
      const vdisk = positional(positionals, 0, 'VDISK', usage);
      noMore(positionals, 1, usage);
      const snapshots = await (await apiClient(values)).listSnapshots(vdisk);
      if (asJson(values)) printJson(snapshots);
      else printSnapshots(snapshots);
      return EXIT_OK;
    }),
};

const snapshotDelete: Command = {
  name: 'delete',
  summary: 'delete a snapshot (refused while clones read from it)',
  usage: 'shale snapshot delete VDISK SNAPSHOT   (or VDISK@SNAPSHOT)',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = snapshotDelete.usage as string;
      const [vdisk, snapshot] = vdiskAndSnapshot(positionals, usage);
      await (await apiClient(values)).deleteSnapshot(vdisk, snapshot);
      if (asJson(values)) printJson({ deleted: `${vdisk}@${snapshot}` });
      else process.stdout.write(`deleted snapshot ${vdisk}@${snapshot}\n`);
      return EXIT_OK;
    }),
};

export const snapshotCommand: Command = {
  name: 'snapshot',
  summary: 'snapshots of a vDisk: create, list, delete',
  subcommands: [snapshotCreate, snapshotList, snapshotDelete],
};

export const cloneCommand: Command = {
  name: 'clone',
  summary: 'make a new vDisk that reads a snapshot and writes into its own namespace',
  usage: 'shale clone VDISK@SNAPSHOT NAME [--no-wait] [--json]',
  options: {
    'no-wait': { type: 'boolean', description: 'print the operation and return at once' },
    ...API_OPTIONS,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = cloneCommand.usage as string;
      const [vdisk, snapshot] = splitAt(positional(positionals, 0, 'VDISK@SNAPSHOT', usage), usage);
      const name = positional(positionals, 1, 'NAME', usage);
      noMore(positionals, 2, usage);
      const client = await apiClient(values);
      return longOperation(values, client, await client.cloneVdisk(vdisk, { name, snapshot }), {
        what: `cloning ${vdisk}@${snapshot}`,
        running: `cloning ${vdisk}@${snapshot} to ${name}`,
        done: `cloned ${vdisk}@${snapshot} to vDisk ${name}`,
      });
    }),
};

export const rollbackCommand: Command = {
  name: 'rollback',
  summary:
    'roll a vDisk back to a snapshot (later snapshots are dropped; refused if clones use them)',
  usage: 'shale rollback VDISK SNAPSHOT [--no-wait] [--json]   (or VDISK@SNAPSHOT)',
  options: {
    'no-wait': { type: 'boolean', description: 'print the operation and return at once' },
    ...API_OPTIONS,
  },
  run: (values, positionals) =>
    runVerb(async () => {
      const usage = rollbackCommand.usage as string;
      const [vdisk, snapshot] = vdiskAndSnapshot(positionals, usage);
      const client = await apiClient(values);
      return longOperation(values, client, await client.rollbackVdisk(vdisk, snapshot), {
        what: `rolling ${vdisk} back`,
        running: `rolling ${vdisk} back to ${snapshot}`,
        done: `rolled vDisk ${vdisk} back to ${snapshot}`,
      });
    }),
};

/** Provisioned against free: the over-commit ratio, or why there is none. */
function thinLine(
  provisionedBytes: number,
  backend: { asdsReachable: number; freeBytes: number },
  ratio: number | undefined,
): string {
  const head = `${size(provisionedBytes)} provisioned, ${size(backend.freeBytes)} free`;
  if (backend.asdsReachable === 0) return `${head}: over-commitment unknown (no ASD answered)`;
  if (ratio === undefined) return `${head}: nothing free`;
  return `${head}: ${ratio.toFixed(2)} x${ratio > 1 ? ' (OVER-COMMITTED: writes fail once the backend is full)' : ''}`;
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'health of every component, capacity and upload backlog (exit 1 when degraded)',
  usage: 'shale status [--json]',
  options: { ...API_OPTIONS },
  run: (values, positionals) =>
    runVerb(async () => {
      noMore(positionals, 0, statusCommand.usage as string);
      const client = await apiClient(values);
      const [health, routers, asds, stats] = await Promise.all([
        client.health(),
        client.listStorageRouters(),
        client.listAsds(),
        client.stats(),
      ]);
      const healthy =
        health.status === 'ok' &&
        routers.every((r) => r.healthy) &&
        asds.every((a) => a.healthy || a.state !== 'active') &&
        !stats.problems.some((p) => p.severity === 'degraded');
      if (asJson(values)) {
        printJson({ healthy, health, storageRouters: routers, asds, stats });
        return healthy ? EXIT_OK : 1;
      }
      process.stdout.write(`cluster: ${healthy ? 'healthy' : 'DEGRADED'}\n\n`);
      printTable(
        ['COMPONENT', 'OK', 'DETAIL'],
        [
          ...health.components.map((c) => [c.name, c.ok ? 'yes' : 'NO', c.detail]),
          ...routers.map((r) => [
            `volumedriver ${r.nodeId}`,
            r.healthy ? 'yes' : 'NO',
            `${r.address}, ${r.vdisksOpen ?? 0} vDisks open${r.detail === undefined ? '' : `, ${r.detail}`}`,
          ]),
          ...asds.map((a) => [
            `asd ${a.id.slice(0, 8)}`,
            a.healthy ? 'yes' : a.state === 'active' ? 'NO' : a.state,
            `${a.address}${a.freeBytes === undefined ? '' : `, ${size(a.freeBytes)} free`}${a.detail === undefined ? '' : `, ${a.detail}`}`,
          ]),
        ],
      );
      const { totals, backend } = stats;
      process.stdout.write('\n');
      printFields([
        [
          'vDisks',
          `${totals.vdiskCount} (${totals.vdisksOpen} open), ${size(totals.provisionedBytes)} provisioned`,
        ],
        [
          'capacity',
          `${size(backend.usedBytes)} used of ${size(backend.capacityBytes)} (${size(backend.freeBytes)} free) on ${backend.asdsReachable}/${backend.asdCount} ASDs, ${backend.filesystemCount} file systems`,
        ],
        ['thin provisioning', thinLine(totals.provisionedBytes, backend, totals.overcommitRatio)],
        [
          'upload backlog',
          `${totals.uploadBacklogObjects} objects, ${size(totals.writeBufferDirtyBytes)} in write buffers`,
        ],
        [
          'data at risk',
          `${size(totals.dataAtRiskBytes)} not in the backend yet${totals.dataAtRiskBytes === 0 ? '' : `, oldest ${(totals.dataAtRiskMaxAgeMs / 1000).toFixed(1)} s`}`,
        ],
      ]);
      if (stats.problems.length > 0) {
        process.stdout.write('\n');
        printTable(
          ['PROBLEM', 'SEVERITY', 'SUBJECT', 'DETAIL'],
          stats.problems.map((p) => [p.code, p.severity, p.subject, p.message]),
        );
      }
      return healthy ? EXIT_OK : 1;
    }),
};
