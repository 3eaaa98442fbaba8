/**
 * Every request and answer of the API as a schema: the server validates with these, the
 * OpenAPI document is generated from these, and the TypeScript types below are inferred
 * from these. Sizes are integer bytes (`...Bytes`), times are ms since the Unix epoch
 * (`...AtMs`), counts are plain integers.
 */
import {
  CLUSTER_SIZE_MAX_BYTES,
  CLUSTER_SIZE_MIN_BYTES,
  SCO_SIZE_MAX_BYTES,
  SCO_SIZE_MIN_BYTES,
  VDISK_STATES,
} from '@shale/volumedriver';
import {
  API_NAME_PATTERN,
  API_OPERATION_ID_PATTERN,
  API_REGISTRY_ID_PATTERN,
  API_TEXT_MAX_CHARS,
} from './constants.js';
import { type Infer, type Schema, s } from './json-schema.js';

const MAX_INT = Number.MAX_SAFE_INTEGER;

const name = s.string({
  pattern: API_NAME_PATTERN,
  description: '1..64 of [A-Za-z0-9._-], starting with a letter or digit',
});
const registryId = s.string({
  pattern: API_REGISTRY_ID_PATTERN,
  description: '1..128 of [A-Za-z0-9._-], starting with a letter or digit',
});
/** A string some other component wrote (a node id, an address): not empty, not constrained. */
const label = s.string({ minLength: 1, maxLength: 1024 });
const hexId = s.string({ pattern: '^[0-9a-f]{32}$', description: '32 lowercase hex' });
const text = s.string({ maxLength: API_TEXT_MAX_CHARS });
const bytes = (description?: string) =>
  s.integer({
    minimum: 0,
    maximum: MAX_INT,
    ...(description === undefined ? {} : { description }),
  });
const count = (description?: string) =>
  s.integer({
    minimum: 0,
    maximum: MAX_INT,
    ...(description === undefined ? {} : { description }),
  });
const timeMs = s.integer({ minimum: 0, maximum: MAX_INT, description: 'ms since the Unix epoch' });

// ------------------------------------------------------------------ errors, health

export const ErrorSchema = s.object(
  {
    code: s.string({
      pattern: '^[A-Z][A-Z0-9_]*$',
      description: 'stable: API_* from the API, VD_*/KV_*/PROXY_*/ISCSI_* passed through',
    }),
    message: text,
  },
  {},
  { description: 'Every error answer' },
);

export const WarningSchema = s.object(
  {
    code: s.string({
      pattern: '^API_[A-Z0-9_]+$',
      description: 'stable: API_THIN_OVERCOMMITTED, API_CAPACITY_UNKNOWN',
    }),
    message: text,
  },
  {},
  { description: 'Something to know about an answer that succeeded' },
);

export const HealthSchema = s.object({
  status: s.string({ enum: ['ok', 'degraded'] }),
  components: s.array(s.object({ name: label, ok: s.boolean(), detail: text }), {
    description: 'the metadata store, then each configured volumedriver',
  }),
});

/** The OpenAPI document itself: checked loosely (it is generated, not hand-written). */
export const OpenApiDocumentSchema = s.object(
  {
    openapi: s.string({ pattern: '^3\\.1\\.' }),
    info: s.object({ title: s.string(), version: s.string() }, {}, { open: true }),
    paths: s.object({}, {}, { open: true }),
    components: s.object({}, {}, { open: true }),
  },
  {},
  { open: true },
);

export const MetricsTextSchema = s.string({ description: 'Prometheus text exposition format' });

// ------------------------------------------------------------------ vPools

export const VpoolSchema = s.object({
  id: hexId,
  name,
  backend: label,
  preset: s.string({ maxLength: 128, description: "empty: the backend's default preset" }),
  clusterSizeBytes: bytes(),
  scoSizeBytes: bytes(),
  writeBufferBytes: bytes('SCO bytes not yet in the backend before writes slow down'),
  createdAtMs: timeMs,
});

export const VpoolListSchema = s.object({ vpools: s.array(VpoolSchema) });

