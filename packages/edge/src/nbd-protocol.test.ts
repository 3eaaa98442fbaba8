// Proves the NBD protocol core (greeting, option haggling, transmission, checks, limits, backpressure, metrics) by driving NbdServer + MemoryExports over real TCP on 127.0.0.1 with a raw client that checks every byte, reply type and errno it gets back.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Registry } from 'prom-client';
import type { BlockExport, ExportInfo, ExportProvider } from './block-export.js';
import {
  NBD_CONNECTION_MAX_IN_FLIGHT,
  NBD_HANDSHAKE_MAX_OPTIONS,
  NBD_MAX_PAYLOAD_BYTES,
  NBD_OPTION_MAX_BYTES,
} from './constants.js';
import { EdgeMetrics } from './edge-metrics.js';
import { MemoryExports } from './memory-exports.js';
import {
  BASE_ALLOCATION,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_RESIZE,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_IHAVEOPT,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
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
  NBD_OPTION_REPLY_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NbdErrno,
} from './nbd-protocol.js';
import { NbdServer } from './nbd-server.js';
import {
  ConnectionClosedError,
  infoPayload,
  isReplyTo,
  metaContextPayload,
  type NbdReply,
  type OptionReply,
  optionHeader,
  parseInfoReplies,
  RawNbdClient,
  requestHeader,
} from './testing/raw-nbd-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const DISK = 'disk';
const DISK_BYTES = 4 * MiB;
const RO = 'ro';
const RO_BYTES = 1 * MiB;
/** What the server advertises for a writable export without structured replies. */
const WRITABLE_FLAGS =
  NBD_FLAG_HAS_FLAGS |
  NBD_FLAG_SEND_FLUSH |
  NBD_FLAG_SEND_FUA |
  NBD_FLAG_SEND_TRIM |
  NBD_FLAG_SEND_WRITE_ZEROES |
  NBD_FLAG_SEND_FAST_ZERO |
  NBD_FLAG_CAN_MULTI_CONN;
const READ_ONLY_FLAGS =
  NBD_FLAG_HAS_FLAGS |
  NBD_FLAG_READ_ONLY |
  NBD_FLAG_SEND_FLUSH |
  NBD_FLAG_SEND_FUA |
  NBD_FLAG_CAN_MULTI_CONN;

/** Deterministic bytes (a test can say which offset a byte came from). */
function pattern(lengthBytes: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < lengthBytes; i += 1) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * MemoryExports with reads that can be held: a read starting at a held offset (or any
 * read, with holdAll) waits until the test releases it. Lets a test keep requests in
 * flight and choose the order they finish in. Opens can be held too (a slow provider).
 */
class GatedExports implements ExportProvider {
  private readonly gates = new Map<number, Promise<void>>();
  private allGate: Promise<void> | undefined;
  private openGate: Promise<void> | undefined;
  readsStarted = 0;

  constructor(readonly inner: MemoryExports) {}

  /** Reads at offsetBytes wait until the returned function is called. */
  hold(offsetBytes: number): () => void {
    let release = (): void => undefined;
    this.gates.set(
      offsetBytes,
      new Promise<void>((resolve) => {
        release = () => {
          this.gates.delete(offsetBytes);
          resolve();
        };
      }),
    );
    return release;
  }

  /** Every read waits until the returned function is called. */
  holdAll(): () => void {
    let release = (): void => undefined;
    this.allGate = new Promise<void>((resolve) => {
      release = () => {
        this.allGate = undefined;
        resolve();
      };
    });
    return release;
  }

