// Proves hostile input cannot hurt the NBD server: seeded random bytes and mutated handshakes and requests over many connections never throw, never leave a connection hanging after the client half-closes, and never disturb a well-behaved client whose every read is checked against a model (SHALE_SEED replays, SHALE_FUZZ_MS sets the duration).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as setImmediatePromise, setTimeout as sleep } from 'node:timers/promises';
import { type Random, seededRandom } from '@shale/testing';
import { Registry } from 'prom-client';
import { EdgeMetrics } from './edge-metrics.js';
import { MemoryExports } from './memory-exports.js';
import {
  BASE_ALLOCATION,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
} from './nbd-protocol.js';
import { NbdServer } from './nbd-server.js';
import {
  infoPayload,
  metaContextPayload,
  optionHeader,
  RawNbdClient,
  requestHeader,
} from './testing/raw-nbd-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SEED = Number(process.env.SHALE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const FUZZ_MS = Number(process.env.SHALE_FUZZ_MS ?? 7_000);
/** Fuzz connections open at once. */
const FUZZ_WORKERS = 8;
/** How long a fuzz connection may stay open after its client half-closed. */
const CLOSE_AFTER_HALF_CLOSE_MS = 3_000;
/** The fuzzer's exports (it may name these); the good client's is never named by it. */
const FUZZ_DISK = 'fuzz';
const FUZZ_DISK_BYTES = 1 * MiB;
const FUZZ_RO = 'fuzz-ro';
const GOOD_DISK = 'good-client-disk';
const GOOD_DISK_BYTES = 2 * MiB;
const PAGE_BYTES = 4096;

/** Helpers over one Random: every fuzz case draws from its own, seeded by (SEED, case). */
class Dice {
  constructor(readonly random: Random) {}
  int(n: number): number {
    return Math.floor(this.random() * n);
  }
  chance(p: number): boolean {
    return this.random() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 1) out[i] = this.int(256);
    return out;
  }
  /** A u32 that breaks length fields: 0, off by one, huge, above every limit. */
  nastyU32(near: number): number {
    return (
      this.pick([
        0,
        1,
        near - 1,
        near + 1,
        0xffff_ffff,
        0x7fff_ffff,
        0x8000_0000,
        32 * MiB + 1,
        64 * KiB + 1,
        4096,
        this.int(0x1_0000_0000),
      ]) >>> 0
    );
  }
}

// ------------------------------------------------------------------ generators

const NAMES = [FUZZ_DISK, FUZZ_RO, '', 'no-such-disk', 'f', 'fuzz\u00e9'];

function randomName(dice: Dice): string {
  return dice.chance(0.85) ? dice.pick(NAMES) : dice.bytes(dice.int(12)).toString('latin1');
}