export const CreateVpoolBodySchema = s.object(
  { name, backend: registryId },
  {
    preset: registryId,
    clusterSizeBytes: s.integer({
      minimum: CLUSTER_SIZE_MIN_BYTES,
      maximum: CLUSTER_SIZE_MAX_BYTES,
      description: 'a power of two (default 4096)',
    }),
    scoSizeBytes: s.integer({
      minimum: SCO_SIZE_MIN_BYTES,
      maximum: SCO_SIZE_MAX_BYTES,
      description: 'a multiple of the cluster size (default 64 MiB)',
    }),
    writeBufferBytes: s.integer({
      minimum: 1,
      maximum: MAX_INT,
      description: 'at least two SCOs (default the larger of 1 GiB and two SCOs)',
    }),
  },
);

// ------------------------------------------------------------------ vDisks, snapshots

export const SnapshotSchema = s.object({
  id: count('per vDisk, increasing, never reused'),
  name,
  createdAtMs: timeMs,
  inBackend: s.boolean({ description: 'everything up to the snapshot is in the backend' }),
  clones: s.array(name, { description: 'vDisks cloned from this snapshot' }),
});

export const SnapshotListSchema = s.object({ snapshots: s.array(SnapshotSchema) });

export const VdiskStatsSchema = s.object({
  readOps: count(),
  writeOps: count(),
  readBytes: bytes(),
  writeBytes: bytes(),
  flushOps: count(),
  trimOps: count(),
  writeBufferDirtyBytes: bytes('SCO bytes in the write buffer not in the backend yet'),
  uploadBacklogObjects: count('SCOs and TLogs waiting for (or in) upload'),
  scosUploaded: count(),
  tlogsUploaded: count(),
  bytesUploaded: bytes(),
  currentScoNumber: count(),
  tlogCount: count(),
  dataAtRiskBytes: bytes(
    'acknowledged write bytes whose TLog is not in the backend yet: lost if the write buffer is',
  ),
  dataAtRiskAgeMs: count('age of the oldest such write in ms; 0: nothing at risk'),
  dataAtRiskBoundMs: count(
    'the bound the volumedriver keeps on that age while the backend keeps up',
  ),
  uploadError: text,
  writeLaneError: text,
});

export const VdiskOpenErrorSchema = s.object({ code: label, message: text, atMs: timeMs });

export const VdiskDataLossSchema = s.object(
  { sinceMs: timeMs, nodeId: label, detectedAtMs: timeMs },
  {},
  {
    description:
      'a restore from the backend found that writes held only in a lost write buffer (since sinceMs, on nodeId) are gone',
  },
);

export const VdiskParentSchema = s.object({
  vdiskId: hexId,
  vdisk: name,
  snapshotId: count(),
  snapshot: name,
});

export const VdiskSchema = s.object(
  {
    id: hexId,
    name,
    vpool: name,
    sizeBytes: bytes(),
    clusterSizeBytes: bytes(),
    scoSizeBytes: bytes(),
    namespace: hexId,
    ownerNodeId: label,
    createdAtMs: timeMs,
    open: s.boolean({
      description:
        'its owner answered and has it open; when false, snapshots and stats are unknown (empty, absent)',
    }),
    state: s.string({
      enum: VDISK_STATES,
      description:
        'as its owner knows it: open; failed (could not be opened: see openError; retried); closed; elsewhere (its owner did not answer); creating, deleting',
    }),
    snapshots: s.array(SnapshotSchema),
  },
  {
    parent: VdiskParentSchema,
    stats: VdiskStatsSchema,
    openError: VdiskOpenErrorSchema,
    dataLoss: VdiskDataLossSchema,
  },
);

export const VdiskListSchema = s.object({ vdisks: s.array(VdiskSchema) });

/** The answer to a create or a resize: the vDisk, and what to know about thin provisioning. */
export const VdiskChangeSchema = s.extend(
  VdiskSchema,
  {
    warnings: s.array(WarningSchema, {
      description:
        'API_THIN_OVERCOMMITTED: the vDisks now provision more than the backend has free; API_CAPACITY_UNKNOWN: that could not be checked. Absent: nothing to say',
    }),
  },
  { description: 'A vDisk just created or resized' },
);

export const CreateVdiskBodySchema = s.object(
  {
    name,
    sizeBytes: s.integer({
      minimum: 1,
      maximum: MAX_INT,
      description: "a multiple of the vPool's cluster size",
    }),
  },
  { vpool: name },
);

export const ResizeVdiskBodySchema = s.object(
  { sizeBytes: s.integer({ minimum: 1, maximum: MAX_INT }) },
  { force: s.boolean({ description: 'allow shrinking (the tail is discarded)' }) },
);