  list(): Promise<ExportInfo[]> {
    return this.inner.list();
  }
  info(name: string): Promise<ExportInfo> {
    return this.inner.info(name);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  /** Opening an export waits until the returned function is called (a slow provider). */
  holdOpens(): () => void {
    let release = (): void => undefined;
    this.openGate = new Promise<void>((resolve) => {
      release = () => {
        this.openGate = undefined;
        resolve();
      };
    });
    return release;
  }

  async open(name: string): Promise<BlockExport> {
    await this.openGate;
    const exp = await this.inner.open(name);
    return {
      ...exp,
      read: async (offsetBytes, lengthBytes) => {
        this.readsStarted += 1;
        await this.allGate;
        await this.gates.get(offsetBytes);
        return exp.read(offsetBytes, lengthBytes);
      },
    };
  }
}

interface Harness {
  readonly server: NbdServer;
  readonly exports: MemoryExports;
  readonly gated: GatedExports;
  readonly registry: Registry;
  readonly port: number;
  connect(options?: { discard?: boolean }): Promise<RawNbdClient>;
  /** Connects and negotiates (GO) an export. */
  open(
    name?: string,
    options?: { structured?: boolean; metaContexts?: readonly string[] },
  ): Promise<RawNbdClient>;
  close(): Promise<void>;
}

async function startHarness(
  options: {
    handshakeIdleTimeoutMs?: number;
    maxConnections?: number;
    defaultExport?: string;
  } = {},
): Promise<Harness> {
  const exports = new MemoryExports();
  exports.add(DISK, DISK_BYTES);
  exports.add(RO, RO_BYTES, { readOnly: true });
  exports.add('other', 64 * KiB);
  const gated = new GatedExports(exports);
  const registry = new Registry();
  const server = await NbdServer.start({
    provider: gated,
    metrics: new EdgeMetrics(registry),
    port: 0,
    host: '127.0.0.1',
    ...(options.defaultExport === undefined ? {} : { defaultExport: options.defaultExport }),
    ...(options.maxConnections === undefined ? {} : { maxConnections: options.maxConnections }),
    ...(options.handshakeIdleTimeoutMs === undefined
      ? {}
      : { handshakeIdleTimeoutMs: options.handshakeIdleTimeoutMs }),
  });
  const clients: RawNbdClient[] = [];
  const connect = async (connectOptions: { discard?: boolean } = {}) => {
    const client = await RawNbdClient.connect(server.port, connectOptions);
    clients.push(client);
    return client;
  };
  return {
    server,
    exports,
    gated,
    registry,
    port: server.port,
    connect,
    open: async (name = DISK, openOptions = {}) => {
      const client = await connect();
      await client.handshake({
        name,
        structured: openOptions.structured ?? false,
        ...(openOptions.metaContexts === undefined
          ? {}
          : { metaContexts: openOptions.metaContexts }),
      });
      return client;
    },
    close: async () => {
      for (const client of clients) client.destroy();
      await server.close(1_000);
    },
  };
}

/** Greeting read, fixed-newstyle client flags sent: ready for options. */
async function haggling(
  h: Harness,
  clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE,
): Promise<RawNbdClient> {
  const client = await h.connect();
  await client.readGreeting();
  client.sendClientFlags(clientFlags);
  return client;
}

function lastReply(replies: readonly OptionReply[]): OptionReply {
  const last = replies[replies.length - 1];
  assert.ok(last !== undefined, 'no option reply');
  return last;
}

/** Sums a counter's values over the series matching `labels`. */
async function counter(
  registry: Registry,
  name: string,
  labels: Readonly<Record<string, string>>,
): Promise<number> {
  const metrics = await registry.getMetricsAsJSON();
  const metric = metrics.find((m) => m.name === name);
  if (metric === undefined) return 0;
  let total = 0;
  for (const value of metric.values) {
    const matches = Object.entries(labels).every(([key, want]) => value.labels[key] === want);
    if (matches) total += value.value;
  }
  return total;
}

function assertOk(reply: NbdReply, what: string): void {
  assert.equal(reply.error, 0, `${what}: error ${reply.error} ${reply.errorMessage}`);
}

/** Polls a count until it stops changing (the server stalled), and returns it. */
async function settle(count: () => Promise<number>): Promise<number> {
  let last = -1;
  for (;;) {
    await sleep(150);
    const now = await count();
    if (now === last) return now;
    last = now;
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ====================================================================== handshake

describe('handshake and option haggling', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    await h.close();
  });

  test('the greeting is NBDMAGIC, IHAVEOPT and exactly FIXED_NEWSTYLE | NO_ZEROES', async () => {
    const client = await h.connect();
    const bytes = await client.receive(18);
    assert.equal(bytes.readBigUInt64BE(0), NBD_MAGIC);
    assert.equal(bytes.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
    assert.equal(bytes.readBigUInt64BE(8), NBD_IHAVEOPT);
    assert.equal(bytes.subarray(8, 16).toString('latin1'), 'IHAVEOPT');
    assert.equal(bytes.readUInt16BE(16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    await sleep(50);
    assert.equal(client.buffered, 0, 'nothing more before the client flags');
    client.destroy();
  });

  test('unknown client flags close the connection without a reply', async () => {
    for (const flags of [1 << 2, 0x8000_0000, NBD_FLAG_C_FIXED_NEWSTYLE | (1 << 5)]) {
      const client = await h.connect();
      await client.readGreeting();
      client.sendClientFlags(flags);
      // An option right behind the flags must not be answered.
      client.sendOption(NBD_OPT_LIST);
      assert.equal(await client.waitClosed(2_000), true, `flags 0x${flags.toString(16)}`);
      assert.equal(client.buffered, 0);
    }
  });

  test('client flags 0 (plain newstyle) still haggle', async () => {
    const client = await haggling(h, 0);
    const replies = await client.option(NBD_OPT_LIST);
    assert.equal(lastReply(replies).type, NBD_REP_ACK);
    client.destroy();
  });

  test('NBD_OPT_LIST sends one NBD_REP_SERVER per export, then ACK', async () => {
    const client = await haggling(h);
    const replies = await client.option(NBD_OPT_LIST);
    for (const reply of replies) assert.ok(isReplyTo(reply, NBD_OPT_LIST));
    assert.equal(lastReply(replies).type, NBD_REP_ACK);
    assert.equal(lastReply(replies).data.length, 0);
    const servers = replies.slice(0, -1);
    const listed = new Map<string, string>();
    for (const reply of servers) {
      assert.equal(reply.type, NBD_REP_SERVER);
      const nameBytes = reply.data.readUInt32BE(0);
      assert.ok(nameBytes <= reply.data.length - 4);
      listed.set(
        reply.data.subarray(4, 4 + nameBytes).toString('utf8'),
        reply.data.subarray(4 + nameBytes).toString('utf8'),
      );
    }
    assert.deepEqual([...listed.keys()].sort(), [DISK, 'other', RO]);
    assert.equal(listed.get(DISK), `memory export of ${DISK_BYTES} B`);
    client.destroy();
  });

  test('NBD_OPT_LIST with data is NBD_REP_ERR_INVALID and haggling goes on', async () => {
    const client = await haggling(h);
    const replies = await client.option(NBD_OPT_LIST, Buffer.from('junk'));
    assert.equal(replies.length, 1);
    assert.ok(isReplyTo(lastReply(replies), NBD_OPT_LIST));
    assert.equal(lastReply(replies).type, NBD_REP_ERR_INVALID);
    assert.equal(lastReply(await client.option(NBD_OPT_LIST)).type, NBD_REP_ACK);
    client.destroy();
  });

  test('NBD_OPT_INFO: export size and flags, block sizes, name and description when asked', async () => {
    const client = await haggling(h);
    const replies = await client.option(
      NBD_OPT_INFO,
      infoPayload(DISK, [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE]),
    );
    for (const reply of replies) assert.ok(isReplyTo(reply, NBD_OPT_INFO));
    assert.equal(lastReply(replies).type, NBD_REP_ACK);
    const info = parseInfoReplies(replies);
    assert.deepEqual(info.export, { sizeBytes: DISK_BYTES, transmissionFlags: WRITABLE_FLAGS });
    assert.equal(
      replies.find((r) => r.type === NBD_REP_INFO && r.data.readUInt16BE(0) === NBD_INFO_EXPORT)
        ?.data.length,
      12,
    );
    assert.deepEqual(info.blockSize, {
      minimumBytes: 512,
      preferredBytes: 4096,
      maximumBytes: 32 * MiB,
    });
    assert.equal(info.name, DISK);
    assert.equal(info.description, `memory export of ${DISK_BYTES} B`);
    // Each asked-for type exactly once.
    assert.equal(info.types.filter((t) => t === NBD_INFO_BLOCK_SIZE).length, 1);
    assert.equal(info.types.filter((t) => t === NBD_INFO_EXPORT).length, 1);

    // Unasked: no name, no description.
    const plain = parseInfoReplies(await client.option(NBD_OPT_INFO, infoPayload(DISK, [])));
    assert.equal(plain.name, undefined);
    assert.equal(plain.description, undefined);
    assert.deepEqual(plain.export, { sizeBytes: DISK_BYTES, transmissionFlags: WRITABLE_FLAGS });

    // A read-only export says so, and offers no trim or zeroing.
    const ro = parseInfoReplies(await client.option(NBD_OPT_INFO, infoPayload(RO, [])));
    assert.deepEqual(ro.export, { sizeBytes: RO_BYTES, transmissionFlags: READ_ONLY_FLAGS });

    // INFO does not end haggling: GO still works.
    const go = await client.option(NBD_OPT_GO, infoPayload(DISK, []));
    assert.equal(lastReply(go).type, NBD_REP_ACK);
    assertOk(await client.nbdRead(0, 512), 'read after GO');
    client.destroy();
  });

  test('NBD_OPT_GO: the same information (SEND_DF too with structured replies), then transmission', async () => {
    const client = await haggling(h);
    assert.equal(lastReply(await client.option(NBD_OPT_STRUCTURED_REPLY)).type, NBD_REP_ACK);
    const replies = await client.option(
      NBD_OPT_GO,
      infoPayload(DISK, [NBD_INFO_DESCRIPTION, NBD_INFO_NAME]),
    );
    for (const reply of replies) assert.ok(isReplyTo(reply, NBD_OPT_GO));
    assert.equal(lastReply(replies).type, NBD_REP_ACK);
    const info = parseInfoReplies(replies);
    assert.deepEqual(info.export, {
      sizeBytes: DISK_BYTES,
      transmissionFlags: WRITABLE_FLAGS | NBD_FLAG_SEND_DF,
    });
    assert.equal(info.name, DISK);
    assert.equal(info.description, `memory export of ${DISK_BYTES} B`);
    assert.deepEqual(info.blockSize, {
      minimumBytes: 512,
      preferredBytes: 4096,
      maximumBytes: 32 * MiB,
    });
    client.structured = true;
    const read = await client.nbdRead(0, 512);
    assertOk(read, 'structured read after GO');
    assert.equal(read.chunks[0]?.type, NBD_REPLY_TYPE_OFFSET_DATA);
    client.destroy();
  });

  test('INFO and GO of an unknown export: NBD_REP_ERR_UNKNOWN, and haggling goes on', async () => {
    const client = await haggling(h);
    for (const option of [NBD_OPT_INFO, NBD_OPT_GO]) {
      const replies = await client.option(option, infoPayload('no-such-disk', []));
      assert.equal(replies.length, 1);
      assert.ok(isReplyTo(lastReply(replies), option));
      assert.equal(lastReply(replies).type, NBD_REP_ERR_UNKNOWN);
    }
    // No default export: the empty name is unknown too.
    assert.equal(
      lastReply(await client.option(NBD_OPT_GO, infoPayload('', []))).type,
      NBD_REP_ERR_UNKNOWN,
    );
    const go = await client.option(NBD_OPT_GO, infoPayload(DISK, []));
    assert.equal(lastReply(go).type, NBD_REP_ACK);
    assertOk(await client.nbdWrite(0, pattern(512, 1)), 'write after a failed GO');
    client.destroy();
  });

  test('malformed INFO / GO payloads: NBD_REP_ERR_INVALID, and haggling goes on', async () => {
    const client = await haggling(h);
    const good = infoPayload(DISK, [NBD_INFO_NAME]);
    const overrun = Buffer.from(good);
    overrun.writeUInt32BE(1000, 0);
    const tooFewTypes = Buffer.from(good);
    tooFewTypes.writeUInt16BE(2, 4 + DISK.length);
    const badUtf8 = infoPayload('ab', []);
    badUtf8[4] = 0xff;
    const withNul = infoPayload('a\0b', []);
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['5 bytes', Buffer.alloc(5)],
      ['name overruns', overrun],
      ['count overruns', tooFewTypes],
      ['trailing byte', Buffer.concat([good, Buffer.alloc(1)])],
      ['invalid UTF-8 name', badUtf8],
      ['NUL in name', withNul],
    ];
    for (const option of [NBD_OPT_INFO, NBD_OPT_GO]) {
      for (const [what, payload] of cases) {
        const replies = await client.option(option, payload);
        assert.equal(replies.length, 1, what);
        assert.equal(lastReply(replies).type, NBD_REP_ERR_INVALID, `${option} ${what}`);
      }
    }
    assert.equal(lastReply(await client.option(NBD_OPT_GO, good)).type, NBD_REP_ACK);
    client.destroy();
  });

  test('NBD_OPT_EXPORT_NAME with NO_ZEROES: size and flags, then transmission at once', async () => {
    const client = await haggling(h, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    client.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from(DISK));
    const reply = await client.receive(10);
    assert.equal(reply.readBigUInt64BE(0), BigInt(DISK_BYTES));
    assert.equal(reply.readUInt16BE(8), WRITABLE_FLAGS);
    await sleep(30);
    assert.equal(client.buffered, 0, 'no padding with NO_ZEROES');
    const write = await client.nbdWrite(4096, pattern(4096, 2));
    assertOk(write, 'write');
    const read = await client.nbdRead(4096, 4096);
    assertOk(read, 'read');
    assert.deepEqual(read.data, pattern(4096, 2));
    client.destroy();
  });

  test('NBD_OPT_EXPORT_NAME without NO_ZEROES: 124 zero bytes follow', async () => {
    const client = await haggling(h, NBD_FLAG_C_FIXED_NEWSTYLE);
    client.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from(RO));
    const reply = await client.receive(10 + 124);
    assert.equal(reply.readBigUInt64BE(0), BigInt(RO_BYTES));
    assert.equal(reply.readUInt16BE(8), READ_ONLY_FLAGS);
    assert.deepEqual(reply.subarray(10), Buffer.alloc(124));
    await sleep(30);
    assert.equal(client.buffered, 0);
    assertOk(await client.nbdRead(0, 4096), 'read');
    client.destroy();
  });

  test('NBD_OPT_EXPORT_NAME of an unknown or invalid name closes the connection', async () => {
    for (const name of [Buffer.from('no-such-disk'), Buffer.alloc(0), Buffer.from([0xc3])]) {
      const client = await haggling(h);
      client.sendOption(NBD_OPT_EXPORT_NAME, name);
      assert.equal(await client.waitClosed(2_000), true, `name ${name.toString('hex')}`);
      assert.equal(client.buffered, 0, 'no reply at all');
    }
  });

  test('NBD_OPT_ABORT is acknowledged, then the server closes', async () => {
    const client = await haggling(h);
    client.sendOption(NBD_OPT_ABORT);
    const ack = await client.readOptionReply();
    assert.equal(ack.magic, NBD_OPTION_REPLY_MAGIC);
    assert.equal(ack.option, NBD_OPT_ABORT);
    assert.equal(ack.type, NBD_REP_ACK);
    assert.equal(ack.data.length, 0);
    assert.equal(await client.waitClosed(2_000), true);
  });

  test('NBD_OPT_ABORT from a client that half-closes at once is still acknowledged', async () => {
    const client = await haggling(h);
    client.sendOption(NBD_OPT_ABORT);
    client.end();
    const ack = await client.readOptionReply();
    assert.equal(ack.option, NBD_OPT_ABORT);
    assert.equal(ack.type, NBD_REP_ACK);
    assert.equal(await client.waitClosed(2_000), true);
  });

  test('STARTTLS, extended headers and unknown options: NBD_REP_ERR_UNSUP, haggling goes on', async () => {
    const client = await haggling(h);
    for (const option of [NBD_OPT_STARTTLS, NBD_OPT_EXTENDED_HEADERS, 4, 0x1234, 0xffff_ffff]) {
      const replies = await client.option(
        option,
        option === 0x1234 ? Buffer.from('data') : undefined,
      );
      assert.equal(replies.length, 1);
      assert.ok(isReplyTo(lastReply(replies), option), `option ${option}`);
      assert.equal(lastReply(replies).type, NBD_REP_ERR_UNSUP, `option ${option}`);
    }
    assert.equal(lastReply(await client.option(NBD_OPT_LIST)).type, NBD_REP_ACK);
    client.destroy();
  });

  test('NBD_OPT_STRUCTURED_REPLY with data is NBD_REP_ERR_INVALID', async () => {
    const client = await haggling(h);
    const replies = await client.option(NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(4));
    assert.equal(lastReply(replies).type, NBD_REP_ERR_INVALID);
    // And nothing was negotiated: meta contexts are still refused.
    const meta = await client.option(NBD_OPT_LIST_META_CONTEXT, metaContextPayload(DISK, []));
    assert.equal(lastReply(meta).type, NBD_REP_ERR_INVALID);
    client.destroy();
  });

  test('an option payload above NBD_OPTION_MAX_BYTES is skipped, NBD_REP_ERR_TOO_BIG, and the connection goes on', async () => {
    const client = await haggling(h);
    const big = Buffer.alloc(NBD_OPTION_MAX_BYTES + 1, 0x41);
    // Sent in pieces, so the skip spans several socket reads.
    client.sendOption(NBD_OPT_LIST, Buffer.alloc(0), big.length);
    for (let at = 0; at < big.length; at += 10_000) {
      client.send(big.subarray(at, at + 10_000));
      await sleep(1);
    }
    const reply = await client.readOptionReply();
    assert.ok(isReplyTo(reply, NBD_OPT_LIST));
    assert.equal(reply.type, NBD_REP_ERR_TOO_BIG);
    assert.equal(lastReply(await client.option(NBD_OPT_LIST)).type, NBD_REP_ACK);
    const go = await client.option(NBD_OPT_GO, infoPayload(DISK, []));
    assert.equal(lastReply(go).type, NBD_REP_ACK);
    assertOk(await client.nbdRead(0, 4096), 'read');
    client.destroy();
  });

  test('an NBD_OPT_EXPORT_NAME too long to read closes the connection (it has no error reply)', async () => {
    const client = await haggling(h);
    client.sendOption(NBD_OPT_EXPORT_NAME, Buffer.alloc(0), NBD_OPTION_MAX_BYTES + 1);
    client.send(Buffer.alloc(NBD_OPTION_MAX_BYTES + 1, 0x61));
    assert.equal(await client.waitClosed(2_000), true);
    assert.equal(client.buffered, 0, 'no option reply: the client would read it as a size');
  });

  test('LIST / SET_META_CONTEXT before structured replies: NBD_REP_ERR_INVALID', async () => {
    const client = await haggling(h);
    for (const option of [NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT]) {
      const replies = await client.option(option, metaContextPayload(DISK, [BASE_ALLOCATION]));
      assert.equal(replies.length, 1);
      assert.ok(isReplyTo(lastReply(replies), option));
      assert.equal(lastReply(replies).type, NBD_REP_ERR_INVALID);
    }
    client.destroy();
  });

  test('after structured replies: base:allocation is listed, and selected with id 1', async () => {
    const client = await haggling(h);
    assert.equal(lastReply(await client.option(NBD_OPT_STRUCTURED_REPLY)).type, NBD_REP_ACK);
    const contextsOf = (replies: readonly OptionReply[]) =>
      replies
        .filter((r) => r.type === NBD_REP_META_CONTEXT)
        .map((r) => ({ id: r.data.readUInt32BE(0), name: r.data.subarray(4).toString('utf8') }));

    for (const queries of [[], [BASE_ALLOCATION], ['base:'], ['x-other:thing', BASE_ALLOCATION]]) {
      const replies = await client.option(
        NBD_OPT_LIST_META_CONTEXT,
        metaContextPayload(DISK, queries),
      );
      assert.equal(lastReply(replies).type, NBD_REP_ACK, JSON.stringify(queries));
      const contexts = contextsOf(replies);
      assert.equal(contexts.length, 1, JSON.stringify(queries));
      assert.equal(contexts[0]?.name, BASE_ALLOCATION);
      assert.equal(contexts[0]?.id, 0, 'ids in a list are reserved (0)');
    }
    const none = await client.option(
      NBD_OPT_LIST_META_CONTEXT,
      metaContextPayload(DISK, ['x-other:thing']),
    );
    assert.deepEqual(
      none.map((r) => r.type),
      [NBD_REP_ACK],
    );

    const unknown = await client.option(
      NBD_OPT_SET_META_CONTEXT,
      metaContextPayload('no-such-disk', [BASE_ALLOCATION]),
    );
    assert.equal(lastReply(unknown).type, NBD_REP_ERR_UNKNOWN);

    const malformed = metaContextPayload(DISK, [BASE_ALLOCATION]);
    malformed.writeUInt32BE(2, 4 + DISK.length); // claims 2 queries, carries 1
    assert.equal(
      lastReply(await client.option(NBD_OPT_SET_META_CONTEXT, malformed)).type,
      NBD_REP_ERR_INVALID,
    );
    assert.equal(
      lastReply(await client.option(NBD_OPT_SET_META_CONTEXT, Buffer.alloc(3))).type,
      NBD_REP_ERR_INVALID,
    );

    const set = await client.option(
      NBD_OPT_SET_META_CONTEXT,
      metaContextPayload(DISK, [BASE_ALLOCATION]),
    );
    assert.equal(lastReply(set).type, NBD_REP_ACK);
    assert.deepEqual(contextsOf(set), [{ id: 1, name: BASE_ALLOCATION }]);
    for (const reply of set) assert.ok(isReplyTo(reply, NBD_OPT_SET_META_CONTEXT));

    assert.equal(
      lastReply(await client.option(NBD_OPT_GO, infoPayload(DISK, []))).type,
      NBD_REP_ACK,
    );
    client.structured = true;
    const status = await client.nbdBlockStatus(0, 4096);
    assertOk(status, 'block status');
    assert.equal(status.contextId, 1);
    client.destroy();
  });

  test('SET_META_CONTEXT selecting nothing, or for another export than GO opens, gives no block status', async () => {
    const client = await h.connect();
    await client.handshake({ name: RO, structured: true, metaContexts: [] });
    const status = await client.nbdBlockStatus(0, 4096);
    assert.equal(status.error, NbdErrno.EINVAL);
    client.destroy();

    const other = await haggling(h);
    assert.equal(lastReply(await other.option(NBD_OPT_STRUCTURED_REPLY)).type, NBD_REP_ACK);
    const set = await other.option(
      NBD_OPT_SET_META_CONTEXT,
      metaContextPayload('other', [BASE_ALLOCATION]),
    );
    assert.equal(lastReply(set).type, NBD_REP_ACK);
    assert.equal(
      lastReply(await other.option(NBD_OPT_GO, infoPayload(DISK, []))).type,
      NBD_REP_ACK,
    );
    other.structured = true;
    assert.equal((await other.nbdBlockStatus(0, 4096)).error, NbdErrno.EINVAL);
    other.destroy();
  });

  test(`more than ${NBD_HANDSHAKE_MAX_OPTIONS} options close the connection`, async () => {
    const client = await haggling(h);
    const one = optionHeader(NBD_OPT_STRUCTURED_REPLY, 0);
    client.send(Buffer.concat(Array.from({ length: NBD_HANDSHAKE_MAX_OPTIONS }, () => one)));
    for (let i = 0; i < NBD_HANDSHAKE_MAX_OPTIONS; i += 1) {
      assert.equal((await client.readOptionReply()).type, NBD_REP_ACK);
    }
    client.send(one);
    assert.equal(await client.waitClosed(5_000), true);
    assert.equal(client.buffered, 0, 'the option past the limit is not answered');
  });

  test('bad option magic closes the connection', async () => {
    const client = await haggling(h);
    const header = Buffer.alloc(16);
    header.write('IHAVEOPX', 0, 'latin1');
    header.writeUInt32BE(NBD_OPT_LIST, 8);
    client.send(header);
    assert.equal(await client.waitClosed(2_000), true);
    assert.equal(client.buffered, 0);
  });
});

describe('handshake with a default export', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ defaultExport: DISK });
  });
  after(async () => {
    await h.close();
  });

  test('the empty name means the default export (INFO, GO, EXPORT_NAME)', async () => {
    const client = await haggling(h);
    const info = parseInfoReplies(
      await client.option(NBD_OPT_INFO, infoPayload('', [NBD_INFO_NAME])),
    );
    assert.equal(info.export?.sizeBytes, DISK_BYTES);
    assert.equal(info.name, DISK);
    assert.equal(lastReply(await client.option(NBD_OPT_GO, infoPayload('', []))).type, NBD_REP_ACK);
    assertOk(await client.nbdRead(0, 512), 'read');
    client.destroy();

    const byName = await haggling(h, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    byName.sendOption(NBD_OPT_EXPORT_NAME);
    assert.equal((await byName.receive(10)).readBigUInt64BE(0), BigInt(DISK_BYTES));
    byName.destroy();
  });
});