function optionMessage(dice: Dice): Buffer {
  const withHeader = (option: number, data: Buffer) =>
    Buffer.concat([optionHeader(option, data.length), data]);
  const infoTypes = () =>
    Array.from({ length: dice.int(5) }, () =>
      dice.pick([NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE, 77]),
    );
  const queries = () =>
    Array.from({ length: dice.int(4) }, () =>
      dice.pick([BASE_ALLOCATION, 'base:', 'x-fuzz:thing', '', 'qemu:dirty-bitmap:x']),
    );
  switch (dice.int(13)) {
    case 0:
      return withHeader(NBD_OPT_EXPORT_NAME, Buffer.from(randomName(dice), 'latin1'));
    case 1:
      return withHeader(NBD_OPT_ABORT, Buffer.alloc(0));
    case 2:
      return withHeader(NBD_OPT_LIST, dice.chance(0.8) ? Buffer.alloc(0) : dice.bytes(8));
    case 3:
      return withHeader(NBD_OPT_STARTTLS, Buffer.alloc(0));
    case 4:
      return withHeader(NBD_OPT_INFO, infoPayload(randomName(dice), infoTypes()));
    case 5:
      return withHeader(NBD_OPT_GO, infoPayload(randomName(dice), infoTypes()));
    case 6:
      return withHeader(NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    case 7:
      return withHeader(NBD_OPT_LIST_META_CONTEXT, metaContextPayload(randomName(dice), queries()));
    case 8:
      return withHeader(NBD_OPT_SET_META_CONTEXT, metaContextPayload(randomName(dice), queries()));
    case 9:
      return withHeader(NBD_OPT_EXTENDED_HEADERS, Buffer.alloc(0));
    case 10:
      return withHeader(dice.int(0x1_0000_0000), dice.bytes(dice.int(64)));
    case 11:
      // A header that promises far more data than follows.
      return Buffer.concat([
        optionHeader(
          dice.pick([NBD_OPT_LIST, NBD_OPT_GO, NBD_OPT_EXPORT_NAME, 99]),
          dice.nastyU32(64),
        ),
        dice.bytes(dice.int(256)),
      ]);
    default:
      return withHeader(NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
  }
}

/** A valid way into transmission on the fuzz export (blind: replies are not awaited). */
function validHandshake(dice: Dice, name = FUZZ_DISK): Buffer {
  const parts: Buffer[] = [];
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (dice.chance(0.5) ? NBD_FLAG_C_NO_ZEROES : 0), 0);
  parts.push(flags);
  if (dice.chance(0.7)) {
    parts.push(optionHeader(NBD_OPT_STRUCTURED_REPLY, 0));
    if (dice.chance(0.7)) {
      const payload = metaContextPayload(name, [BASE_ALLOCATION]);
      parts.push(optionHeader(NBD_OPT_SET_META_CONTEXT, payload.length), payload);
    }
  }
  if (dice.chance(0.8)) {
    const payload = infoPayload(name, dice.chance(0.5) ? [] : [NBD_INFO_BLOCK_SIZE]);
    parts.push(optionHeader(NBD_OPT_GO, payload.length), payload);
  } else {
    parts.push(optionHeader(NBD_OPT_EXPORT_NAME, name.length), Buffer.from(name));
  }
  return Buffer.concat(parts);
}

function requestMessage(dice: Dice): Buffer {
  const command = dice.chance(0.9)
    ? dice.pick([
        NBD_CMD_READ,
        NBD_CMD_READ,
        NBD_CMD_WRITE,
        NBD_CMD_WRITE,
        NBD_CMD_FLUSH,
        NBD_CMD_TRIM,
        NBD_CMD_WRITE_ZEROES,
        NBD_CMD_BLOCK_STATUS,
        5,
        8,
      ])
    : dice.int(0x1_0000);
  const flags = dice.chance(0.6)
    ? dice.pick([0, NBD_CMD_FLAG_FUA])
    : dice.chance(0.7)
      ? dice.pick([NBD_CMD_FLAG_NO_HOLE, 1 << 2, 1 << 3, 1 << 4, (1 << 4) | NBD_CMD_FLAG_NO_HOLE])
      : dice.int(0x1_0000);
  const offsetBytes = dice.chance(0.85)
    ? BigInt(dice.int(FUZZ_DISK_BYTES))
    : dice.pick([BigInt(FUZZ_DISK_BYTES), 2n ** 63n, 2n ** 64n - 1n, 2n ** 53n, 2n ** 32n]);
  const lengthBytes = dice.chance(0.85) ? dice.int(16 * KiB) : dice.nastyU32(4096);
  const handle = BigInt(dice.int(0x1_0000_0000)) << BigInt(dice.int(33));
  const header = requestHeader(command, flags, handle, offsetBytes, lengthBytes);
  if (command !== NBD_CMD_WRITE) return header;
  // A write's payload: usually all of it, sometimes short (the server waits for the rest).
  const payloadBytes =
    lengthBytes <= 16 * KiB && dice.chance(0.9)
      ? lengthBytes
      : dice.int(Math.min(lengthBytes, 4096) + 1);
  return Buffer.concat([header, dice.bytes(payloadBytes)]);
}

function mutate(dice: Dice, input: Buffer, donor: Buffer): Buffer {
  let bytes: Buffer = Buffer.from(input);
  const rounds = 1 + dice.int(4);
  for (let round = 0; round < rounds; round += 1) {
    if (bytes.length === 0) bytes = dice.bytes(1 + dice.int(32));
    const at = dice.int(bytes.length);
    switch (dice.int(8)) {
      case 0:
        bytes[at] = (bytes[at] as number) ^ (1 << dice.int(8));
        break;
      case 1:
        bytes[at] = dice.int(256);
        break;
      case 2:
        bytes = bytes.subarray(0, at);
        break;
      case 3: {
        const end = Math.min(bytes.length, at + 1 + dice.int(16));
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(end)]);
        break;
      }
      case 4:
        bytes = Buffer.concat([
          bytes.subarray(0, at),
          dice.bytes(1 + dice.int(16)),
          bytes.subarray(at),
        ]);
        break;
      case 5: {
        // Splice in a piece of another message.
        const from = dice.int(Math.max(1, donor.length));
        const piece = donor.subarray(from, from + 1 + dice.int(64));
        bytes = Buffer.concat([bytes.subarray(0, at), piece, bytes.subarray(at)]);
        break;
      }
      case 6: {
        // A wrong length where a length field could be (u32 aligned).
        const aligned = at - (at % 4);
        if (aligned + 4 <= bytes.length) {
          bytes.writeUInt32BE(dice.nastyU32(bytes.readUInt32BE(aligned)), aligned);
        }
        break;
      }
      default: {
        // Repeat a range.
        const end = Math.min(bytes.length, at + 1 + dice.int(40));
        bytes = Buffer.concat([
          bytes.subarray(0, end),
          bytes.subarray(at, end),
          bytes.subarray(end),
        ]);
      }
    }
  }
  return bytes;
}