export const CreateSnapshotBodySchema = s.object({ name });
export const CloneBodySchema = s.object({ name, snapshot: name });
export const RollbackBodySchema = s.object({ snapshot: name });
export const SyncBodySchema = s.object({});
export const ScrubBodySchema = s.object(
  {},
  {
    liveFractionThreshold: s.number({
      exclusiveMinimum: 0,
      maximum: 1,
      description: 'SCOs with less live data than this are rewritten (default 0.5)',
    }),
  },
);

export const ScrubReportSchema = s.object({
  scosExamined: count(),
  scosRewritten: count(),
  clustersMoved: count(),
  scosCreated: count(),
  backendBytesBefore: bytes(),
  backendBytesAfter: bytes(),
  aborted: s.boolean({ description: 'a concurrent rollback or clone made it give up' }),
});

// ------------------------------------------------------------------ operations

export const OPERATION_KINDS = [
  'vdisk.delete',
  'vdisk.clone',
  'vdisk.rollback',
  'vdisk.sync',
  'vdisk.scrub',
] as const;

export const OperationSchema = s.object(
  {
    id: s.string({ pattern: API_OPERATION_ID_PATTERN }),
    kind: s.string({ enum: OPERATION_KINDS }),
    target: name,
    state: s.string({ enum: ['running', 'succeeded', 'failed'] }),
    createdAtMs: timeMs,
  },
  {
    finishedAtMs: timeMs,
    result: s.anyOf(
      [VdiskSchema, ScrubReportSchema],
      'clone: the new vDisk; rollback: the vDisk; scrub: the report; delete, sync: none',
    ),
    error: ErrorSchema,
  },
);

export const OperationListSchema = s.object({
  operations: s.array(OperationSchema, { description: 'newest first' }),
});

// ------------------------------------------------------------------ backends, presets, ASDs

export const BackendSchema = s.object({
  id: registryId,
  name: registryId,
  type: s.string({ enum: ['local'] }),
  osdCount: count('active OSDs'),
  decommissionedOsdCount: count(),
  defaultPreset: registryId,
  createdAtMs: timeMs,
});

export const BackendListSchema = s.object({ backends: s.array(BackendSchema) });

export const PresetSchema = s.object({
  backend: registryId,
  name: registryId,
  isDefault: s.boolean(),
  policies: s.array(
    s.object({
      k: count('data fragments'),
      m: count('parity fragments'),
      c: count('fragments stored before a write is acknowledged'),
      x: count('most fragments of a chunk per node'),
    }),
    { description: 'tried in order' },
  ),
  fragmentSizeMaxBytes: bytes(),
  compression: s.string({ enum: ['none', 'lz4', 'zstd'] }),
  encryption: s.string({ enum: ['none', 'aes-256-gcm'] }),
  checksum: s.string({ enum: ['crc32c'] }),
});

export const PresetListSchema = s.object({ presets: s.array(PresetSchema) });

export const PresetQuerySchema = s.object({}, { backend: registryId });

export const AsdSchema = s.object(
  {
    id: registryId,
    backend: registryId,
    nodeId: label,
    address: label,
    state: s.string({ enum: ['active', 'decommissioned'] }),
    healthy: s.boolean({ description: 'it answered, and reported itself ok' }),
  },
  {
    detail: text,
    capacityBytes: bytes(),
    usedBytes: bytes(),
    freeBytes: bytes(),
    objectCount: count(),
    lastNoSpaceAtMs: s.integer({
      minimum: 0,
      maximum: MAX_INT,
      description: 'when it last refused a put for lack of space (absent: not since it started)',
    }),
    filesystemId: s.string({
      minLength: 1,
      maxLength: 1024,
      description: 'the file system its directory is on, when the ASD reports it',
    }),
  },
);

export const AsdListSchema = s.object({ asds: s.array(AsdSchema) });

export const StorageRouterSchema = s.object(
  {
    nodeId: label,
    address: s.string({ maxLength: 1024 }),
    startedAtMs: timeMs,
    healthy: s.boolean(),
  },
  {
    vdisksOpen: count(),
    vdisksFailed: count('vDisks it owns but could not open (retried)'),
    writeBuffer: s.object({
      totalBytes: bytes(),
      availableBytes: bytes(),
      reserveBytes: bytes(),
      reserveHeld: s.boolean({ description: 'false: the reserve file could not be made again' }),
      low: s.boolean({ description: 'writes are being refused (ENOSPC) for lack of space' }),
      refusedWrites: count(),
    }),
    detail: text,
  },
);