// ====================================================================== transmission

describe('transmission', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(async () => {
    await h.close();
  });

  test('simple replies: writes read back, unaligned, with 64-bit handles echoed', async () => {
    const client = await h.open(DISK);
    const data = pattern(10_000, 3);
    const handle = 0xfedc_ba98_7654_3210n;
    client.request({ command: NBD_CMD_WRITE, offsetBytes: 100_003, data, handle });
    const write = await client.readReply();
    assert.equal(write.handle, handle);
    assert.equal(write.structured, false);
    assertOk(write, 'write');
    const read = await client.nbdRead(100_003, 10_000);
    assert.equal(read.structured, false);
    assertOk(read, 'read');
    assert.deepEqual(read.data, data);
    assert.deepEqual(h.exports.bytes(DISK).subarray(100_003, 110_003), data);
    // A read across written and never-written bytes.
    const around = await client.nbdRead(100_000, 10_010);
    assert.deepEqual(around.data.subarray(0, 3), Buffer.alloc(3));
    assert.deepEqual(around.data.subarray(3, 10_003), data);
    assert.deepEqual(around.data.subarray(10_003), Buffer.alloc(7));
    client.destroy();
  });

  test('structured replies: a read is one OFFSET_DATA chunk with DONE', async () => {
    const client = await h.open(DISK, { structured: true });
    const data = pattern(8192, 4);
    assertOk(await client.nbdWrite(3 * MiB + 17, data), 'write');
    for (const flags of [0, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FUA]) {
      const read = await client.nbdRead(3 * MiB + 17, 8192, flags);
      assertOk(read, 'read');
      assert.equal(read.chunks.length, 1);
      const chunk = read.chunks[0];
      assert.ok(chunk !== undefined);
      assert.equal(chunk.type, NBD_REPLY_TYPE_OFFSET_DATA);
      assert.equal(chunk.flags, NBD_REPLY_FLAG_DONE);
      assert.equal(chunk.payload.length, 8 + 8192);
      assert.equal(chunk.payload.readBigUInt64BE(0), BigInt(3 * MiB + 17));
      assert.deepEqual(read.data, data);
    }
    // Writes and the other commands succeed with a simple or a structured reply.
    const write = await client.nbdWrite(0, pattern(512, 5));
    assertOk(write, 'write');
    client.destroy();
  });

  test('FUA writes and FLUSH succeed, and are visible on every connection (CAN_MULTI_CONN)', async () => {
    const client = await h.open(DISK);
    const second = await h.open(DISK, { structured: true });
    const data = pattern(4096, 6);
    assertOk(await client.nbdWrite(8192, data, NBD_CMD_FLAG_FUA), 'FUA write');
    assert.deepEqual((await second.nbdRead(8192, 4096)).data, data);
    const more = pattern(4096, 21);
    assertOk(await client.nbdWrite(8192, more), 'write');
    assertOk(await client.nbdFlush(), 'flush');
    assertOk(await client.nbdFlush(NBD_CMD_FLAG_FUA), 'flush with FUA');
    assert.deepEqual((await client.nbdRead(8192, 4096)).data, more);
    assert.deepEqual((await second.nbdRead(8192, 4096)).data, more);
    client.destroy();
    second.destroy();
  });

  test('TRIM makes whole pages read as zeros and report holes', async () => {
    const client = await h.open(DISK, { structured: true, metaContexts: [BASE_ALLOCATION] });
    const base = 1 * MiB;
    assertOk(await client.nbdWrite(base, pattern(16 * KiB, 7)), 'write');
    assertOk(await client.nbdTrim(base + 4 * KiB, 8 * KiB), 'trim');
    const read = await client.nbdRead(base, 16 * KiB);
    assert.deepEqual(read.data.subarray(0, 4 * KiB), pattern(16 * KiB, 7).subarray(0, 4 * KiB));
    assert.deepEqual(read.data.subarray(4 * KiB, 12 * KiB), Buffer.alloc(8 * KiB));
    assert.deepEqual(read.data.subarray(12 * KiB), pattern(16 * KiB, 7).subarray(12 * KiB));
    const status = await client.nbdBlockStatus(base, 16 * KiB);
    assertOk(status, 'block status');
    assert.deepEqual(status.extents, [
      { lengthBytes: 4 * KiB, flags: 0 },
      { lengthBytes: 8 * KiB, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
      { lengthBytes: 4 * KiB, flags: 0 },
    ]);
    assertOk(await client.nbdTrim(base, 4 * KiB, NBD_CMD_FLAG_FUA), 'FUA trim');
    assert.deepEqual((await client.nbdRead(base, 4 * KiB)).data, Buffer.alloc(4 * KiB));
    client.destroy();
  });

  test('WRITE_ZEROES zeroes (a hole), NO_HOLE allocates, FAST_ZERO works, FAST_ZERO|NO_HOLE is ENOTSUP', async () => {
    const client = await h.open(DISK, { structured: true, metaContexts: [BASE_ALLOCATION] });
    const base = 2 * MiB;
    const data = pattern(24 * KiB, 8);
    assertOk(await client.nbdWrite(base, data), 'write');

    // Unaligned: the whole page becomes a hole, the partial edges are zeroed in place.
    assertOk(await client.nbdWriteZeroes(base + 100, 8 * KiB), 'write zeroes');
    let read = await client.nbdRead(base, 24 * KiB);
    assert.deepEqual(read.data.subarray(0, 100), data.subarray(0, 100));
    assert.deepEqual(read.data.subarray(100, 100 + 8 * KiB), Buffer.alloc(8 * KiB));
    assert.deepEqual(read.data.subarray(100 + 8 * KiB), data.subarray(100 + 8 * KiB));
    let status = await client.nbdBlockStatus(base, 12 * KiB);
    assert.deepEqual(status.extents, [
      { lengthBytes: 4 * KiB, flags: 0 },
      { lengthBytes: 4 * KiB, flags: NBD_STATE_HOLE | NBD_STATE_ZERO },
      { lengthBytes: 4 * KiB, flags: 0 },
    ]);

    // NO_HOLE: zeros that stay allocated.
    assertOk(
      await client.nbdWriteZeroes(
        base + 12 * KiB,
        4 * KiB,
        NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA,
      ),
      'write zeroes NO_HOLE',
    );
    read = await client.nbdRead(base + 12 * KiB, 4 * KiB);
    assert.deepEqual(read.data, Buffer.alloc(4 * KiB));
    status = await client.nbdBlockStatus(base + 12 * KiB, 4 * KiB);
    assert.deepEqual(status.extents, [{ lengthBytes: 4 * KiB, flags: 0 }]);

    // FAST_ZERO alone can punch a hole: fine.
    assertOk(
      await client.nbdWriteZeroes(base + 16 * KiB, 4 * KiB, NBD_CMD_FLAG_FAST_ZERO),
      'fast zero',
    );
    assert.deepEqual((await client.nbdRead(base + 16 * KiB, 4 * KiB)).data, Buffer.alloc(4 * KiB));

    // FAST_ZERO with NO_HOLE cannot be fast: ENOTSUP, and nothing changes.
    const refused = await client.nbdWriteZeroes(
      base + 20 * KiB,
      4 * KiB,
      NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_NO_HOLE,
    );
    assert.equal(refused.error, NbdErrno.ENOTSUP);
    assert.equal(refused.chunks[0]?.type, NBD_REPLY_TYPE_ERROR);
    assert.deepEqual(
      (await client.nbdRead(base + 20 * KiB, 4 * KiB)).data,
      data.subarray(20 * KiB),
    );
    client.destroy();
  });

  test('block status: extents with HOLE|ZERO, REQ_ONE gives one extent', async () => {
    const client = await h.open('other', { structured: true, metaContexts: [BASE_ALLOCATION] });
    assertOk(await client.nbdWrite(0, pattern(8 * KiB, 9)), 'write');
    assertOk(await client.nbdWrite(16 * KiB, pattern(4 * KiB, 10)), 'write');
    const status = await client.nbdBlockStatus(0, 64 * KiB);
    assertOk(status, 'block status');
    assert.equal(status.contextId, 1);
    assert.equal(status.chunks.length, 1);
    assert.equal(status.chunks[0]?.type, NBD_REPLY_TYPE_BLOCK_STATUS);
    assert.equal(status.chunks[0]?.flags, NBD_REPLY_FLAG_DONE);
    const hole = NBD_STATE_HOLE | NBD_STATE_ZERO;
    assert.deepEqual(status.extents, [
      { lengthBytes: 8 * KiB, flags: 0 },
      { lengthBytes: 8 * KiB, flags: hole },
      { lengthBytes: 4 * KiB, flags: 0 },
      { lengthBytes: 44 * KiB, flags: hole },
    ]);
    const one = await client.nbdBlockStatus(0, 64 * KiB, NBD_CMD_FLAG_REQ_ONE);
    assert.deepEqual(one.extents, [{ lengthBytes: 8 * KiB, flags: 0 }]);
    // Unaligned query: lengths follow the request, never beyond it.
    const unaligned = await client.nbdBlockStatus(6 * KiB + 1, 3 * KiB);
    assert.deepEqual(unaligned.extents, [
      { lengthBytes: 2 * KiB - 1, flags: 0 },
      { lengthBytes: KiB + 1, flags: hole },
    ]);
    // Past the end, and the empty range: EINVAL.
    assert.equal((await client.nbdBlockStatus(60 * KiB, 8 * KiB)).error, NbdErrno.EINVAL);
    assert.equal((await client.nbdBlockStatus(0, 0)).error, NbdErrno.EINVAL);
    client.destroy();
  });

  test('block status without a negotiated context is EINVAL', async () => {
    for (const options of [{ structured: true }, { structured: false }]) {
      const client = await h.open(DISK, options);
      const status = await client.nbdBlockStatus(0, 4096);
      assert.equal(status.error, NbdErrno.EINVAL, JSON.stringify(options));
      assertOk(await client.nbdRead(0, 512), 'read after');
      client.destroy();
    }
  });

  test('out of range: read EINVAL, write ENOSPC, trim EINVAL, write-zeroes ENOSPC; the connection goes on', async () => {
    for (const structured of [false, true]) {
      const client = await h.open(DISK, { structured });
      const cases: [string, () => Promise<NbdReply>, number][] = [
        ['read past end', () => client.nbdRead(DISK_BYTES - 100, 101), NbdErrno.EINVAL],
        ['read at end+1', () => client.nbdRead(DISK_BYTES + 1, 0), NbdErrno.EINVAL],
        ['read at 2^63', () => client.nbdRead(2 ** 63, 1), NbdErrno.EINVAL],
        ['write past end', () => client.nbdWrite(DISK_BYTES - 1, Buffer.alloc(2)), NbdErrno.ENOSPC],
        ['write at 2^60', () => client.nbdWrite(2 ** 60, Buffer.alloc(512)), NbdErrno.ENOSPC],
        ['trim past end', () => client.nbdTrim(DISK_BYTES - 4096, 8192), NbdErrno.EINVAL],
        ['write-zeroes past end', () => client.nbdWriteZeroes(DISK_BYTES, 1), NbdErrno.ENOSPC],
      ];
      for (const [what, run, errno] of cases) {
        const reply = await run();
        assert.equal(reply.error, errno, `${what} (structured ${structured})`);
        assert.equal(
          reply.data.every((b) => b === 0),
          true,
        );
        if (structured) {
          assert.equal(reply.chunks.length, 1);
          assert.equal(reply.chunks[0]?.type, NBD_REPLY_TYPE_ERROR);
          assert.ok(reply.errorMessage.length > 0, 'an error chunk carries a message');
        }
      }
      // Reads and writes touching the last byte are fine, and the connection is usable.
      assertOk(await client.nbdWrite(DISK_BYTES - 2, Buffer.from([1, 2])), 'last bytes');
      assert.deepEqual((await client.nbdRead(DISK_BYTES - 2, 2)).data, Buffer.from([1, 2]));
      assert.deepEqual(h.exports.bytes(DISK).subarray(DISK_BYTES - 2), Buffer.from([1, 2]));
      client.destroy();
    }
  });

  test('a read-only export: write, trim and write-zeroes are EPERM; reads work', async () => {
    const client = await h.open(RO, { structured: true });
    const write = await client.nbdWrite(0, pattern(4096, 11));
    assert.equal(write.error, NbdErrno.EPERM);
    assert.equal((await client.nbdTrim(0, 4096)).error, NbdErrno.EPERM);
    assert.equal((await client.nbdWriteZeroes(0, 4096)).error, NbdErrno.EPERM);
    assert.equal(
      (await client.nbdWriteZeroes(0, 4096, NBD_CMD_FLAG_NO_HOLE)).error,
      NbdErrno.EPERM,
    );
    // The refused write's payload was consumed: the next request parses.
    const read = await client.nbdRead(0, 4096);
    assertOk(read, 'read');
    assert.deepEqual(read.data, Buffer.alloc(4096));
    assertOk(await client.nbdFlush(), 'flush');
    assert.deepEqual(h.exports.bytes(RO), Buffer.alloc(RO_BYTES));
    client.destroy();
  });

  test('unknown commands and flags not documented for a command are EINVAL', async () => {
    const simple = await h.open(DISK);
    const cases: [string, number, number][] = [
      ['CACHE', NBD_CMD_CACHE, 0],
      ['RESIZE', NBD_CMD_RESIZE, 0],
      ['command 0x1234', 0x1234, 0],
      ['command 0xffff', 0xffff, 0],
      ['read with REQ_ONE', NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE],
      ['read with NO_HOLE', NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE],
      ['read with DF (no structured replies)', NBD_CMD_READ, NBD_CMD_FLAG_DF],
      ['read with flag 0x8000', NBD_CMD_READ, 0x8000],
      ['flush with NO_HOLE', NBD_CMD_FLUSH, NBD_CMD_FLAG_NO_HOLE],
      ['trim with FAST_ZERO', NBD_CMD_TRIM, NBD_CMD_FLAG_FAST_ZERO],
    ];
    for (const [what, command, flags] of cases) {
      simple.request({ command, flags, offsetBytes: 0, lengthBytes: 512 });
      const reply = await simple.readReply();
      assert.equal(reply.error, NbdErrno.EINVAL, what);
      assert.equal(reply.data.length, 0, `${what}: no payload`);
    }
    // A write with a bad flag still has its payload consumed.
    const payload = pattern(512, 12);
    simple.request({
      command: NBD_CMD_WRITE,
      flags: NBD_CMD_FLAG_REQ_ONE,
      offsetBytes: 0,
      data: payload,
    });
    assert.equal((await simple.readReply()).error, NbdErrno.EINVAL);
    assert.notDeepEqual(h.exports.bytes(DISK).subarray(0, 512), payload);
    assertOk(await simple.nbdRead(0, 512), 'read after');
    simple.destroy();

    // With structured replies DF is allowed on reads, and errors come as error chunks.
    const structured = await h.open(DISK, { structured: true });
    assertOk(await structured.nbdRead(0, 512, NBD_CMD_FLAG_DF), 'DF read');
    structured.request({ command: NBD_CMD_CACHE, offsetBytes: 0, lengthBytes: 512 });
    const cache = await structured.readReply();
    assert.equal(cache.error, NbdErrno.EINVAL);
    assert.equal(cache.chunks[0]?.type, NBD_REPLY_TYPE_ERROR);
    structured.destroy();
  });

  test('an oversized WRITE (33 MiB) is EINVAL after its payload is consumed; the connection goes on', async () => {
    const client = await h.open(DISK, { structured: true });
    const lengthBytes = NBD_MAX_PAYLOAD_BYTES + MiB;
    const handle = client.request({ command: NBD_CMD_WRITE, offsetBytes: 0, lengthBytes });
    // A payload that would be recognisable if it were ever written.
    const piece = Buffer.alloc(MiB, 0x5a);
    for (let sent = 0; sent < lengthBytes - piece.length; sent += piece.length) {
      await client.sendAndFlush(piece);
    }
    await sleep(50);
    assert.equal(client.buffered, 0, 'no reply before the whole payload is in');
    client.send(piece);
    const reply = await client.readReply();
    assert.equal(reply.handle, handle);
    assert.equal(reply.error, NbdErrno.EINVAL);
    assert.equal(h.exports.bytes(DISK).includes(Buffer.alloc(4096, 0x5a)), false);
    // An oversized READ has no payload: EINVAL at once.
    assert.equal((await client.nbdRead(0, NBD_MAX_PAYLOAD_BYTES + 1)).error, NbdErrno.EINVAL);
    const data = pattern(64 * KiB, 14);
    assertOk(await client.nbdWrite(512, data), 'write after');
    assert.deepEqual((await client.nbdRead(512, 64 * KiB)).data, data);
    client.destroy();
  });

  test('zero-length reads and writes succeed', async () => {
    const simple = await h.open(DISK);
    const read = await simple.nbdRead(4096, 0);
    assertOk(read, 'simple read of 0');
    assert.equal(read.data.length, 0);
    assertOk(await simple.nbdWrite(4096, Buffer.alloc(0)), 'write of 0');
    assertOk(await simple.nbdRead(DISK_BYTES, 0), 'read of 0 at the end');
    // Nothing stray follows: the next reply parses.
    assertOk(await simple.nbdRead(0, 16), 'read after');
    simple.destroy();

    const structured = await h.open(DISK, { structured: true });
    const none = await structured.nbdRead(4096, 0);
    assertOk(none, 'structured read of 0');
    assert.deepEqual(
      none.chunks.map((c) => [c.type, c.flags, c.payload.length]),
      [[NBD_REPLY_TYPE_NONE, NBD_REPLY_FLAG_DONE, 0]],
    );
    assertOk(await structured.nbdTrim(4096, 0), 'trim of 0');
    assertOk(await structured.nbdWriteZeroes(4096, 0), 'write-zeroes of 0');
    structured.destroy();
  });

  test('requests in flight are answered out of order, each with its own handle', async () => {
    const client = await h.open(DISK, { structured: true });
    const count = 48;
    const stride = 8 * KiB;
    const base = 3 * MiB;
    for (let i = 0; i < count; i += 1) {
      assertOk(await client.nbdWrite(base + i * stride, pattern(stride, 100 + i)), 'seed write');
    }
    const releases = new Map<number, () => void>();
    const handles = new Map<bigint, number>();
    for (let i = 0; i < count; i += 1) releases.set(i, h.gated.hold(base + i * stride));
    for (let i = 0; i < count; i += 1) {
      const handle = client.request({
        command: NBD_CMD_READ,
        offsetBytes: base + i * stride,
        lengthBytes: stride,
        handle: (BigInt(i) << 40n) | 0xabcn,
      });
      handles.set(handle, i);
    }
    // Unheld requests behind the held ones overtake them.
    const flush = client.request({ command: NBD_CMD_FLUSH });
    const overtaking = await client.readReply();
    assert.equal(overtaking.handle, flush);
    assertOk(overtaking, 'flush');
    // Release in a scrambled order; each reply is the one just released.
    const order = Array.from({ length: count }, (_, i) => (i * 29 + 7) % count);
    for (const i of order) {
      (releases.get(i) as () => void)();
      const reply = await client.readReply();
      assert.equal(handles.get(reply.handle), i, `reply for ${i}`);
      assertOk(reply, `read ${i}`);
      assert.deepEqual(reply.data, pattern(stride, 100 + i));
    }
    client.destroy();
  });

  test(`at most ${NBD_CONNECTION_MAX_IN_FLIGHT} requests in flight; the rest wait, then run`, async () => {
    const client = await h.open(DISK);
    const release = h.gated.holdAll();
    const before = h.gated.readsStarted;
    const total = NBD_CONNECTION_MAX_IN_FLIGHT + 44;
    for (let i = 0; i < total; i += 1)
      client.request({ command: NBD_CMD_READ, offsetBytes: i, lengthBytes: 1 });
    await waitFor(
      () => h.gated.readsStarted - before >= NBD_CONNECTION_MAX_IN_FLIGHT,
      2_000,
      'reads to start',
    );
    await sleep(100);
    assert.equal(h.gated.readsStarted - before, NBD_CONNECTION_MAX_IN_FLIGHT);
    release();
    for (let i = 0; i < total; i += 1) assertOk(await client.readReply(), `read ${i}`);
    assert.equal(h.gated.readsStarted - before, total);
    client.destroy();
  });

  test('NBD_CMD_DISC waits for requests in flight, answers them, then closes', async () => {
    const client = await h.open(DISK);
    const data = pattern(4096, 15);
    assertOk(await client.nbdWrite(5 * 4096, data), 'write');
    const release = h.gated.hold(5 * 4096);
    const handle = client.request({
      command: NBD_CMD_READ,
      offsetBytes: 5 * 4096,
      lengthBytes: 4096,
    });
    client.disconnect();
    // Anything after DISC is ignored (the client must not send it).
    client.request({ command: NBD_CMD_READ, offsetBytes: 0, lengthBytes: 4096 });
    assert.equal(await client.waitClosed(200), false, 'closed with a request in flight');
    release();
    const reply = await client.readReply();
    assert.equal(reply.handle, handle);
    assertOk(reply, 'read in flight at DISC');
    assert.deepEqual(reply.data, data);
    assert.equal(await client.waitClosed(2_000), true);
    assert.equal(client.buffered, 0, 'the request after DISC was not answered');
  });

  test('a client that half-closes still gets the replies in flight, then the server closes', async () => {
    const client = await h.open(DISK);
    const data = pattern(4096, 16);
    assertOk(await client.nbdWrite(6 * 4096, data), 'write');
    const release = h.gated.hold(6 * 4096);
    const handle = client.request({
      command: NBD_CMD_READ,
      offsetBytes: 6 * 4096,
      lengthBytes: 4096,
    });
    await sleep(20);
    client.end();
    await sleep(50);
    release();
    const reply = await client.readReply();
    assert.equal(reply.handle, handle);
    assertOk(reply, 'read in flight at the half-close');
    assert.deepEqual(reply.data, data);
    assert.equal(await client.waitClosed(2_000), true);
  });

  test('bad request magic closes that connection; another connection keeps working', async () => {
    const bad = await h.open(DISK);
    const good = await h.open(DISK);
    assertOk(await bad.nbdRead(0, 512), 'read before');
    const header = requestHeader(NBD_CMD_READ, 0, 1n, 0n, 512);
    header.writeUInt32BE(0x25609514, 0);
    bad.send(header);
    assert.equal(await bad.waitClosed(2_000), true);
    const data = pattern(4096, 17);
    assertOk(await good.nbdWrite(7 * 4096, data), 'write on the other connection');
    assert.deepEqual((await good.nbdRead(7 * 4096, 4096)).data, data);
    good.destroy();
  });

  test('requests split into single bytes, and many in one packet, parse the same', async () => {
    const client = await h.open(DISK, { structured: true });
    const data = pattern(1000, 18);
    const write = client.encodeRequest({ command: NBD_CMD_WRITE, offsetBytes: 9 * 4096, data });
    for (let i = 0; i < write.bytes.length; i += 1) {
      client.send(write.bytes.subarray(i, i + 1));
      if (i % 97 === 0) await sleep(1);
    }
    const written = await client.readReply();
    assert.equal(written.handle, write.handle);
    assertOk(written, 'dribbled write');
    // Twenty reads in one buffer, answered each under its own handle.
    const packed: Buffer[] = [];
    const handles: bigint[] = [];
    for (let i = 0; i < 20; i += 1) {
      const read = client.encodeRequest({
        command: NBD_CMD_READ,
        offsetBytes: 9 * 4096 + i * 50,
        lengthBytes: 50,
      });
      packed.push(read.bytes);
      handles.push(read.handle);
    }
    client.send(Buffer.concat(packed));
    for (let i = 0; i < 20; i += 1) {
      const reply = await client.readReply();
      const at = handles.indexOf(reply.handle);
      assert.ok(at >= 0);
      assert.deepEqual(reply.data, data.subarray(at * 50, at * 50 + 50));
    }
    client.destroy();
  });
});

