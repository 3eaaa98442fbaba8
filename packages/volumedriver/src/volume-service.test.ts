// Proves the VolumeService wire layer (unary fields, VD_ codes, Io stream batching, limits, isolation) over real gRPC on 127.0.0.1 against an in-memory fake manager.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { bindGrpcServer, isShaleError } from '@shale/common';
import { rejectsWith, xorshift32Random } from '@shale/testing';
import type {
  CloneVdiskInput,
  CreateVdiskInput,
  CreateVpoolInput,
  ScrubOptions,
  ScrubReport,
  SnapshotInfo,
  VdiskInfo,
  VolumeIo,
  VolumeManagerApi,
  VpoolInfo,
} from './api-types.js';
import { VdErrorCode, vdError } from './errors.js';
import {
  IO_CLIENT_MAX_IN_FLIGHT_REQUESTS,
  IO_REQUEST_MAX_BYTES,
  IO_SERVER_MAX_IN_FLIGHT_REQUESTS,
} from './service-constants.js';
import {
  type ProtoIoBatch,
  type ProtoIoOp,
  type ProtoIoReplyBatch,
  VD_INTERNAL,
  VolumeServiceClient,
} from './volume-grpc.js';
import {
  createVolumeGrpcServer,
  createVolumeServiceCounters,
  VolumeClient,
  type VolumeIoStream,
} from './volume-service.js';

const SEED = Number(process.env.VOLUME_SERVICE_SEED ?? Date.now() % 1_000_000);
const CLUSTER_BYTES = 4096;
const DISK_BYTES = 4 * 1024 * 1024;

interface FakeVdisk {
  info: VdiskInfo;
  data: Buffer;
  open: boolean;
}

/** A VolumeManagerApi on Buffers: enough behaviour to exercise the wire, none of the engine. */
class FakeManager implements VolumeManagerApi {
  readonly calls: [string, ...unknown[]][] = [];
  readonly vpools = new Map<string, VpoolInfo>();
  readonly vdisks = new Map<string, FakeVdisk>();
  /** While set, writes are applied at once but answered only when it resolves. */
  writeGate: Promise<void> | undefined;
  writeDelayMs = 0;
  activeWrites = 0;
  maxActiveWrites = 0;
  writesSeen = 0;

  readonly routers = [
    { nodeId: 'node-a', address: '10.0.0.1:8800', startedAtMs: 1_700_000_000_000 },
    { nodeId: 'node-test', address: '10.0.0.2:8800', startedAtMs: 1_700_000_000_001 },
  ];

  async listStorageRouters() {
    return this.routers;
  }
  async locateVdisk(name: string) {
    const info = this.require(name).info;
    return {
      vdiskName: name,
      vdiskId: info.id,
      sizeBytes: info.sizeBytes,
      clusterSizeBytes: info.clusterSizeBytes,
      ownerNodeId: info.ownerNodeId,
      ownerAddress: this.routers.find((r) => r.nodeId === info.ownerNodeId)?.address ?? '',
      ownerDataAddress: '',
      failoverRouters: this.routers.filter((r) => r.nodeId !== info.ownerNodeId),
    };
  }