export const StorageRouterListSchema = s.object({ storageRouters: s.array(StorageRouterSchema) });

// ------------------------------------------------------------------ stats

export const PROBLEM_CODES = [
  'VDISK_OPEN_FAILED',
  'VDISK_WRITES_STOPPED',
  'VDISK_UPLOADS_FAILING',
  'VDISK_DATA_AT_RISK_OVERDUE',
  'VDISK_DATA_LOST',
  'ASD_FULL',
  'ASD_UNHEALTHY',
  'STORAGE_ROUTER_UNHEALTHY',
  'WRITE_BUFFER_FULL',
  'WRITE_BUFFER_NO_RESERVE',
  'THIN_OVERCOMMITTED',
] as const;

export const ProblemSchema = s.object({
  code: s.string({ enum: PROBLEM_CODES }),
  severity: s.string({
    enum: ['degraded', 'warning'],
    description: 'degraded: the cluster is not serving as it should; warning: worth knowing',
  }),
  subject: label,
  message: text,
});

export const StatsSchema = s.object({
  vdisks: s.array(
    s.object(
      {
        name,
        vpool: name,
        ownerNodeId: label,
        sizeBytes: bytes(),
        open: s.boolean(),
        state: s.string({ enum: VDISK_STATES }),
      },
      { stats: VdiskStatsSchema },
    ),
  ),
  totals: s.object(
    {
      vdiskCount: count(),
      vdisksOpen: count('vDisks whose owner answered with stats'),
      provisionedBytes: bytes('sum of vDisk sizes'),
      writeBufferDirtyBytes: bytes(),
      uploadBacklogObjects: count(),
      dataAtRiskBytes: bytes('over the open vDisks'),
      dataAtRiskMaxAgeMs: count('the oldest write not in the backend, over the open vDisks'),
      vdisksFailed: count('vDisks whose owner could not open them'),
    },
    {
      overcommitRatio: s.number({
        minimum: 0,
        description:
          'provisionedBytes / backend.freeBytes (above 1: over-committed); absent when nothing is free or no ASD answered',
      }),
    },
  ),
  backend: s.object({
    asdCount: count('active OSDs of every backend'),
    asdsReachable: count(),
    filesystemCount: count('file systems of the reachable ASDs, each counted once'),
    capacityBytes: bytes('over the reachable active ASDs, once per file system'),
    usedBytes: bytes(),
    freeBytes: bytes('over the reachable active ASDs, once per file system'),
  }),
  problems: s.array(ProblemSchema, {
    description: "what an operator should look at; any 'degraded' one makes shale status exit 1",
  }),
});

// ------------------------------------------------------------------ iSCSI targets

/**
 * Loose on purpose: the IQN, the initiators and the CHAP accounts are checked by the
 * target model (iscsi/iscsi-target-spec.ts), which answers with its own ISCSI_* codes; the
 * schema only bounds the sizes (far above the model's limits) and the shape.
 */
const iscsiName = s.string({
  minLength: 1,
  maxLength: 1024,
  description: 'an iSCSI name: iqn.YYYY-MM.reversed.domain[:unique], lower case, at most 223 bytes',
});
const chapAccount = (description: string) =>
  s.object(
    {
      user: s.string({ maxLength: 1024, description: '1..255 printable ASCII, no spaces' }),
      secret: s.string({
        maxLength: 1024,
        description: 'write-only: 12..255 printable ASCII, no spaces; never returned',
      }),
    },
    {},
    { description },
  );

export const CreateIscsiTargetBodySchema = s.object(
  { vdisk: name },
  {
    iqn: s.string({
      maxLength: 1024,
      description: 'default: iqn.2026-12.io.shale:<vdisk> (lower case, _ as -)',
    }),
    initiators: s.array(
      s.string({
        maxLength: 1024,
        description: 'an IPv4 or IPv6 address, ADDR/PREFIX, ALL, or an initiator IQN',
      }),
      { maxItems: 1024, description: 'who may log in; empty or absent: nobody (at most 64)' },
    ),
    chap: chapAccount('incoming CHAP: the initiator proves itself with this account'),
    mutual: chapAccount(
      'mutual CHAP: the target proves itself back with this account (needs chap, another secret)',
    ),
    readOnly: s.boolean({ description: 'the LUN refuses writes (default false)' }),
  },
);