// ====================================================================== limits

describe('server limits', () => {
  test('the handshake timeout closes an idle client, not one in transmission', async () => {
    const h = await startHarness({ handshakeIdleTimeoutMs: 300 });
    try {
      const idle = await h.connect();
      await idle.readGreeting();
      const started = Date.now();
      const active = await h.open(DISK);
      assert.equal(await idle.waitClosed(3_000), true);
      const elapsedMs = Date.now() - started;
      assert.ok(elapsedMs >= 200, `closed after ${elapsedMs} ms`);
      // A client mid-haggling is cut as well.
      const haggler = await haggling(h);
      assert.equal(lastReply(await haggler.option(NBD_OPT_LIST)).type, NBD_REP_ACK);
      assert.equal(await haggler.waitClosed(3_000), true);
      // The one that finished its handshake is still served.
      await sleep(100);
      assertOk(await active.nbdRead(0, 512), 'read after the timeout');
      assert.equal(
        await counter(h.registry, 'shale_edge_protocol_errors_total', {
          kind: 'handshake-timeout',
        }),
        2,
      );
    } finally {
      await h.close();
    }
  });

  test('the connection limit refuses the extra connection', async () => {
    const h = await startHarness({ maxConnections: 2 });
    try {
      const first = await h.connect();
      const second = await h.connect();
      await first.readGreeting();
      await second.readGreeting();
      const third = await h.connect();
      assert.equal(await third.waitClosed(2_000), true);
      assert.equal(third.receivedBytes, 0, 'no greeting for a refused connection');
      await assert.rejects(third.receive(1), ConnectionClosedError);
      assert.equal(await counter(h.registry, 'shale_edge_connections_refused_total', {}), 1);
      // A freed slot is usable again.
      first.destroy();
      await waitFor(() => h.server.connectionCount < 2, 2_000, 'the slot to free');
      const fourth = await h.connect();
      const greeting = await fourth.readGreeting();
      assert.equal(greeting.magic, NBD_MAGIC);
    } finally {
      await h.close();
    }
  });

  test('backpressure: a client that never reads its replies stops being read; others are served', async () => {
    const h = await startHarness();
    try {
      const lazy = await h.open(DISK);
      lazy.socket.pause();
      const readBytes = MiB;
      const total = 256;
      for (let i = 0; i < total; i += 1) {
        lazy.request({ command: NBD_CMD_READ, offsetBytes: 0, lengthBytes: readBytes });
      }
      // Without backpressure the server would queue all 256 MiB of replies.
      const answered = () =>
        counter(h.registry, 'shale_edge_requests_total', { export: DISK, op: 'read' });
      const stalledAt = await settle(answered);
      assert.ok(
        stalledAt < total * 0.8,
        `the server answered ${stalledAt} of ${total} 1 MiB reads nobody read`,
      );
      // Another connection is served meanwhile.
      const other = await h.open('other');
      const data = pattern(4096, 19);
      assertOk(await other.nbdWrite(0, data), 'write on another connection');
      assert.deepEqual((await other.nbdRead(0, 4096)).data, data);
      other.destroy();
      // Once the client reads, every reply arrives, in full.
      lazy.socket.resume();
      for (let i = 0; i < total; i += 1) {
        const reply = await lazy.readReply();
        assertOk(reply, 'read');
        assert.equal(reply.data.length, readBytes);
      }
      assert.equal(await answered(), total);
    } finally {
      await h.close();
    }
  });

  test('backpressure in the handshake: nothing is read while an option is being answered', async () => {
    const h = await startHarness();
    try {
      const client = await haggling(h);
      const release = h.gated.holdOpens();
      client.sendOption(NBD_OPT_GO, infoPayload(DISK, []));
      // A client that does not wait for GO's reply and streams 64 MiB of writes behind it.
      const count = 64;
      const data = pattern(MiB, 20);
      for (let i = 0; i < count; i += 1) {
        client.request({ command: NBD_CMD_WRITE, offsetBytes: (i % 4) * MiB, data });
      }
      await sleep(300);
      const unreadBytes = client.socket.writableLength;
      assert.ok(
        unreadBytes > 32 * MiB,
        `the server read ${count * MiB - unreadBytes} B while GO was pending (unbounded buffering)`,
      );
      release();
      const go = [await client.readOptionReply()];
      while (lastReply(go).type === NBD_REP_INFO) go.push(await client.readOptionReply());
      assert.equal(lastReply(go).type, NBD_REP_ACK);
      for (let i = 0; i < count; i += 1) assertOk(await client.readReply(), `write ${i}`);
      assert.deepEqual((await client.nbdRead(3 * MiB, MiB)).data, data);
    } finally {
      await h.close();
    }
  });

  test('backpressure counts reply buffers too: a flood of tiny replies nobody reads stops being read', async () => {
    const h = await startHarness();
    try {
      const lazy = await h.open(DISK);
      lazy.socket.pause();
      // 40 MiB of read replies fill the kernel's buffers (below the 64 MiB byte limit) ...
      const reads = new Set<bigint>();
      for (let i = 0; i < 40; i += 1) {
        reads.add(lazy.request({ command: NBD_CMD_READ, offsetBytes: 0, lengthBytes: MiB }));
      }
      // ... then 16-byte write replies queue up: 100 Ki of them are only 1.6 MB, but each
      // costs the server far more heap than its bytes.
      const total = 100 * 1024;
      const batch: Buffer[] = [];
      for (let i = 0; i < total; i += 1) {
        batch.push(
          lazy.encodeRequest({ command: NBD_CMD_WRITE, offsetBytes: 0, lengthBytes: 0 }).bytes,
        );
        if (batch.length === 4096) lazy.send(Buffer.concat(batch.splice(0)));
      }
      lazy.send(Buffer.concat(batch));
      const writes = () =>
        counter(h.registry, 'shale_edge_requests_total', { export: DISK, op: 'write' });
      const stalledAt = await settle(writes);
      assert.ok(
        stalledAt < total * 0.9,
        `the server queued ${stalledAt} of ${total} replies nobody read`,
      );
      // Once the client reads, the server drains and reads on: every reply arrives.
      lazy.socket.resume();
      const replyBytes = 40 * (16 + MiB) + total * 16;
      const all = await lazy.receive(replyBytes, 20_000);
      // Replies come in any order: a read's 1 MiB follows its header.
      let replies = 0;
      let readReplies = 0;
      for (let at = 0; at < all.length; replies += 1) {
        assert.equal(all.readUInt32BE(at), NBD_SIMPLE_REPLY_MAGIC);
        assert.equal(all.readUInt32BE(at + 4), 0, 'errno');
        const isRead = reads.has(all.readBigUInt64BE(at + 8));
        if (isRead) readReplies += 1;
        at += 16 + (isRead ? MiB : 0);
      }
      assert.equal(replies, 40 + total);
      assert.equal(readReplies, 40);
      assert.equal(await writes(), total);
    } finally {
      await h.close();
    }
  });
});