  async createVpool(input: CreateVpoolInput): Promise<VpoolInfo> {
    this.calls.push(['createVpool', input]);
    if (this.vpools.has(input.name)) throw vdError(VdErrorCode.Exists, `vPool ${input.name}`);
    const info: VpoolInfo = {
      id: 'a'.repeat(32),
      name: input.name,
      backendId: input.backendId,
      presetName: input.presetName ?? '',
      clusterSizeBytes: input.clusterSizeBytes ?? CLUSTER_BYTES,
      scoSizeBytes: input.scoSizeBytes ?? 64 * 1024 * 1024,
      writeBufferBytes: input.writeBufferBytes ?? 1024 ** 3,
      createdAtMs: 1_700_000_000_123,
    };
    this.vpools.set(input.name, info);
    return info;
  }
  async listVpools(): Promise<VpoolInfo[]> {
    return [...this.vpools.values()];
  }
  async createVdisk(input: CreateVdiskInput): Promise<VdiskInfo> {
    this.calls.push(['createVdisk', input]);
    if (this.vdisks.has(input.name)) throw vdError(VdErrorCode.Exists, `vDisk ${input.name}`);
    const info = this.makeInfo(input.name, input.vpoolName, input.sizeBytes);
    // Huge vDisks exist for the round-trip test only: they get no bytes.
    const data = Buffer.alloc(input.sizeBytes <= DISK_BYTES ? input.sizeBytes : 0);
    this.vdisks.set(input.name, { info, data, open: true });
    return info;
  }
  async resizeVdisk(
    name: string,
    sizeBytes: number,
    options?: { force?: boolean },
  ): Promise<VdiskInfo> {
    this.calls.push(['resizeVdisk', name, sizeBytes, options]);
    const vdisk = this.require(name);
    if (sizeBytes < vdisk.info.sizeBytes && options?.force !== true)
      throw vdError(VdErrorCode.InvalidArgument, 'shrink refused without force');
    vdisk.info = { ...vdisk.info, sizeBytes };
    return vdisk.info;
  }
  async deleteVdisk(name: string): Promise<void> {
    this.calls.push(['deleteVdisk', name]);
    if (this.require(name).info.snapshots.some((snapshot) => snapshot.clones.length > 0))
      throw vdError(VdErrorCode.HasClones, `vDisk ${name} has clones`);
    this.vdisks.delete(name);
  }
  async listVdisks(): Promise<VdiskInfo[]> {
    return [...this.vdisks.values()].map((vdisk) => vdisk.info);
  }
  async vdiskInfo(name: string): Promise<VdiskInfo> {
    return this.require(name).info;
  }
  async createSnapshot(vdiskName: string, snapshotName: string): Promise<SnapshotInfo> {
    this.calls.push(['createSnapshot', vdiskName, snapshotName]);
    const vdisk = this.require(vdiskName);
    const snapshot: SnapshotInfo = {
      id: vdisk.info.snapshots.length + 1,
      name: snapshotName,
      createdAtMs: 1_700_000_000_456,
      inBackend: false,
      clones: [],
    };
    vdisk.info = { ...vdisk.info, snapshots: [...vdisk.info.snapshots, snapshot] };
    return snapshot;
  }
  async createGroupSnapshot(
    vdiskNames: readonly string[],
    snapshotName: string,
  ): Promise<SnapshotInfo[]> {
    this.calls.push(['createGroupSnapshot', [...vdiskNames], snapshotName]);
    const out: SnapshotInfo[] = [];
    for (const name of vdiskNames) out.push(await this.createSnapshot(name, snapshotName));
    return out;
  }
  async listSnapshots(vdiskName: string): Promise<SnapshotInfo[]> {
    return [...this.require(vdiskName).info.snapshots];
  }
  async deleteSnapshot(vdiskName: string, snapshotName: string): Promise<void> {
    this.calls.push(['deleteSnapshot', vdiskName, snapshotName]);
    const vdisk = this.require(vdiskName);
    if (!vdisk.info.snapshots.some((snapshot) => snapshot.name === snapshotName))
      throw vdError(VdErrorCode.NotFound, `snapshot ${snapshotName}`);
    vdisk.info = {
      ...vdisk.info,
      snapshots: vdisk.info.snapshots.filter((snapshot) => snapshot.name !== snapshotName),
    };
  }
  async cloneVdisk(input: CloneVdiskInput): Promise<VdiskInfo> {
    this.calls.push(['cloneVdisk', input]);
    const parent = this.require(input.parentName);
    const snapshot = parent.info.snapshots.find((s) => s.name === input.snapshotName);
    if (snapshot === undefined) throw vdError(VdErrorCode.NotFound, 'no such snapshot');
    const info: VdiskInfo = {
      ...this.makeInfo(input.name, parent.info.vpoolName, parent.info.sizeBytes),
      parent: {
        vdiskId: parent.info.id,
        vdiskName: parent.info.name,
        snapshotId: snapshot.id,
        snapshotName: snapshot.name,
      },
      stats: undefined,
    };
    parent.info = {
      ...parent.info,
      snapshots: parent.info.snapshots.map((s) =>
        s === snapshot ? { ...s, clones: [...s.clones, input.name] } : s,
      ),
    };
    this.vdisks.set(input.name, { info, data: Buffer.from(parent.data), open: false });
    return info;
  }
  async rollback(vdiskName: string, snapshotName: string): Promise<void> {
    this.calls.push(['rollback', vdiskName, snapshotName]);
    this.require(vdiskName);
  }
  async syncToBackend(vdiskName: string): Promise<void> {
    this.calls.push(['syncToBackend', vdiskName]);
    this.require(vdiskName);
  }
  async scrub(vdiskName: string, options?: ScrubOptions): Promise<ScrubReport> {
    this.calls.push(['scrub', vdiskName, options]);
    if (vdiskName === 'explode') throw new Error('not a ShaleError');
    this.require(vdiskName);
    return {
      scosExamined: 12,
      scosRewritten: 3,
      clustersMoved: 4567,
      scosCreated: 1,
      backendBytesBefore: 9_000_000_000,
      backendBytesAfter: 8_000_000_001,
      aborted: false,
    };
  }
  io(vdiskName: string): VolumeIo {
    const vdisk = this.vdisks.get(vdiskName);
    if (vdisk === undefined || !vdisk.open)
      throw vdError(VdErrorCode.NotFound, `vDisk ${vdiskName} is not open here`);
    const check = (offsetBytes: number, lengthBytes: number): void => {
      if (offsetBytes + lengthBytes > vdisk.data.length)
        throw vdError(VdErrorCode.OutOfRange, `${offsetBytes}+${lengthBytes} past the end`);
    };
    return {
      name: vdiskName,
      sizeBytes: vdisk.data.length,
      clusterSizeBytes: CLUSTER_BYTES,
      read: async (offsetBytes, lengthBytes) => {
        check(offsetBytes, lengthBytes);
        return Buffer.from(vdisk.data.subarray(offsetBytes, offsetBytes + lengthBytes));
      },
      write: async (offsetBytes, data) => {
        check(offsetBytes, data.length);
        data.copy(vdisk.data, offsetBytes);
        this.writesSeen++;
        this.activeWrites++;
        this.maxActiveWrites = Math.max(this.maxActiveWrites, this.activeWrites);
        try {
          if (this.writeGate !== undefined) await this.writeGate;
          if (this.writeDelayMs > 0)
            await new Promise((resolve) => setTimeout(resolve, this.writeDelayMs));
        } finally {
          this.activeWrites--;
        }
      },
      flush: async () => {
        // Nothing to make durable: the fake's bytes live in memory only.
      },
      trim: async (offsetBytes, lengthBytes) => {
        check(offsetBytes, lengthBytes);
        vdisk.data.fill(0, offsetBytes, offsetBytes + lengthBytes);
      },
      writeZeroes: async (offsetBytes, lengthBytes) => {
        check(offsetBytes, lengthBytes);
        vdisk.data.fill(0, offsetBytes, offsetBytes + lengthBytes);
      },
      // The fake's holes: all-zero clusters.
      blockStatus: async (offsetBytes, lengthBytes) => {
        check(offsetBytes, lengthBytes);
        const extents: { lengthBytes: number; hole: boolean }[] = [];
        for (let at = offsetBytes; at < offsetBytes + lengthBytes; ) {
          const to = Math.min(
            offsetBytes + lengthBytes,
            (Math.floor(at / CLUSTER_BYTES) + 1) * CLUSTER_BYTES,
          );
          const hole = vdisk.data.subarray(at, to).every((b) => b === 0);
          const last = extents[extents.length - 1];
          if (last?.hole === hole) last.lengthBytes += to - at;
          else extents.push({ lengthBytes: to - at, hole });
          at = to;
        }
        return extents;
      },
    };
  }

