// Proves ASD crash safety with a real daemon killed by SIGKILL during a stream of puts, overwrites and deletes: every acknowledged write survives intact, calls are all-or-nothing, no half-written object is ever visible, orphans are swept. Seed: SHALE_SEED.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AsdClient, asdConstants } from '@shale/asd';
import { seededRandom } from '@shale/testing';
import { type ShaleProcess, startShale } from './support/shale-process.js';

const seed = Number(process.env.SHALE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const ROUNDS = Number(process.env.SHALE_CRASH_ROUNDS ?? 4);
const WRITERS = 12;

/** One state a key can be in: its value's sha256 and size, or absent. */
interface KeyState {
  readonly hash: string | null;
  readonly sizeBytes: number;
}
const ABSENT: KeyState = { hash: null, sizeBytes: 0 };

interface KeyModel {
  /** The state as of the last acknowledged call that touched the key. */
  acked: KeyState;
  /** The state a call in flight at the crash would leave, with that call's id. */
  pending: { state: KeyState; callId: number } | undefined;
  busy: boolean;
}

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

let dir: string;
let proc: ShaleProcess | undefined;
after(async () => {
  await proc?.kill9();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

test(
  `acknowledged puts survive kill -9 intact; calls are atomic (seed ${seed})`,
  { timeout: 240_000 },
  async (t) => {
    t.diagnostic(`seed ${seed}: replay with SHALE_SEED=${seed}`);
    const random = seededRandom(seed);
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-crash-'));
    const asdDir = path.join(dir, 'asd');
    const model = new Map<string, KeyModel>();
    let nextKey = 0;
    let nextCall = 0;
    let totalAcked = 0;
    let totalInFlight = 0;
    /** Calls in flight at the crash, by id: their keys, to check all-or-nothing. */
    const inFlightCalls = new Map<number, string[]>();

    const sizeOf = (): number =>
      random() < 0.5
        ? 1 + Math.floor(random() * asdConstants.INLINE_MAX_BYTES)
        : asdConstants.INLINE_MAX_BYTES + 1 + Math.floor(random() * 2 * 1024 * 1024);

    async function verify(client: AsdClient, phase: string): Promise<void> {
      const keys = [...model.keys()];
      for (let i = 0; i < keys.length; i += 64) {
        const batch = keys.slice(i, i + 64);
        const results = await client.get(batch.map((key) => Buffer.from(key)));
        batch.forEach((key, index) => {
          const entry = model.get(key) as KeyModel;
          const result = results[index];
          assert.ok(result !== undefined);
          let observed: KeyState;
          if (result.ok)
            observed = { hash: sha(result.value.value), sizeBytes: result.value.value.length };
          else {
            assert.equal(
              result.error.code,
              'ASD_NOT_FOUND',
              `${phase}: ${key}: ${result.error.message} (seed ${seed})`,
            );
            observed = ABSENT;
          }
          const matchesAcked = observed.hash === entry.acked.hash;
          const matchesPending =
            entry.pending !== undefined && observed.hash === entry.pending.state.hash;
          assert.ok(
            matchesAcked || matchesPending,
            `${phase}: key ${key} holds ${observed.hash ?? 'nothing'} (${observed.sizeBytes} B); acknowledged ${entry.acked.hash ?? 'nothing'}, in flight ${entry.pending?.state.hash ?? '-'} (seed ${seed})`,
          );
          if (entry.pending !== undefined) {
            // The call's fate is now known: record which way it went, per key.
            const applied = matchesPending && !matchesAcked;
            const seen = callOutcomes.get(entry.pending.callId) ?? new Set<string>();
            if (entry.pending.state.hash !== entry.acked.hash)
              seen.add(applied ? 'applied' : 'not-applied');
            callOutcomes.set(entry.pending.callId, seen);
            entry.acked = observed;
            entry.pending = undefined;
          }
        });
      }
      for (const [callId, outcomes] of callOutcomes) {
        assert.ok(
          outcomes.size <= 1,
          `${phase}: call ${callId} was half applied: keys ${inFlightCalls.get(callId)?.join(', ')} (seed ${seed})`,
        );
      }
      callOutcomes.clear();
      inFlightCalls.clear();
      // No phantom objects: exactly the keys the model holds are listed.
      const listed = new Set<string>();
      for await (const entry of client.listAll()) listed.add(entry.key.toString());
      const expected = [...model]
        .filter(([, entry]) => entry.acked.hash !== null)
        .map(([key]) => key);
      assert.deepEqual(
        [...listed].sort(),
        expected.sort(),
        `${phase}: listed keys differ from the model (seed ${seed})`,
      );
    }
    const callOutcomes = new Map<number, Set<string>>();

    async function writer(client: AsdClient, stop: { now: boolean }): Promise<void> {
      while (!stop.now) {
        const callId = nextCall++;
        const roll = random();
        const existing = [...model]
          .filter(([, entry]) => !entry.busy && entry.acked.hash !== null)
          .map(([key]) => key);
        let keys: string[];
        let op: 'put' | 'delete';
        if (roll < 0.15 && existing.length > 0) {
          op = 'delete';
          keys = [existing[Math.floor(random() * existing.length)] as string];
        } else if (roll < 0.35 && existing.length > 0) {
          op = 'put';
          keys = [existing[Math.floor(random() * existing.length)] as string];
        } else {
          op = 'put';
          const count = random() < 0.3 ? 2 + Math.floor(random() * 3) : 1;
          keys = Array.from({ length: count }, () => `obj/${String(nextKey++).padStart(6, '0')}`);
          for (const key of keys)
            model.set(key, { acked: ABSENT, pending: undefined, busy: false });
        }
        const values = keys.map(() => (op === 'put' ? randomBytes(sizeOf()) : Buffer.alloc(0)));
        keys.forEach((key, index) => {
          const entry = model.get(key) as KeyModel;
          entry.busy = true;
          const value = values[index] as Buffer;
          entry.pending = {
            callId,
            state: op === 'put' ? { hash: sha(value), sizeBytes: value.length } : ABSENT,
          };
        });
        inFlightCalls.set(callId, keys);
        try {
          if (op === 'put')
            await client.put(
              keys.map((key, index) => ({ key: Buffer.from(key), value: values[index] as Buffer })),
            );
          else await client.delete(keys.map((key) => Buffer.from(key)));
          // Acknowledged: from here on the state must survive anything.
          for (const key of keys) {
            const entry = model.get(key) as KeyModel;
            entry.acked = (entry.pending as { state: KeyState }).state;
            entry.pending = undefined;
            entry.busy = false;
          }
          inFlightCalls.delete(callId);
          totalAcked += 1;
        } catch {
          // The daemon died under this call: its outcome is unknown until verify() looks.
          totalInFlight += 1;
          return;
        }
      }
    }

    for (let round = 0; round < ROUNDS; round += 1) {
      proc = await startShale([
        'asd',
        'serve',
        '--dir',
        asdDir,
        '--port',
        '0',
        '--node-id',
        'crash-node',
        '--reserve-bytes',
        '0',
      ]);
      const client = new AsdClient(`127.0.0.1:${proc.port}`, { deadlineMs: 30_000 });
      await verify(client, `after crash ${round}`);
      for (const entry of model.values()) entry.busy = false;
      const stop = { now: false };
      const writers = Array.from({ length: WRITERS }, () => writer(client, stop));
      await sleep(400 + Math.floor(random() * 1200));
      await proc.kill9();
      stop.now = true;
      await Promise.all(writers);
      client.close();
    }

    // Final: restart, verify, let the orphan sweep finish, stop cleanly, and count files.
    proc = await startShale([
      'asd',
      'serve',
      '--dir',
      asdDir,
      '--port',
      '0',
      '--node-id',
      'crash-node',
      '--reserve-bytes',
      '0',
    ]);
    let client = new AsdClient(`127.0.0.1:${proc.port}`, { deadlineMs: 30_000 });
    await verify(client, 'final restart');
    client.close();
    assert.equal(await proc.stop(), 0);
    proc = await startShale([
      'asd',
      'serve',
      '--dir',
      asdDir,
      '--port',
      '0',
      '--node-id',
      'crash-node',
    ]);
    client = new AsdClient(`127.0.0.1:${proc.port}`);
    await verify(client, 'clean restart');
    let fileBacked = 0;
    for await (const entry of client.listAll())
      if (entry.sizeBytes > asdConstants.INLINE_MAX_BYTES) fileBacked += 1;
    client.close();
    assert.equal(await proc.stop(), 0);
    proc = undefined;
    let files = 0;
    for (const fan of await fs.readdir(path.join(asdDir, 'objects')))
      files += (await fs.readdir(path.join(asdDir, 'objects', fan))).length;
    assert.equal(
      files,
      fileBacked,
      `value files on disk (${files}) = file-backed objects (${fileBacked}): no orphans, none lost`,
    );
    t.diagnostic(
      `${ROUNDS} kills, ${totalAcked} acknowledged calls, ${totalInFlight} in flight at a kill, ${model.size} keys, ${fileBacked} value files`,
    );
    assert.ok(totalAcked > 20, `the writers got work done before the kills (${totalAcked} calls)`);
  },
);