// ====================================================================== metrics

describe('metrics', () => {
  test('requests, bytes and errors are counted per export and kind', async () => {
    const h = await startHarness();
    try {
      const disk = await h.open(DISK, { structured: true, metaContexts: [BASE_ALLOCATION] });
      const other = await h.open('other');
      for (let i = 0; i < 3; i += 1)
        assertOk(await disk.nbdWrite(i * 4096, pattern(4096, i)), 'write');
      for (let i = 0; i < 2; i += 1) assertOk(await disk.nbdRead(0, 8192), 'read');
      assertOk(await disk.nbdFlush(), 'flush');
      assertOk(await disk.nbdTrim(0, 4096), 'trim');
      assertOk(await disk.nbdWriteZeroes(0, 4096), 'zero');
      assertOk(await disk.nbdBlockStatus(0, 4096), 'status');
      assertOk(await other.nbdRead(0, 512), 'read other');
      // Refused before the export: a protocol error, not a request of the export.
      assert.equal((await disk.nbdRead(DISK_BYTES, 1)).error, NbdErrno.EINVAL);

      const requests = (labels: Record<string, string>) =>
        counter(h.registry, 'shale_edge_requests_total', labels);
      assert.equal(await requests({ export: DISK, op: 'write' }), 3);
      assert.equal(await requests({ export: DISK, op: 'read' }), 2);
      assert.equal(await requests({ export: DISK, op: 'flush' }), 1);
      assert.equal(await requests({ export: DISK, op: 'trim' }), 1);
      assert.equal(await requests({ export: DISK, op: 'write_zeroes' }), 1);
      assert.equal(await requests({ export: DISK, op: 'block_status' }), 1);
      assert.equal(await requests({ export: 'other', op: 'read' }), 1);
      assert.equal(await requests({ export: 'other', op: 'write' }), 0);
      assert.equal(
        await counter(h.registry, 'shale_edge_bytes_total', { export: DISK, op: 'write' }),
        3 * 4096,
      );
      assert.equal(
        await counter(h.registry, 'shale_edge_bytes_total', { export: DISK, op: 'read' }),
        2 * 8192,
      );
      assert.equal(
        await counter(h.registry, 'shale_edge_protocol_errors_total', { kind: 'refused' }),
        1,
      );
      assert.equal(await counter(h.registry, 'shale_edge_request_errors_total', {}), 0);
      assert.equal(await counter(h.registry, 'shale_edge_connections_accepted_total', {}), 2);
      assert.equal(await counter(h.registry, 'shale_edge_connections', {}), 2);
      disk.destroy();
      other.destroy();
      await waitFor(() => h.server.connectionCount === 0, 2_000, 'connections to close');
      assert.equal(await counter(h.registry, 'shale_edge_connections', {}), 0);
      assert.equal(await counter(h.registry, 'shale_edge_requests_in_flight', {}), 0);
    } finally {
      await h.close();
    }
  });
});