  private require(name: string): FakeVdisk {
    const vdisk = this.vdisks.get(name);
    if (vdisk === undefined) throw vdError(VdErrorCode.NotFound, `no vDisk ${name}`);
    return vdisk;
  }

  private makeInfo(name: string, vpoolName: string, sizeBytes: number): VdiskInfo {
    return {
      id: Buffer.from(name.padEnd(16, '-')).subarray(0, 16).toString('hex'),
      name,
      vpoolName,
      sizeBytes,
      clusterSizeBytes: CLUSTER_BYTES,
      scoSizeBytes: 64 * 1024 * 1024,
      namespace: `ns-${name}`,
      parent: undefined,
      ownerNodeId: 'node-test',
      createdAtMs: 1_700_000_000_789,
      snapshots: [],
      stats: {
        readOps: 1,
        writeOps: 2,
        readBytes: 3,
        writeBytes: 2 ** 40,
        flushOps: 5,
        trimOps: 6,
        writeBufferDirtyBytes: 7,
        uploadBacklogObjects: 8,
        scosUploaded: 9,
        tlogsUploaded: 10,
        bytesUploaded: 2 ** 50,
        currentScoNumber: 0xffff_fffe,
        tlogCount: 13,
        dataAtRiskBytes: 14,
        dataAtRiskAgeMs: 15,
        dataAtRiskBoundMs: 30_000,
        uploadError: 'ASD_NO_SPACE: the backend is full',
        writeLaneError: '',
      },
      state: 'failed',
      openError: { code: 'VD_BACKEND_ERROR', message: 'the proxy is down', atMs: 16 },
      dataLoss: { sinceMs: 17, nodeId: 'node-old', detectedAtMs: 18 },
    };
  }
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe(`VolumeService over gRPC (seed ${SEED}; replay with VOLUME_SERVICE_SEED=${SEED})`, () => {
  const manager = new FakeManager();
  const counters = createVolumeServiceCounters();
  const server = createVolumeGrpcServer(manager, { nodeId: 'node-test', counters });
  let client: VolumeClient;
  let address = '';

  before(async () => {
    const port = await bindGrpcServer(server, '127.0.0.1', 0);
    address = `127.0.0.1:${port}`;
    client = new VolumeClient(address, 10_000);
    await client.createVpool({ name: 'pool', backendId: 'backend1' });
    for (const name of ['disk-a', 'disk-b', 'disk-c', 'disk-d', 'disk-e', 'disk-f'])
      await client.createVdisk({ name, vpoolName: 'pool', sizeBytes: DISK_BYTES });
  });

  after(() => {
    client.close();
    server.forceShutdown();
  });

  test('every unary rpc round-trips its fields', async () => {
    const pool = await client.createVpool({
      name: 'pool2',
      backendId: 'b2',
      presetName: 'ec-4-2',
      clusterSizeBytes: 8192,
      scoSizeBytes: 32 * 1024 * 1024,
      writeBufferBytes: 2 ** 36,
    });
    assert.deepEqual(pool, manager.vpools.get('pool2'));
    assert.deepEqual(manager.calls.at(-1), [
      'createVpool',
      {
        name: 'pool2',
        backendId: 'b2',
        presetName: 'ec-4-2',
        clusterSizeBytes: 8192,
        scoSizeBytes: 32 * 1024 * 1024,
        writeBufferBytes: 2 ** 36,
      },
    ]);
    // Defaults travel as zeros and come back as absent fields.
    await client.createVpool({ name: 'pool3', backendId: 'b3' });
    assert.deepEqual(manager.calls.at(-1), ['createVpool', { name: 'pool3', backendId: 'b3' }]);
    assert.deepEqual(await client.listVpools(), [...manager.vpools.values()]);

    const created = await client.createVdisk({
      name: 'rt',
      vpoolName: 'pool2',
      sizeBytes: 2 ** 44,
    });
    assert.deepEqual(created, manager.vdisks.get('rt')?.info);
    assert.equal(created.sizeBytes, 2 ** 44);
    assert.equal(created.stats?.bytesUploaded, 2 ** 50);
    assert.equal(created.parent, undefined);

    const grown = await client.resizeVdisk('rt', 2 ** 45);
    assert.equal(grown.sizeBytes, 2 ** 45);
    assert.deepEqual(manager.calls.at(-1), ['resizeVdisk', 'rt', 2 ** 45, { force: false }]);
    const shrunk = await client.resizeVdisk('rt', 2 ** 40, { force: true });
    assert.equal(shrunk.sizeBytes, 2 ** 40);
    assert.deepEqual(manager.calls.at(-1), ['resizeVdisk', 'rt', 2 ** 40, { force: true }]);

    const snapshot = await client.createSnapshot('rt', 'snap1');
    assert.deepEqual(snapshot, {
      id: 1,
      name: 'snap1',
      createdAtMs: 1_700_000_000_456,
      inBackend: false,
      clones: [],
    });
    const group = await client.createGroupSnapshot(['rt', 'disk-a'], 'g1');
    assert.deepEqual(
      manager.calls.find((call) => call[0] === 'createGroupSnapshot'),
      ['createGroupSnapshot', ['rt', 'disk-a'], 'g1'],
    );
    assert.deepEqual(
      group.map((s) => s.name),
      ['g1', 'g1'],
    );

    const clone = await client.cloneVdisk({
      name: 'rt-clone',
      parentName: 'rt',
      snapshotName: 'snap1',
    });
    assert.deepEqual(clone, manager.vdisks.get('rt-clone')?.info);
    assert.equal(clone.stats, undefined);
    assert.deepEqual(clone.parent, {
      vdiskId: created.id,
      vdiskName: 'rt',
      snapshotId: 1,
      snapshotName: 'snap1',
    });
    const snapshots = await client.listSnapshots('rt');
    assert.deepEqual(snapshots, manager.vdisks.get('rt')?.info.snapshots);
    assert.deepEqual(snapshots[0]?.clones, ['rt-clone']);
    assert.deepEqual(await client.vdiskInfo('rt'), manager.vdisks.get('rt')?.info);
    assert.deepEqual(
      await client.listVdisks(),
      [...manager.vdisks.values()].map((vdisk) => vdisk.info),
    );

    await client.rollback('rt', 'g1');
    assert.deepEqual(manager.calls.at(-1), ['rollback', 'rt', 'g1']);
    await client.syncToBackend('rt');
    assert.deepEqual(manager.calls.at(-1), ['syncToBackend', 'rt']);
    const report = await client.scrub('rt', { liveFractionThreshold: 0.25 });
    assert.deepEqual(manager.calls.at(-1), ['scrub', 'rt', { liveFractionThreshold: 0.25 }]);
    assert.deepEqual(report, await manager.scrub('rt'));
    await client.scrub('rt');
    assert.deepEqual(manager.calls.at(-1), ['scrub', 'rt', {}]);
    await client.deleteSnapshot('rt', 'g1');
    assert.deepEqual(manager.calls.at(-1), ['deleteSnapshot', 'rt', 'g1']);
    await client.deleteVdisk('rt-clone');
    assert.equal(manager.vdisks.has('rt-clone'), false);

    assert.deepEqual(await client.listStorageRouters(), manager.routers);
    assert.deepEqual(await client.locateVdisk('rt'), await manager.locateVdisk('rt'));
    await rejectsWith(client.locateVdisk('missing'), VdErrorCode.NotFound);

    const open = [...manager.vdisks.values()].filter((vdisk) => vdisk.info.stats !== undefined);
    assert.deepEqual(await client.health(), {
      ok: true,
      nodeId: 'node-test',
      vdisksOpen: open.length,
      vdisksFailed: (await manager.listVdisks()).filter((v) => v.state === 'failed').length,
    });
  });

  test('errors keep their VD_ code end to end', async () => {
    await rejectsWith(client.vdiskInfo('missing'), VdErrorCode.NotFound);
    await rejectsWith(
      client.createVdisk({ name: 'disk-a', vpoolName: 'pool', sizeBytes: 1 }),
      VdErrorCode.Exists,
    );
    const err = await rejectsWith(client.resizeVdisk('disk-a', 1), VdErrorCode.InvalidArgument);
    assert.equal(err.message, 'shrink refused without force');
    await rejectsWith(client.deleteSnapshot('disk-a', 'nope'), VdErrorCode.NotFound);
    await client.createSnapshot('disk-b', 'base');
    await client.cloneVdisk({ name: 'disk-b-clone', parentName: 'disk-b', snapshotName: 'base' });
    await rejectsWith(client.deleteVdisk('disk-b'), VdErrorCode.HasClones);
    await rejectsWith(client.scrub('explode'), VD_INTERNAL);
    const unreachable = new VolumeClient('127.0.0.1:1', 2_000);
    try {
      await rejectsWith(unreachable.health(), 'VD_UNAVAILABLE');
    } finally {
      unreachable.close();
    }
  });

  test('Io: many concurrent writes then reads at random offsets read back the same bytes', async () => {
    const random = xorshift32Random(SEED);
    const model = Buffer.alloc(DISK_BYTES);
    const io = client.openIo('disk-a');
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 500; i++) {
      const lengthBytes = 512 * (1 + Math.floor(random() * 16));
      const offsetBytes = 512 * Math.floor(random() * ((DISK_BYTES - lengthBytes) / 512));
      const data = Buffer.alloc(lengthBytes);
      for (let j = 0; j < lengthBytes; j += 4)
        data.writeUInt32LE((random() * 0xffff_ffff) >>> 0, j);
      // The server starts requests in arrival order, so the last write to a byte wins.
      data.copy(model, offsetBytes);
      writes.push(io.write(offsetBytes, data, { fua: i % 7 === 0 }));
    }
    await Promise.all(writes);
    await io.flush();
    const reads: Promise<void>[] = [];
    for (let i = 0; i < 500; i++) {
      const lengthBytes = 1 + Math.floor(random() * 65_536);
      const offsetBytes = Math.floor(random() * (DISK_BYTES - lengthBytes));
      reads.push(
        io.read(offsetBytes, lengthBytes).then((data) => {
          assert.ok(
            data.equals(model.subarray(offsetBytes, offsetBytes + lengthBytes)),
            `read ${offsetBytes}+${lengthBytes}`,
          );
        }),
      );
    }
    await Promise.all(reads);
    await io.trim(0, 8192);
    await io.writeZeroes(65_536, 512, { fua: true });
    assert.ok((await io.read(0, 8192)).equals(Buffer.alloc(8192)));
    assert.ok((await io.read(65_536, 512)).equals(Buffer.alloc(512)));
    // Block status travels as packed extents; the fake reports all-zero clusters as holes.
    await io.trim(0, 3 * CLUSTER_BYTES);
    await io.write(CLUSTER_BYTES, Buffer.alloc(CLUSTER_BYTES, 1));
    assert.deepEqual(await io.blockStatus(0, 3 * CLUSTER_BYTES), [
      { lengthBytes: CLUSTER_BYTES, hole: true },
      { lengthBytes: CLUSTER_BYTES, hole: false },
      { lengthBytes: CLUSTER_BYTES, hole: true },
    ]);
    await rejectsWith(io.blockStatus(DISK_BYTES, 1), VdErrorCode.OutOfRange);
    await io.close();
    await rejectsWith(io.read(0, 1), VdErrorCode.Closed);
  });

  test('Io: requests issued in one tick travel as one IoBatch, replies in one IoReplyBatch', async () => {
    const io = client.openIo('disk-c');
    const batchesBefore = counters.ioBatchesReceived;
    const repliesBefore = counters.ioReplyBatchesSent;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) writes.push(io.write(i * 512, Buffer.alloc(512, i)));
    await Promise.all(writes);
    assert.equal(io.batchesSent, 1);
    assert.equal(counters.ioBatchesReceived - batchesBefore, 1);
    // The fake answers every write at once: the replies complete in one turn.
    assert.equal(counters.ioReplyBatchesSent - repliesBefore, 1);
    await io.close();
  });