type Scenario = 'random-bytes' | 'mutated-handshake' | 'requests' | 'mutated-requests';

interface FuzzCase {
  readonly scenario: Scenario;
  readonly bytes: Buffer;
  /** Where to cut the bytes into separately sent pieces (exercises partial parsing). */
  readonly cuts: readonly number[];
  /** After sending: wait this long for the server to close, then half-close. */
  readonly lingerMs: number;
  /** Destroy abruptly instead of half-closing. */
  readonly abrupt: boolean;
}

/** Case n of a seed: the same bytes every time, whatever ran before it. */
function fuzzCase(seed: number, n: number): FuzzCase {
  const dice = new Dice(seededRandom((seed ^ Math.imul(n + 1, 0x9e3779b9)) >>> 0));
  const scenario = dice.pick<Scenario>([
    'random-bytes',
    'mutated-handshake',
    'requests',
    'requests',
    'mutated-requests',
  ]);
  let bytes: Buffer;
  if (scenario === 'random-bytes') {
    bytes = dice.bytes(dice.int(dice.chance(0.5) ? 64 : 4096));
  } else if (scenario === 'mutated-handshake') {
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(
      dice.chance(0.8) ? NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES : dice.int(8),
      0,
    );
    const options = Array.from({ length: 1 + dice.int(6) }, () => optionMessage(dice));
    const clean = Buffer.concat([flags, ...options]);
    bytes = dice.chance(0.8) ? mutate(dice, clean, optionMessage(dice)) : clean;
  } else {
    const handshake = validHandshake(dice, dice.chance(0.9) ? FUZZ_DISK : FUZZ_RO);
    const requests = Buffer.concat(
      Array.from({ length: 1 + dice.int(24) }, () => requestMessage(dice)),
    );
    if (scenario === 'requests') {
      bytes = Buffer.concat([handshake, requests]);
    } else {
      const mutated = mutate(dice, requests, requestMessage(dice));
      bytes = Buffer.concat([
        dice.chance(0.8) ? handshake : mutate(dice, handshake, requests),
        mutated,
      ]);
    }
    if (dice.chance(0.15)) {
      const disc = requestHeader(NBD_CMD_DISC, 0, 0n, 0n, 0);
      bytes = Buffer.concat([
        bytes,
        disc,
        dice.chance(0.5) ? requestMessage(dice) : Buffer.alloc(0),
      ]);
    }
  }
  return {
    scenario,
    bytes,
    cuts: Array.from({ length: dice.int(32) }, () => dice.int(bytes.length + 1)).sort(
      (a, b) => a - b,
    ),
    lingerMs: dice.int(60),
    abrupt: dice.chance(0.2),
  };
}

// ------------------------------------------------------------------ the well-behaved client

interface GoodClientStats {
  ops: number;
  reconnects: number;
}

