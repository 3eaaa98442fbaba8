// Proves each problem rule fires on what it names and only then: a failed vDisk, stopped writes, failing uploads, data at risk past its bound, a data loss, unhealthy or full ASDs, an unhealthy volumedriver, a full write buffer or one without its reserve, over-commitment; and that only 'degraded' ones degrade; by feeding clusterProblems the API's own records.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clusterProblems, isDegraded } from './problems.js';
import type { Asd, StorageRouter, Vdisk, VdiskStats } from './schemas.js';

const MiB = 1024 * 1024;
const stats = (over: Partial<VdiskStats> = {}): VdiskStats => ({
  readOps: 0,
  writeOps: 0,
  readBytes: 0,
  writeBytes: 0,
  flushOps: 0,
  trimOps: 0,
  writeBufferDirtyBytes: 0,
  uploadBacklogObjects: 0,
  scosUploaded: 0,
  tlogsUploaded: 0,
  bytesUploaded: 0,
  currentScoNumber: 0,
  tlogCount: 1,
  dataAtRiskBytes: 0,
  dataAtRiskAgeMs: 0,
  dataAtRiskBoundMs: 30_000,
  uploadError: '',
  writeLaneError: '',
  ...over,
});
const vdisk = (name: string, over: Partial<Vdisk> = {}): Vdisk => ({
  id: '0'.repeat(32),
  name,
  vpool: 'default',
  sizeBytes: MiB,
  clusterSizeBytes: 4096,
  scoSizeBytes: 64 * MiB,
  namespace: '0'.repeat(32),
  ownerNodeId: 'node1',
  createdAtMs: 1,
  open: true,
  state: 'open',
  snapshots: [],
  stats: stats(),
  ...over,
});
const asd = (id: string, over: Partial<Asd> = {}): Asd => ({
  id,
  backend: 'local',
  nodeId: 'node1',
  address: '127.0.0.1:1',
  state: 'active',
  healthy: true,
  capacityBytes: 1000 * MiB,
  freeBytes: 500 * MiB,
  ...over,
});
const router = (over: Partial<StorageRouter> = {}): StorageRouter => ({
  nodeId: 'node1',
  address: '127.0.0.1:2',
  startedAtMs: 1,
  healthy: true,
  writeBuffer: {
    totalBytes: 1000 * MiB,
    availableBytes: 500 * MiB,
    reserveBytes: 64 * MiB,
    reserveHeld: true,
    low: false,
    refusedWrites: 0,
  },
  ...over,
});

test('a healthy cluster has no problems', () => {
  const problems = clusterProblems({
    vdisks: [vdisk('a'), vdisk('b', { open: false, state: 'elsewhere', stats: undefined })],
    asds: [asd('x'), asd('old', { state: 'decommissioned', healthy: false })],
    storageRouters: [router()],
    overcommitRatio: 0.5,
    nowMs: 100_000,
  });
  assert.deepEqual(problems, []);
  assert.equal(isDegraded(problems), false);
});

test('each rule names its subject, with the right severity', () => {
  const wb = router().writeBuffer;
  assert.ok(wb !== undefined);
  const problems = clusterProblems({
    vdisks: [
      vdisk('failed', {
        open: false,
        state: 'failed',
        stats: undefined,
        openError: { code: 'VD_BACKEND_ERROR', message: 'namespace gone', atMs: 1 },
      }),
      vdisk('stopped', { stats: stats({ writeLaneError: 'ENOSPC' }) }),
      vdisk('stuck', { stats: stats({ uploadError: 'PROXY_NOT_ENOUGH_OSDS' }) }),
      vdisk('late', { stats: stats({ dataAtRiskBytes: MiB, dataAtRiskAgeMs: 31_000 }) }),
      vdisk('in-time', { stats: stats({ dataAtRiskBytes: MiB, dataAtRiskAgeMs: 29_000 }) }),
      vdisk('lost', { dataLoss: { sinceMs: 1, nodeId: 'node0', detectedAtMs: 2 } }),
    ],
    asds: [
      asd('down', { healthy: false, detail: 'unreachable' }),
      asd('full', { freeBytes: 10 * MiB }),
      asd('refusing', { lastNoSpaceAtMs: 90_000 }),
      asd('refused-long-ago', { lastNoSpaceAtMs: 1_000 }),
    ],
    storageRouters: [
      router({ nodeId: 'gone', healthy: false, detail: 'unreachable' }),
      router({ nodeId: 'wb', writeBuffer: { ...wb, low: true, reserveHeld: false } }),
    ],
    overcommitRatio: 3,
    nowMs: 100_000,
  });
  assert.deepEqual(
    problems.map((p) => [p.code, p.severity, p.subject]),
    [
      ['VDISK_OPEN_FAILED', 'degraded', 'vdisk failed'],
      ['VDISK_WRITES_STOPPED', 'degraded', 'vdisk stopped'],
      ['VDISK_UPLOADS_FAILING', 'degraded', 'vdisk stuck'],
      ['VDISK_DATA_AT_RISK_OVERDUE', 'degraded', 'vdisk late'],
      ['VDISK_DATA_LOST', 'warning', 'vdisk lost'],
      ['ASD_UNHEALTHY', 'degraded', 'asd down'],
      ['ASD_FULL', 'degraded', 'asd full'],
      ['ASD_FULL', 'degraded', 'asd refusing'],
      ['STORAGE_ROUTER_UNHEALTHY', 'degraded', 'volumedriver gone'],
      ['WRITE_BUFFER_FULL', 'degraded', 'volumedriver wb'],
      ['WRITE_BUFFER_NO_RESERVE', 'warning', 'volumedriver wb'],
      ['THIN_OVERCOMMITTED', 'warning', 'cluster'],
    ],
  );
  assert.match(problems[0]?.message ?? '', /namespace gone/);
  assert.equal(isDegraded(problems), true);
  const warningsOnly = clusterProblems({
    vdisks: [vdisk('lost', { dataLoss: { sinceMs: 1, nodeId: 'n', detectedAtMs: 2 } })],
    asds: [],
    storageRouters: [],
    overcommitRatio: 2,
    nowMs: 100_000,
  });
  assert.equal(isDegraded(warningsOnly), false);
});
