// Proves a real volumedriver (etcd + 6 ASDs + proxy, all separate processes; the volumedriver uploads with the proxy engine in its own process, one fencing writer through the proxy process) keeps every acknowledged byte through SIGKILL mid-write at queue depth ~16 (seeded: after each restart every byte is checked against a model of the flushed value, the acknowledged value and the writes still in flight), restores a synced vDisk onto an empty node, fences an old owner, and serves a clone as of its snapshot; SHALE_SEED replays, SHALE_LONG=1 runs more crash rounds.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { VolumeClient, type VolumeIoStream } from '@shale/volumedriver';
import { TEST_BACKEND as BACKEND, startCluster } from './support/cluster.js';
import type { ShaleProcess } from './support/shale-process.js';

const SEED = Number(process.env.SHALE_SEED ?? randomBytes(4).readUInt32BE(0));
const LONG = process.env.SHALE_LONG === '1';
const CRASH_ROUNDS = LONG ? 12 : 3;

const MiB = 1024 * 1024;
const KiB = 1024;
const DISK_BYTES = 64 * MiB;
const SCO_BYTES = 4 * MiB;
/**
 * The model's unit. Every write starts and ends on a unit boundary, so writes are unaligned
 * to sectors (512 B) and clusters (4 KiB) but each unit holds one write's pattern: u32 write
 * number, u32 unit index, u64 hash of both. A unit read back therefore names the write it
 * came from, and garbage (a torn unit, a unit from elsewhere) never passes for a write.
 */
const UNIT = 16;
const UNITS = DISK_BYTES / UNIT;
const READ_CHUNK = 4 * MiB;