/** Writes, reads (checked against a model), trims, zeroes and flushes until `until`. */
async function runGoodClient(port: number, until: number, dice: Dice): Promise<GoodClientStats> {
  const model = Buffer.alloc(GOOD_DISK_BYTES);
  const stats: GoodClientStats = { ops: 0, reconnects: 0 };
  let client = await RawNbdClient.connect(port);
  await client.handshake({ name: GOOD_DISK, structured: true, metaContexts: [BASE_ALLOCATION] });
  try {
    while (Date.now() < until) {
      const lengthBytes = 1 + dice.int(64 * KiB);
      const offsetBytes = dice.int(GOOD_DISK_BYTES - lengthBytes + 1);
      const op = dice.int(10);
      if (op < 4) {
        const data = dice.bytes(lengthBytes);
        const reply = await client.nbdWrite(
          offsetBytes,
          data,
          dice.chance(0.2) ? NBD_CMD_FLAG_FUA : 0,
        );
        assert.equal(reply.error, 0, `good write: ${reply.errorMessage}`);
        data.copy(model, offsetBytes);
      } else if (op < 8) {
        const reply = await client.nbdRead(offsetBytes, lengthBytes);
        assert.equal(reply.error, 0, `good read: ${reply.errorMessage}`);
        const want = model.subarray(offsetBytes, offsetBytes + lengthBytes);
        if (!reply.data.equals(want)) {
          assert.fail(`good client: read ${offsetBytes}+${lengthBytes} differs from the model`);
        }
      } else if (op === 8) {
        // Page-aligned trims and zeroes read back as zeros in the memory export.
        const pages = 1 + dice.int(8);
        const at = dice.int(GOOD_DISK_BYTES / PAGE_BYTES - pages + 1) * PAGE_BYTES;
        const reply = dice.chance(0.5)
          ? await client.nbdTrim(at, pages * PAGE_BYTES)
          : await client.nbdWriteZeroes(
              at,
              pages * PAGE_BYTES,
              dice.chance(0.5) ? NBD_CMD_FLAG_NO_HOLE : 0,
            );
        assert.equal(reply.error, 0, `good trim/zero: ${reply.errorMessage}`);
        model.fill(0, at, at + pages * PAGE_BYTES);
      } else if (dice.chance(0.8)) {
        assert.equal((await client.nbdFlush()).error, 0, 'good flush');
      } else {
        // A fresh connection must still get through the handshake under fuzz.
        client.disconnect();
        assert.equal(await client.waitClosed(CLOSE_AFTER_HALF_CLOSE_MS), true, 'DISC closes');
        client = await RawNbdClient.connect(port);
        await client.handshake({ name: GOOD_DISK, structured: dice.chance(0.5) });
        stats.reconnects += 1;
      }
      stats.ops += 1;
      if (dice.chance(0.3)) await sleep(dice.int(3));
    }
    // The end state, whole.
    for (let at = 0; at < GOOD_DISK_BYTES; at += MiB) {
      const reply = await client.nbdRead(at, MiB);
      assert.equal(reply.error, 0);
      assert.ok(reply.data.equals(model.subarray(at, at + MiB)), `final read at ${at} differs`);
    }
  } finally {
    client.destroy();
  }
  return stats;
}

// ------------------------------------------------------------------ the test

interface FuzzStats {
  cases: number;
  closedByServer: number;
  closedAfterHalfClose: number;
  destroyedByFuzzer: number;
  bytesSent: number;
  bytesReceived: number;
  byScenario: Record<Scenario, number>;
}

async function runCase(port: number, n: number, stats: FuzzStats, hangs: string[]): Promise<void> {
  const fuzz = fuzzCase(SEED, n);
  stats.cases += 1;
  stats.byScenario[fuzz.scenario] += 1;
  const client = await RawNbdClient.connect(port, { discard: true });
  try {
    let from = 0;
    for (const to of [...fuzz.cuts, fuzz.bytes.length]) {
      if (client.closed) break;
      client.send(fuzz.bytes.subarray(from, to));
      from = to;
      // Each piece its own packet: the server sees messages split anywhere.
      await setImmediatePromise();
    }
    stats.bytesSent += fuzz.bytes.length;
    if (await client.waitClosed(fuzz.lingerMs)) {
      stats.closedByServer += 1;
    } else if (fuzz.abrupt) {
      stats.destroyedByFuzzer += 1;
    } else {
      // Half-closed, the server must finish what it has and close within a bounded time.
      client.end();
      if (await client.waitClosed(CLOSE_AFTER_HALF_CLOSE_MS)) stats.closedAfterHalfClose += 1;
      else hangs.push(`case ${n} (${fuzz.scenario}) stayed open after the half-close`);
    }
  } finally {
    stats.bytesReceived += client.receivedBytes;
    client.destroy();
  }
}