export const IscsiTargetSchema = s.object(
  {
    iqn: iscsiName,
    vdisk: name,
    initiators: s.array(s.string({ minLength: 1, maxLength: 1024 }), {
      description: 'addresses, networks, ALL or initiator IQNs; empty: nobody may log in',
    }),
    readOnly: s.boolean(),
    createdAtMs: timeMs,
  },
  {
    chapUser: s.string({ minLength: 1, maxLength: 255, description: 'incoming CHAP user' }),
    mutualUser: s.string({ minLength: 1, maxLength: 255, description: 'mutual CHAP user' }),
  },
  { description: 'An iSCSI target exporting one vDisk; its CHAP secrets are never shown' },
);

export const IscsiTargetListSchema = s.object({ iscsiTargets: s.array(IscsiTargetSchema) });

/** The schemas the OpenAPI document names under components/schemas (by identity). */
export const NAMED_SCHEMAS: Readonly<Record<string, Schema>> = {
  Error: ErrorSchema,
  Health: HealthSchema,
  Vpool: VpoolSchema,
  VpoolList: VpoolListSchema,
  CreateVpool: CreateVpoolBodySchema,
  Snapshot: SnapshotSchema,
  SnapshotList: SnapshotListSchema,
  VdiskStats: VdiskStatsSchema,
  VdiskParent: VdiskParentSchema,
  Vdisk: VdiskSchema,
  VdiskList: VdiskListSchema,
  Warning: WarningSchema,
  VdiskChange: VdiskChangeSchema,
  CreateVdisk: CreateVdiskBodySchema,
  ResizeVdisk: ResizeVdiskBodySchema,
  CreateSnapshot: CreateSnapshotBodySchema,
  Clone: CloneBodySchema,
  Rollback: RollbackBodySchema,
  Sync: SyncBodySchema,
  Scrub: ScrubBodySchema,
  ScrubReport: ScrubReportSchema,
  Operation: OperationSchema,
  OperationList: OperationListSchema,
  Backend: BackendSchema,
  BackendList: BackendListSchema,
  Preset: PresetSchema,
  PresetList: PresetListSchema,
  Asd: AsdSchema,
  AsdList: AsdListSchema,
  StorageRouter: StorageRouterSchema,
  StorageRouterList: StorageRouterListSchema,
  Stats: StatsSchema,
  Problem: ProblemSchema,
  IscsiTarget: IscsiTargetSchema,
  IscsiTargetList: IscsiTargetListSchema,
  CreateIscsiTarget: CreateIscsiTargetBodySchema,
};

export type ErrorBody = Infer<typeof ErrorSchema>;
export type Health = Infer<typeof HealthSchema>;
export type Vpool = Infer<typeof VpoolSchema>;
export type CreateVpoolBody = Infer<typeof CreateVpoolBodySchema>;
export type Snapshot = Infer<typeof SnapshotSchema>;
export type VdiskStats = Infer<typeof VdiskStatsSchema>;
export type Vdisk = Infer<typeof VdiskSchema>;
export type Warning = Infer<typeof WarningSchema>;
export type VdiskChange = Infer<typeof VdiskChangeSchema>;
export type CreateVdiskBody = Infer<typeof CreateVdiskBodySchema>;
export type ResizeVdiskBody = Infer<typeof ResizeVdiskBodySchema>;
export type CloneBody = Infer<typeof CloneBodySchema>;
export type ScrubBody = Infer<typeof ScrubBodySchema>;
export type ScrubReport = Infer<typeof ScrubReportSchema>;
export type OperationKind = (typeof OPERATION_KINDS)[number];
export type Operation = Infer<typeof OperationSchema>;
export type Backend = Infer<typeof BackendSchema>;
export type Preset = Infer<typeof PresetSchema>;
export type Asd = Infer<typeof AsdSchema>;
export type StorageRouter = Infer<typeof StorageRouterSchema>;
export type Stats = Infer<typeof StatsSchema>;
export type Problem = Infer<typeof ProblemSchema>;
export type OpenApiDocument = Infer<typeof OpenApiDocumentSchema>;
export type IscsiTarget = Infer<typeof IscsiTargetSchema>;
export type CreateIscsiTargetBody = Infer<typeof CreateIscsiTargetBodySchema>;