  test('Io: a vDisk that is not open fails every request of the stream with VD_NOT_FOUND', async () => {
    const io = client.openIo('disk-b-clone');
    const results = await Promise.allSettled([io.read(0, 512), io.write(0, Buffer.alloc(512))]);
    for (const result of results) {
      assert.equal(result.status, 'rejected');
      assert.ok(isShaleError(result.reason, VdErrorCode.NotFound), String(result.reason));
    }
    await rejectsWith(io.flush(), VdErrorCode.NotFound);
  });

  test('Io: bad requests fail alone; other requests and other streams go on', async () => {
    const good = client.openIo('disk-d');
    const goodWrites: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) goodWrites.push(good.write(i * 4096, Buffer.alloc(4096, 0xab)));

    // A raw stream, to send what VolumeIoStream never would.
    const raw = new VolumeServiceClient(address, grpc.credentials.createInsecure());
    try {
      const open = (raw as unknown as Record<string, unknown>).io as (
        options: grpc.CallOptions,
      ) => grpc.ClientDuplexStream<ProtoIoBatch, ProtoIoReplyBatch>;
      const call = open.call(raw, {});
      const replies = new Map<number, { code: string; length: number }>();
      call.on('data', (batch: ProtoIoReplyBatch) => {
        for (const reply of batch.replies)
          replies.set(reply.id, { code: reply.errorCode, length: reply.data.length });
      });
      const done = new Promise<void>((resolve, reject) => {
        call.on('end', resolve);
        call.on('error', reject);
      });
      const empty = Buffer.alloc(0);
      const request = (
        id: number,
        op: ProtoIoOp | number,
        offsetBytes: number,
        lengthBytes: number,
      ) => ({
        id,
        op,
        offsetBytes,
        lengthBytes,
        data: empty,
        fua: false,
      });
      call.write({
        vdiskName: 'disk-d',
        requests: [
          request(1, 99, 0, 512),
          request(2, 'OP_UNSPECIFIED', 0, 512),
          request(3, 'WRITE', 0, 0),
          request(4, 'READ', DISK_BYTES - 512, 1024),
          request(5, 'READ', 0, IO_REQUEST_MAX_BYTES + 1),
          request(6, 'READ', 0, 4096),
        ],
      });
      call.write({ vdiskName: '', requests: [request(7, 'FLUSH', 0, 0)] });
      call.end();
      await done;
      assert.deepEqual(
        [...replies.entries()].sort((a, b) => a[0] - b[0]),
        [
          [1, { code: VdErrorCode.InvalidArgument, length: 0 }],
          [2, { code: VdErrorCode.InvalidArgument, length: 0 }],
          [3, { code: VdErrorCode.InvalidArgument, length: 0 }],
          [4, { code: VdErrorCode.OutOfRange, length: 0 }],
          [5, { code: VdErrorCode.InvalidArgument, length: 0 }],
          [6, { code: '', length: 4096 }],
          [7, { code: '', length: 0 }],
        ],
      );

      // Broken stream protocol fails that stream only.
      const noName = open.call(raw, {});
      noName.resume(); // drain replies; only the status matters here
      const noNameEnd = new Promise<grpc.ServiceError>((resolve) => noName.on('error', resolve));
      noName.write({ vdiskName: '', requests: [request(1, 'FLUSH', 0, 0)] });
      const noNameErr = await noNameEnd;
      assert.equal(noNameErr.metadata.get('shale-code')[0], VdErrorCode.InvalidArgument);

      const rename = open.call(raw, {});
      rename.resume(); // drain replies; only the status matters here
      const renameEnd = new Promise<grpc.ServiceError>((resolve) => rename.on('error', resolve));
      rename.write({ vdiskName: 'disk-d', requests: [request(1, 'FLUSH', 0, 0)] });
      rename.write({ vdiskName: 'disk-e', requests: [request(2, 'FLUSH', 0, 0)] });
      const renameErr = await renameEnd;
      assert.equal(renameErr.metadata.get('shale-code')[0], VdErrorCode.InvalidArgument);
    } finally {
      raw.close();
    }

    await Promise.all(goodWrites);
    await rejectsWith(good.read(DISK_BYTES, 1), VdErrorCode.OutOfRange);
    assert.ok((await good.read(0, 100 * 4096)).equals(Buffer.alloc(100 * 4096, 0xab)));
    await good.close();
  });

  test('Io: cancel() rejects every pending request with VD_CLOSED; the server drops their replies', async () => {
    let open: (() => void) | undefined;
    manager.writeGate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const io = client.openIo('disk-e');
    const seenBefore = manager.writesSeen;
    const writes = Array.from({ length: 20 }, (_, i) => io.write(i * 512, Buffer.alloc(512, 1)));
    try {
      await waitFor(() => manager.writesSeen - seenBefore === 20, 'the server to start the writes');
      assert.equal(io.pendingRequests, 20);
      io.cancel();
      const results = await Promise.allSettled(writes);
      for (const result of results) {
        assert.equal(result.status, 'rejected');
        assert.ok(isShaleError(result.reason, VdErrorCode.Closed), String(result.reason));
      }
      await rejectsWith(io.write(0, Buffer.alloc(512)), VdErrorCode.Closed);
    } finally {
      manager.writeGate = undefined;
      open?.();
    }
    // The server survived it: a new stream on the same vDisk works.
    const again = client.openIo('disk-e');
    assert.ok((await again.read(0, 512)).equals(Buffer.alloc(512, 1)));
    await again.close();
  });

  test('Io: beyond both in-flight limits, requests wait and still complete correctly', async () => {
    const total = IO_CLIENT_MAX_IN_FLIGHT_REQUESTS * 2 + 100;
    manager.writeDelayMs = 2;
    manager.maxActiveWrites = 0;
    const pausesBefore = counters.ioStreamPauses;
    const io: VolumeIoStream = client.openIo('disk-f');
    try {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < total; i++) {
        const data = Buffer.alloc(512);
        data.writeUInt32LE(i, 0);
        writes.push(io.write(i * 512, data));
      }
      assert.equal(io.pendingRequests, total);
      await Promise.all(writes);
      assert.equal(io.pendingRequests, 0);
    } finally {
      manager.writeDelayMs = 0;
    }
    assert.ok(
      manager.maxActiveWrites <= IO_SERVER_MAX_IN_FLIGHT_REQUESTS,
      `${manager.maxActiveWrites}`,
    );
    assert.ok(manager.maxActiveWrites > IO_SERVER_MAX_IN_FLIGHT_REQUESTS / 2);
    assert.ok(counters.ioStreamPauses > pausesBefore, 'the server paused reading the stream');
    assert.ok(io.batchesSent >= 3, 'the client sent a batch per free window');
    const all = await io.read(0, total * 512);
    for (let i = 0; i < total; i++) assert.equal(all.readUInt32LE(i * 512), i);
    await io.close();
  });
});