test('fuzz: random and mutated handshakes and requests over many connections', async () => {
  console.log(`nbd fuzz: SHALE_SEED=${SEED} SHALE_FUZZ_MS=${FUZZ_MS}`);
  const uncaught: string[] = [];
  const onUncaught = (err: unknown) => {
    uncaught.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
  };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);

  const exports = new MemoryExports();
  exports.add(FUZZ_DISK, FUZZ_DISK_BYTES);
  exports.add(FUZZ_RO, 256 * KiB, { readOnly: true });
  exports.add(GOOD_DISK, GOOD_DISK_BYTES);
  const registry = new Registry();
  const server = await NbdServer.start({
    provider: exports,
    metrics: new EdgeMetrics(registry),
    port: 0,
    handshakeIdleTimeoutMs: 2_000,
  });
  const stats: FuzzStats = {
    cases: 0,
    closedByServer: 0,
    closedAfterHalfClose: 0,
    destroyedByFuzzer: 0,
    bytesSent: 0,
    bytesReceived: 0,
    byScenario: { 'random-bytes': 0, 'mutated-handshake': 0, requests: 0, 'mutated-requests': 0 },
  };
  const hangs: string[] = [];
  const until = Date.now() + FUZZ_MS;
  let next = 0;
  try {
    const worker = async () => {
      while (Date.now() < until) {
        const n = next;
        next += 1;
        await runCase(server.port, n, stats, hangs);
      }
    };
    const [good] = await Promise.all([
      runGoodClient(server.port, until, new Dice(seededRandom(SEED ^ 0x600d))),
      ...Array.from({ length: FUZZ_WORKERS }, () => worker()),
    ]);
    console.log(
      `nbd fuzz: ${JSON.stringify(stats)}; good client ${good.ops} ops, ${good.reconnects} reconnects`,
    );

    assert.deepEqual(hangs, [], `SHALE_SEED=${SEED}`);
    assert.ok(good.ops > 100, `the good client got only ${good.ops} ops through`);
    // Every connection is released once its client is gone.
    const deadline = Date.now() + 2_000;
    while (server.connectionCount > 0 && Date.now() < deadline) await sleep(20);
    assert.equal(server.connectionCount, 0, `connections left open (SHALE_SEED=${SEED})`);
    // The fuzz reached both the handshake's error paths and the transmission phase.
    const metrics = await registry.getMetricsAsJSON();
    const sum = (
      name: string,
      match: (labels: Partial<Record<string, string | number>>) => boolean,
    ) =>
      (metrics.find((m) => m.name === name)?.values ?? [])
        .filter((v) => match(v.labels))
        .reduce((total, v) => total + v.value, 0);
    const fuzzRequests = sum('shale_edge_requests_total', (l) => l.export === FUZZ_DISK);
    const violations = sum('shale_edge_protocol_errors_total', (l) => l.kind === 'violation');
    const refused = sum('shale_edge_protocol_errors_total', (l) => l.kind === 'refused');
    console.log(
      `nbd fuzz: ${fuzzRequests} requests served, ${refused} refused, ${violations} violations`,
    );
    assert.ok(stats.cases > 50, `only ${stats.cases} fuzz cases ran`);
    assert.ok(fuzzRequests > 0, 'no fuzz request reached the export');
    assert.ok(refused > 0 && violations > 0, 'the fuzz never hit a refusal or a violation');
    // And the server still serves a new client.
    const last = await RawNbdClient.connect(server.port);
    await last.handshake({ name: GOOD_DISK });
    assert.equal((await last.nbdRead(0, 4096)).error, 0);
    last.destroy();
  } finally {
    await server.close(1_000);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
  assert.deepEqual(uncaught, [], `uncaught errors (SHALE_SEED=${SEED})`);
});