// ====================================================================== a broken export

/** An export that breaks the contract on purpose: reads one byte short, bad extents. */
class BrokenExports implements ExportProvider {
  mode: 'short-read' | 'empty-extents' | 'zero-extent' | 'long-extents' = 'short-read';
  constructor(private readonly inner: MemoryExports) {}
  list(): Promise<ExportInfo[]> {
    return this.inner.list();
  }
  info(name: string): Promise<ExportInfo> {
    return this.inner.info(name);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  async open(name: string): Promise<BlockExport> {
    const exp = await this.inner.open(name);
    return {
      ...exp,
      read: async (offsetBytes, lengthBytes) => {
        const data = await exp.read(offsetBytes, lengthBytes);
        return this.mode === 'short-read' ? data.subarray(1) : data;
      },
      blockStatus: async (offsetBytes, lengthBytes) => {
        if (this.mode === 'empty-extents') return [];
        if (this.mode === 'zero-extent') return [{ lengthBytes: 0, hole: true }];
        // Longer than asked: the server must clip to the request.
        return [
          { lengthBytes: lengthBytes + 8192, hole: false },
          { lengthBytes: 4096, hole: true },
        ].filter(() => offsetBytes >= 0);
      },
    };
  }
}

describe('answers that break the export contract, and strict checks', () => {
  test('a short read or bad extents from the export: EIO, the connection goes on; long extents are clipped', async () => {
    const inner = new MemoryExports();
    inner.add(DISK, DISK_BYTES);
    const broken = new BrokenExports(inner);
    const server = await NbdServer.start({
      provider: broken,
      metrics: new EdgeMetrics(new Registry()),
      port: 0,
      host: '127.0.0.1',
    });
    try {
      for (const structured of [false, true]) {
        const client = await RawNbdClient.connect(server.port);
        await client.handshake(
          structured
            ? { name: DISK, structured, metaContexts: [BASE_ALLOCATION] }
            : { name: DISK, structured },
        );
        broken.mode = 'short-read';
        assert.equal((await client.nbdRead(0, 4096)).error, NbdErrno.EIO);
        if (structured) {
          broken.mode = 'empty-extents';
          assert.equal((await client.nbdBlockStatus(0, 4096)).error, NbdErrno.EIO);
          broken.mode = 'zero-extent';
          assert.equal((await client.nbdBlockStatus(0, 4096)).error, NbdErrno.EIO);
          broken.mode = 'long-extents';
          const status = await client.nbdBlockStatus(0, 4096);
          assertOk(status, 'clipped block status');
          assert.deepEqual(
            status.extents.map((e) => e.lengthBytes),
            [4096],
            'an extent past the request is cut to it, and nothing follows',
          );
        }
        // Still in step: a write and a (now honest) read work.
        broken.mode = 'long-extents';
        assertOk(await client.nbdWrite(0, Buffer.alloc(512, 7)), 'write after');
        assert.deepEqual((await client.nbdRead(0, 512)).data, Buffer.alloc(512, 7));
        client.destroy();
      }
    } finally {
      await server.close(1_000);
    }
  });

  test('FLUSH with an offset or length is EINVAL; a meta-context query without a namespace is NBD_REP_ERR_INVALID', async () => {
    const h = await startHarness();
    try {
      const client = await h.open(DISK);
      client.request({ command: NBD_CMD_FLUSH, offsetBytes: 4096, lengthBytes: 0 });
      assert.equal((await client.readReply()).error, NbdErrno.EINVAL);
      client.request({ command: NBD_CMD_FLUSH, offsetBytes: 0, lengthBytes: 512 });
      assert.equal((await client.readReply()).error, NbdErrno.EINVAL);
      assertOk(await client.nbdFlush(), 'a plain flush');
      client.destroy();

      const haggler = await haggling(h);
      await haggler.option(NBD_OPT_STRUCTURED_REPLY);
      for (const option of [NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT]) {
        const replies = await haggler.option(option, metaContextPayload(DISK, ['allocation']));
        assert.equal(lastReply(replies).type, NBD_REP_ERR_INVALID);
      }
      haggler.destroy();
    } finally {
      await h.close();
    }
  });
});