function mix(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** The pattern write `seq` puts into units [firstUnit, firstUnit + count). */
function pattern(seq: number, firstUnit: number, count: number): Buffer {
  const buf = Buffer.allocUnsafe(count * UNIT);
  for (let i = 0; i < count; i += 1) {
    const unit = firstUnit + i;
    const at = i * UNIT;
    buf.writeUInt32LE(seq, at);
    buf.writeUInt32LE(unit, at + 4);
    buf.writeUInt32LE(mix(seq * 0x9e3779b1 + unit), at + 8);
    buf.writeUInt32LE(mix(unit * 0x7feb352d + seq + 1), at + 12);
  }
  return buf;
}

/** The write number a unit read back holds: 0 for zeros, -1 for anything no write produced. */
function decodeUnit(buf: Buffer, at: number, unit: number): number {
  const seq = buf.readUInt32LE(at);
  const idx = buf.readUInt32LE(at + 4);
  const h1 = buf.readUInt32LE(at + 8);
  const h2 = buf.readUInt32LE(at + 12);
  if (seq === 0 && idx === 0 && h1 === 0 && h2 === 0) return 0;
  if (
    seq === 0 ||
    idx !== unit ||
    h1 !== mix(seq * 0x9e3779b1 + unit) ||
    h2 !== mix(unit * 0x7feb352d + seq + 1)
  )
    return -1;
  return seq;
}

interface WriteRecord {
  readonly seq: number;
  readonly firstUnit: number;
  readonly units: number;
}

/**
 * What the disk may hold after a crash, per 16-byte unit: `durable[u]` is the write (0: zeros)
 * that must be there unless a later write replaced it; a later write is allowed when it was
 * issued after the last verification (`epochStart`) and its number is above `durable[u]`
 * (the lane applies requests in arrival order, so an earlier write cannot land over a durable
 * later one). `current[u]` is the last write issued to u (what a read with nothing in flight
 * must see).
 */
class DiskModel {
  readonly durable = new Uint32Array(UNITS);
  readonly current = new Uint32Array(UNITS);
  readonly inFlight = new Uint16Array(UNITS);
  /**
   * The last acknowledged write per unit. A process kill (not a power loss) keeps the page
   * cache, and a write is acknowledged once it is there (SCO and TLog appended), so after
   * SIGKILL even unflushed acknowledged writes must be back: a stricter check than `durable`.
   */
  readonly ackedMax = new Uint32Array(UNITS);
  nextSeq = 1;
  epochStart = 1;
  /** Units read back after crashes holding a write newer than their durable one. */
  newerThanDurable = 0;
  /** Units read back after crashes holding less than the last write issued to them. */
  olderThanIssued = 0;
  /** Acknowledged writes not yet known durable, in acknowledgement order. */
  private ackedNotDurable: { rec: WriteRecord; ackOrder: number }[] = [];
  private ackCounter = 0;

  issue(firstUnit: number, units: number): WriteRecord {
    const rec = { seq: this.nextSeq++, firstUnit, units };
    for (let u = firstUnit; u < firstUnit + units; u += 1) {
      this.current[u] = rec.seq;
      this.inFlight[u] = (this.inFlight[u] as number) + 1;
    }
    return rec;
  }

  settled(rec: WriteRecord): void {
    for (let u = rec.firstUnit; u < rec.firstUnit + rec.units; u += 1) {
      this.inFlight[u] = (this.inFlight[u] as number) - 1;
    }
  }

  acked(rec: WriteRecord): void {
    for (let u = rec.firstUnit; u < rec.firstUnit + rec.units; u += 1) {
      if ((this.ackedMax[u] as number) < rec.seq) this.ackedMax[u] = rec.seq;
    }
    this.ackCounter += 1;
    this.ackedNotDurable.push({ rec, ackOrder: this.ackCounter });
  }

  /** A FLUSH (or FUA write) is issued now: returns the mark its completion makes durable. */
  flushMark(): number {
    return this.ackCounter;
  }

  /** A FLUSH/FUA issued at `mark` completed: every write acknowledged before it is durable. */
  flushed(mark: number, fuaWrite?: WriteRecord): void {
    const keep: { rec: WriteRecord; ackOrder: number }[] = [];
    for (const entry of this.ackedNotDurable) {
      if (entry.ackOrder <= mark) this.makeDurable(entry.rec);
      else keep.push(entry);
    }
    this.ackedNotDurable = keep;
    if (fuaWrite !== undefined) this.makeDurable(fuaWrite);
  }

  private makeDurable(rec: WriteRecord): void {
    for (let u = rec.firstUnit; u < rec.firstUnit + rec.units; u += 1) {
      if ((this.durable[u] as number) < rec.seq) this.durable[u] = rec.seq;
    }
  }

  /** The process died: nothing in flight will ever be acknowledged. */
  crashed(): void {
    this.ackedNotDurable = [];
    this.inFlight.fill(0);
  }

  /**
   * Checks a chunk read back after a crash (or a restore) starting at unit `firstUnit`; returns
   * the problems (at most `limit`), and records what was read as the new state.
   */
  checkAfterCrash(buf: Buffer, firstUnit: number, limit: number, processKill = true): string[] {
    const problems: string[] = [];
    for (let i = 0; i * UNIT < buf.length; i += 1) {
      const u = firstUnit + i;
      const got = decodeUnit(buf, i * UNIT, u);
      const durable = this.durable[u] as number;
      const ok = got === durable || (got > durable && got >= this.epochStart);
      if (!ok && problems.length < limit) {
        problems.push(
          `byte ${u * UNIT}: read ${got === -1 ? 'garbage' : got === 0 ? 'zeros' : `write #${got}`}, ` +
            `durable is ${durable === 0 ? 'zeros' : `write #${durable}`}, later writes allowed from #${this.epochStart} ` +
            `(last issued #${this.current[u]}); bytes ${buf.subarray(i * UNIT, i * UNIT + UNIT).toString('hex')}`,
        );
      }
      const acked = this.ackedMax[u] as number;
      if (ok && processKill && got < acked && problems.length < limit) {
        problems.push(
          `byte ${u * UNIT}: read ${got === 0 ? 'zeros' : `write #${got}`} (durable), but write #${acked} was acknowledged before the kill: ` +
            'a process kill keeps the page cache, so an acknowledged write must survive it even unflushed',
        );
      }
      if (got > durable) this.newerThanDurable += 1;
      if (got !== this.current[u]) this.olderThanIssued += 1;
      this.current[u] = Math.max(got, 0);
    }
    return problems;
  }

  /** A sync (every write issued so far acknowledged first) made everything durable. */
  synced(): void {
    this.flushed(this.flushMark());
    this.epochStart = this.nextSeq;
  }

  /** After a verification and a FLUSH: what was read is the durable state. */
  settleEpoch(): void {
    this.durable.set(this.current);
    this.ackedMax.set(this.current);
    this.epochStart = this.nextSeq;
  }

  /** Checks a read with nothing overlapping in flight at its issue (`issuedBefore`: nextSeq then). */
  checkLiveRead(
    buf: Buffer,
    firstUnit: number,
    expected: Uint32Array,
    issuedBefore: number,
  ): string[] {
    const problems: string[] = [];
    for (let i = 0; i * UNIT < buf.length; i += 1) {
      const u = firstUnit + i;
      const got = decodeUnit(buf, i * UNIT, u);
      const want = expected[i] as number;
      if (got !== want && !(got >= issuedBefore) && problems.length < 3) {
        problems.push(`live read at byte ${u * UNIT}: read #${got}, expected #${want}`);
      }
    }
    return problems;
  }
}

/** Reads the whole disk in chunks (a few in flight); any read error fails the test. */
async function readAll(
  io: VolumeIoStream,
  sizeBytes: number,
  onChunk: (offset: number, data: Buffer) => void,
): Promise<void> {
  const offsets: number[] = [];
  for (let offset = 0; offset < sizeBytes; offset += READ_CHUNK) offsets.push(offset);
  const workers = [0, 1, 2, 3].map(async () => {
    for (let offset = offsets.shift(); offset !== undefined; offset = offsets.shift()) {
      const length = Math.min(READ_CHUNK, sizeBytes - offset);
      const data = await io.read(offset, length);
      assert.equal(data.length, length, `read at ${offset}: ${data.length} bytes, not ${length}`);
      onChunk(offset, data);
    }
  });
  await Promise.all(workers);
}

function describeSeed(): string {
  return `replay with SHALE_SEED=${SEED}${LONG ? ' SHALE_LONG=1' : ''}`;
}

function randomWriteRange(int: (n: number) => number, sizeBytes: number): [number, number] {
  // 512 B..256 KiB, log-uniform-ish; a third cluster-aligned, the rest on any 16-byte unit.
  const lengthBytes = Math.min(
    256 * KiB,
    Math.max(512, Math.floor((512 * 2 ** ((int(1000) / 1000) * 9)) / UNIT) * UNIT),
  );
  const aligned = int(3) === 0;
  const grain = aligned ? 4096 : UNIT;
  const length = aligned ? Math.max(4096, Math.floor(lengthBytes / 4096) * 4096) : lengthBytes;
  const offset = int((sizeBytes - length) / grain + 1) * grain;
  return [offset / UNIT, length / UNIT];
}

test(
  `kill -9 mid-write keeps every acknowledged byte (seed ${SEED}; ${describeSeed()})`,
  { timeout: LONG ? 1_200_000 : 240_000 },
  async () => {
    process.stdout.write(
      `volumedriver crash test: SHALE_SEED=${SEED}${LONG ? ' SHALE_LONG=1' : ''}\n`,
    );
    const random = seededRandom(SEED);
    const int = (n: number): number => Math.floor(random() * n);
    const cluster = await startCluster('vd-crash-');
    const clients: VolumeClient[] = [];
    let step = 'start';
    try {
      const vdDir = path.join(cluster.dir, 'vd');
      let vd = await cluster.startVolumedriver('crash-node', vdDir);
      let client = new VolumeClient(`127.0.0.1:${vd.port}`);
      clients.push(client);
      await client.createVpool({ name: 'pool', backendId: BACKEND, scoSizeBytes: SCO_BYTES });
      await client.createVdisk({ name: 'disk', vpoolName: 'pool', sizeBytes: DISK_BYTES });
      const model = new DiskModel();
      let totalWrites = 0;
      let totalKilledInFlight = 0;

      for (let round = 0; round < CRASH_ROUNDS; round += 1) {
        step = `round ${round}: writes`;
        const io = client.openIo('disk');
        const queueDepth = 8 + int(17);
        const killAfter = 150 + int(LONG ? 1500 : 600);
        let issued = 0;
        let killed = false;
        let failure: Error | undefined;
        const liveProblems: string[] = [];
        const running = new Set<Promise<void>>();
        const track = (p: Promise<void>): void => {
          running.add(p);
          void p.finally(() => running.delete(p));
        };
        const issueWrite = (): void => {
          const [firstUnit, units] = randomWriteRange(int, DISK_BYTES);
          const fua = int(12) === 0;
          const rec = model.issue(firstUnit, units);
          const mark = fua ? model.flushMark() : 0;
          totalWrites += 1;
          track(
            io.write(firstUnit * UNIT, pattern(rec.seq, firstUnit, units), { fua }).then(
              () => {
                if (killed) return;
                model.settled(rec);
                model.acked(rec);
                if (fua) model.flushed(mark, rec);
              },
              (err: unknown) => {
                if (killed) return;
                model.settled(rec);
                failure ??= err as Error;
              },
            ),
          );
        };
        const issueFlush = (): void => {
          const mark = model.flushMark();
          track(
            io.flush().then(
              () => {
                if (!killed) model.flushed(mark);
              },
              (err: unknown) => {
                if (!killed) failure ??= err as Error;
              },
            ),
          );
        };
        const issueRead = (): void => {
          const [firstUnit, units] = randomWriteRange(int, DISK_BYTES);
          for (let u = firstUnit; u < firstUnit + units; u += 1) {
            if ((model.inFlight[u] as number) > 0) return;
          }
          const expected = model.current.slice(firstUnit, firstUnit + units);
          const issuedBefore = model.nextSeq;
          track(
            io.read(firstUnit * UNIT, units * UNIT).then(
              (data) => {
                liveProblems.push(...model.checkLiveRead(data, firstUnit, expected, issuedBefore));
              },
              (err: unknown) => {
                if (!killed) failure ??= err as Error;
              },
            ),
          );
        };

        while (issued < killAfter && failure === undefined) {
          while (running.size >= queueDepth) await Promise.race(running);
          const dice = int(100);
          if (dice < 6) issueFlush();
          else if (dice < 10) issueRead();
          else issueWrite();
          issued += 1;
        }
        if (failure !== undefined) throw failure;
        // Kill at a random moment while requests are in flight: top the queue up, wait a
        // random few milliseconds, and kill while something is still unanswered.
        for (let i = 0; i < queueDepth; i += 1) issueWrite();
        await sleep(int(15));
        const inFlightAtKill = running.size;
        killed = true;
        step = `round ${round}: kill`;
        await vd.kill9();
        model.crashed();
        totalKilledInFlight += inFlightAtKill;
        await Promise.allSettled([...running]);
        io.cancel();
        client.close();
        assert.deepEqual(liveProblems, [], `round ${round}: live reads; ${describeSeed()}`);

        step = `round ${round}: restart`;
        vd = await cluster.startVolumedriver('crash-node', vdDir);
        client = new VolumeClient(`127.0.0.1:${vd.port}`);
        clients.push(client);
        const check = client.openIo('disk');
        step = `round ${round}: verify`;
        const problems: string[] = [];
        await readAll(check, DISK_BYTES, (offset, data) => {
          problems.push(...model.checkAfterCrash(data, offset / UNIT, 10 - problems.length));
        });
        assert.deepEqual(
          problems,
          [],
          `round ${round} (${inFlightAtKill} requests in flight at the kill, write #${model.nextSeq - 1} last issued): ${describeSeed()}`,
        );
        await check.flush();
        await check.close();
        model.settleEpoch();
      }
      step = 'done';
      const info = await client.vdiskInfo('disk');
      const scoFiles = await fs.readdir(path.join(vdDir, 'vdisks', info.id, 'scos'));
      const highestSco = Math.max(...scoFiles.map((name) => Number.parseInt(name, 16)));
      process.stdout.write(
        `volumedriver crash test: ${CRASH_ROUNDS} rounds, ${totalWrites} writes, ${totalKilledInFlight} requests in flight at the kills, highest SCO ${highestSco}; units read back newer than durable ${model.newerThanDurable}, older than last issued ${model.olderThanIssued}\n`,
      );
      // The rounds must cross SCO boundaries, so kills also hit sealing and uploads.
      assert.ok(highestSco >= CRASH_ROUNDS, `SCOs written: ${scoFiles.join(' ')}`);
    } catch (err) {
      process.stdout.write(`volumedriver crash test FAILED at ${step}: ${describeSeed()}\n`);
      throw err;
    } finally {
      for (const c of clients) c.close();
      await cluster.stop();
    }
  },
);

/** Issues `count` random writes at queue depth `depth` and waits for all; every one must succeed. */
async function writeRandom(
  io: VolumeIoStream,
  model: DiskModel,
  int: (n: number) => number,
  sizeBytes: number,
  count: number,
  depth = 16,
): Promise<void> {
  const running = new Set<Promise<void>>();
  for (let i = 0; i < count; i += 1) {
    while (running.size >= depth) await Promise.race(running);
    const [firstUnit, units] = randomWriteRange(int, sizeBytes);
    const rec = model.issue(firstUnit, units);
    const p = io.write(firstUnit * UNIT, pattern(rec.seq, firstUnit, units)).then(() => {
      model.settled(rec);
      model.acked(rec);
    });
    running.add(p);
    void p.then(
      () => running.delete(p),
      () => running.delete(p),
    );
  }
  await Promise.all(running);
}

/** Reads the whole vDisk; every unit must hold exactly the write `expected` names (0: zeros). */
async function expectExactly(
  io: VolumeIoStream,
  sizeBytes: number,
  expected: Uint32Array,
  what: string,
): Promise<void> {
  const problems: string[] = [];
  let units = 0;
  await readAll(io, sizeBytes, (offset, data) => {
    const firstUnit = offset / UNIT;
    for (let i = 0; i * UNIT < data.length; i += 1) {
      const u = firstUnit + i;
      const got = decodeUnit(data, i * UNIT, u);
      const want = expected[u] as number;
      units += 1;
      if (got !== want && problems.length < 10) {
        problems.push(
          `byte ${u * UNIT}: read ${got === -1 ? 'garbage' : got === 0 ? 'zeros' : `write #${got}`}, expected ${want === 0 ? 'zeros' : `write #${want}`}`,
        );
      }
    }
  });
  assert.equal(units, sizeBytes / UNIT);
  assert.deepEqual(problems, [], `${what}: ${describeSeed()}`);
}

function writtenUnits(state: Uint32Array): number {
  let n = 0;
  for (const seq of state) if (seq !== 0) n += 1;
  return n;
}

test(
  `a synced vDisk restores on an empty node, and a clone reads as of its snapshot, through the real proxy (seed ${SEED})`,
  { timeout: 240_000 },
  async () => {
    const random = seededRandom(SEED ^ 0x5eed);
    const int = (n: number): number => Math.floor(random() * n);
    const cluster = await startCluster('vd-restore-');
    const clients: VolumeClient[] = [];
    const connect = (vd: ShaleProcess): VolumeClient => {
      const client = new VolumeClient(`127.0.0.1:${vd.port}`);
      clients.push(client);
      return client;
    };
    const size = 8 * MiB;
    try {
      const vdA = await cluster.startVolumedriver('restore-node', path.join(cluster.dir, 'vd-a'));
      const a = connect(vdA);
      await a.createVpool({ name: 'pool', backendId: BACKEND, scoSizeBytes: SCO_BYTES });
      await a.createVdisk({ name: 'disk', vpoolName: 'pool', sizeBytes: size });
      const model = new DiskModel();
      let io = a.openIo('disk');
      // ~6 MiB of writes: a SCO seals and uploads on its own before the sync.
      await writeRandom(io, model, int, size, 150);
      await a.syncToBackend('disk');
      model.synced();
      const asSynced = model.current.slice();
      // Written after the sync: a restore may or may not have them.
      await writeRandom(io, model, int, size, 20);
      await io.close();
      const infoA = await a.vdiskInfo('disk');
      await vdA.kill9();

      // Test 2: a new volumedriver, same node id, empty write buffer: restores from the backend.
      const vdB = await cluster.startVolumedriver('restore-node', path.join(cluster.dir, 'vd-b'));
      const b = connect(vdB);
      const infoB = await b.vdiskInfo('disk');
      assert.equal(infoB.id, infoA.id);
      assert.ok(infoB.stats !== undefined, 'the new volumedriver opened the vDisk');
      io = b.openIo('disk');
      const problems: string[] = [];
      await readAll(io, size, (offset, data) => {
        problems.push(...model.checkAfterCrash(data, offset / UNIT, 10 - problems.length, false));
      });
      assert.deepEqual(problems, [], `restore on an empty node: ${describeSeed()}`);
      assert.ok(writtenUnits(asSynced) > size / UNIT / 8, 'a good part of the disk was written');
      model.settleEpoch();

      // Test 4: snapshot, write more, clone from the snapshot.
      await writeRandom(io, model, int, size, 60);
      await b.createSnapshot('disk', 'snap1');
      const atSnapshot = model.current.slice();
      await writeRandom(io, model, int, size, 60);
      const parentNow = model.current.slice();
      await io.close();
      const clone = await b.cloneVdisk({
        name: 'clone',
        parentName: 'disk',
        snapshotName: 'snap1',
      });
      assert.equal(clone.parent?.snapshotName, 'snap1');
      const cloneIo = b.openIo('clone');
      await expectExactly(cloneIo, size, atSnapshot, 'the clone reads as of the snapshot');
      // The clone's own writes go to the clone only.
      const cloneModel = new DiskModel();
      cloneModel.nextSeq = model.nextSeq;
      cloneModel.current.set(atSnapshot);
      await writeRandom(cloneIo, cloneModel, int, size, 30);
      model.nextSeq = cloneModel.nextSeq;
      const cloneNow = cloneModel.current.slice();
      await cloneIo.close();
      io = b.openIo('disk');
      await expectExactly(io, size, parentNow, 'the parent after the clone');
      await io.close();
      await b.syncToBackend('disk');
      await b.syncToBackend('clone');
      await vdB.kill9();

      // Both again on an empty node: every byte of the parent and the clone comes through the proxy.
      const vdC = await cluster.startVolumedriver('restore-node', path.join(cluster.dir, 'vd-c'));
      const c = connect(vdC);
      io = c.openIo('disk');
      await expectExactly(io, size, parentNow, 'the parent restored on an empty node');
      await io.close();
      const cloneIoC = c.openIo('clone');
      await expectExactly(cloneIoC, size, cloneNow, 'the clone restored on an empty node');
      await cloneIoC.close();
    } finally {
      for (const client of clients) client.close();
      await cluster.stop();
    }
  },
);

test(
  `a second volumedriver with the same node id fences the first: its later writes fail with VD_FENCED and never reach the new owner (seed ${SEED})`,
  { timeout: 180_000 },
  async () => {
    const random = seededRandom(SEED ^ 0xfe9ce);
    const int = (n: number): number => Math.floor(random() * n);
    const cluster = await startCluster('vd-fence-');
    const clients: VolumeClient[] = [];
    const size = 8 * MiB;
    try {
      const vdA = await cluster.startVolumedriver('fence-node', path.join(cluster.dir, 'vd-a'));
      const a = new VolumeClient(`127.0.0.1:${vdA.port}`);
      clients.push(a);
      await a.createVpool({ name: 'pool', backendId: BACKEND, scoSizeBytes: SCO_BYTES });
      await a.createVdisk({ name: 'disk', vpoolName: 'pool', sizeBytes: size });
      const model = new DiskModel();
      const ioA = a.openIo('disk');
      await writeRandom(ioA, model, int, size, 60);
      await a.syncToBackend('disk');
      const asSynced = model.current.slice();

      // B opens the vDisk (same node id, its own empty write buffer): the epoch bump fences A.
      // A uploads with the proxy engine in its process, B through the proxy process: a
      // fence holds across both ways of reaching the backend.
      const vdB = await cluster.startVolumedriver(
        'fence-node',
        path.join(cluster.dir, 'vd-b'),
        0,
        [],
        'proxy',
      );
      const b = new VolumeClient(`127.0.0.1:${vdB.port}`);
      clients.push(b);
      assert.ok((await b.vdiskInfo('disk')).stats !== undefined, 'B opened the vDisk');

      // A goes on writing whole 256 KiB runs: its SCOs fill and upload, the upload is fenced,
      // and from then on it must acknowledge nothing.
      const run = 256 * KiB;
      let firstError: unknown;
      let ackedAfterError = 0;
      let acked = 0;
      const running = new Set<Promise<void>>();
      for (let i = 0; i < (3 * SCO_BYTES) / run; i += 1) {
        while (running.size >= 8) await Promise.race(running);
        const offset = int(size / run) * run;
        const rec = model.issue(offset / UNIT, run / UNIT);
        const errorBefore = firstError !== undefined;
        const p = ioA.write(offset, pattern(rec.seq, offset / UNIT, run / UNIT)).then(
          () => {
            acked += 1;
            if (errorBefore) ackedAfterError += 1;
          },
          (err: unknown) => {
            firstError ??= err;
          },
        );
        running.add(p);
        void p.then(() => running.delete(p));
      }
      await Promise.all(running);
      await ioA.flush().then(
        () => {
          if (firstError !== undefined) ackedAfterError += 1;
        },
        (err: unknown) => {
          firstError ??= err;
        },
      );
      ioA.cancel();
      assert.ok(
        isShaleError(firstError, 'VD_FENCED'),
        `A's writes after B took over must fail with VD_FENCED (${acked} acknowledged); got ${String(firstError)}`,
      );
      assert.equal(ackedAfterError, 0, 'A acknowledged requests issued after it was fenced');

      // B sees the vDisk as synced: nothing A wrote after the takeover.
      const ioB = b.openIo('disk');
      await expectExactly(ioB, size, asSynced, "B's view after fencing A");
      // And B is a working owner.
      const bModel = new DiskModel();
      bModel.nextSeq = model.nextSeq;
      bModel.current.set(asSynced);
      await writeRandom(ioB, bModel, int, size, 20);
      await expectExactly(ioB, size, bModel.current, "B's own writes");
      await ioB.close();
    } finally {
      for (const client of clients) client.close();
      await cluster.stop();
    }
  },
);
