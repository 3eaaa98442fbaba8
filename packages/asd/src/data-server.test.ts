// Proves the ASD's data server with a real daemon: put, get and ranged get round-trip over frames (and agree with gRPC), the ASD's checks answer with their ASD_* codes on a connection that goes on, and a bad peer (unknown op, lengths that do not add up, a damaged index, an oversized frame) gets a GOAWAY naming why and loses only its own connection.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  crc32c,
  encodeFrameHeader,
  encodeHello,
  type Frame,
  FrameClient,
  FrameDecoder,
  FrameErrorCode,
  FrameFlag,
  FrameOp,
  isShaleError,
} from '@shale/common';
import { rejectsWith } from '@shale/testing';
import { AsdClient } from './client.js';
import { DATA_MAX_PAYLOAD_BYTES } from './constants.js';
import { AsdDaemon } from './daemon.js';
import { AsdDataClient } from './data-client.js';
import { AsdDataOp, encodeGetRequest, encodePutRequest } from './data-protocol.js';

let daemon: AsdDaemon;
let grpcClient: AsdClient;
let data: AsdDataClient;
let dir: string;
const logs: string[] = [];

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-data-'));
  daemon = await AsdDaemon.start({
    dir,
    port: 0,
    nodeId: 'n1',
    reserveBytes: 0,
    log: (line) => logs.push(line),
  });
  grpcClient = new AsdClient(daemon.address, { deadlineMs: 20_000 });
  data = new AsdDataClient('127.0.0.1', daemon.dataPort, { deadlineMs: 20_000 });
});

after(async () => {
  data.close();
  grpcClient.close();
  await daemon.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

const k = (text: string): Buffer => Buffer.from(text);

test('gRPC stats name the data port', async () => {
  const stats = await grpcClient.stats();
  assert.ok(daemon.dataPort > 0);
  assert.equal(stats.dataPort, daemon.dataPort);
});

test('put, get and ranged get round-trip over frames and agree with gRPC', async () => {
  const big = randomBytes(3 * 1024 * 1024 + 17); // a value file, O_DIRECT
  const small = randomBytes(1000); // inline in the index
  const empty = Buffer.alloc(0);
  const crcs = await data.put([
    { key: k('d/big'), value: big },
    { key: k('d/small'), value: small, crc32c: crc32c(small) },
    { key: k('d/empty'), value: empty },
  ]);
  assert.deepEqual(crcs, [crc32c(big), crc32c(small), crc32c(empty)]);

  const got = await data.get([k('d/small'), k('d/missing'), k('d/big'), k('d/empty')]);
  assert.equal(got.length, 4);
  assert.ok(got[0]?.ok && got[0].value.value.equals(small));
  assert.ok(got[1] && !got[1].ok && got[1].error.code === 'ASD_NOT_FOUND');
  assert.match(got[1] && !got[1].ok ? got[1].error.message : '', /d\/missing/);
  assert.ok(got[2]?.ok && got[2].value.value.equals(big) && got[2].value.crc32c === crc32c(big));
  assert.ok(got[3]?.ok && got[3].value.value.length === 0);
  // What the data server stored, gRPC reads (one store behind both).
  assert.ok((await grpcClient.getOne(k('d/big'))).equals(big));

  const ranges = await data.getRanges([
    { key: k('d/big'), offset: 65_000, length: 140_000 }, // across checksum blocks
    { key: k('d/small'), offset: 10, length: 0 },
    { key: k('d/big'), offset: big.length - 5, length: 10 }, // past the end
    { key: k('d/none'), offset: 0, length: 1 },
  ]);
  assert.ok(ranges[0]?.ok && ranges[0].value.equals(big.subarray(65_000, 205_000)));
  assert.ok(ranges[1]?.ok && ranges[1].value.length === 0);
  assert.ok(ranges[2] && !ranges[2].ok && ranges[2].error.code === 'ASD_BAD_RANGE');
  assert.ok(ranges[3] && !ranges[3].ok && ranges[3].error.code === 'ASD_NOT_FOUND');
  // gRPC put, frame get: the other direction.
  const v = randomBytes(200_000);
  await grpcClient.put([{ key: k('g/1'), value: v }]);
  const [fromData] = await data.get([k('g/1')]);
  assert.ok(fromData?.ok && fromData.value.value.equals(v));
});

test("the ASD's own checks come back as error replies with their codes; the connection goes on", async () => {
  const value = randomBytes(100_000);
  const err = await rejectsWith(
    data.put([
      { key: k('c/ok'), value: Buffer.from('fine') },
      { key: k('c/bad'), value, crc32c: (crc32c(value) + 1) >>> 0 },
    ]),
    'ASD_CHECKSUM_MISMATCH',
  );
  assert.match(err.message, /c\/bad.*nothing stored/);
  const [ok] = await data.get([k('c/ok')]);
  assert.ok(ok && !ok.ok && ok.error.code === 'ASD_NOT_FOUND', 'all or nothing');
  await rejectsWith(data.put([{ key: Buffer.alloc(0), value }]), 'ASD_KEY_EMPTY');
  await rejectsWith(
    data.put([
      { key: k('c/dup'), value },
      { key: k('c/dup'), value },
    ]),
    'ASD_DUPLICATE_KEY',
  );
  await rejectsWith(data.get([]), 'ASD_INVALID_ARGUMENT');
  await rejectsWith(
    data.getRanges([{ key: k('c/x'), offset: 0, length: 65 * 2 ** 20 }]),
    'ASD_BAD_RANGE',
  );
  const [after] = await data.put([{ key: k('c/after'), value }]);
  assert.equal(after, crc32c(value), 'the same connection still serves');
  assert.equal(daemon.dataCounters?.protocolErrors, 0);
});

const connectRaw = () =>
  FrameClient.connect({ host: '127.0.0.1', port: daemon.dataPort, payloadCrc: false });

test('a PUT sent in pieces with the frame PAYLOAD_CRC over all of them is stored (gathered write)', async () => {
  const client = await connectRaw();
  try {
    const values = [randomBytes(70_000), randomBytes(3)];
    const parts = encodePutRequest(values.map((value, i) => ({ key: k(`p/${i}`), value })));
    assert.equal(parts.length, 3, 'the index, then each value as it is');
    const reply = await client.request({
      op: AsdDataOp.Put,
      flags: FrameFlag.PayloadCrc,
      payloadParts: parts,
    });
    assert.equal(reply.payload.readUInt32LE(0), crc32c(values[0] as Buffer));
    const got = await data.get([k('p/0'), k('p/1')]);
    assert.ok(got.every((r, i) => r.ok && r.value.value.equals(values[i] as Buffer)));
  } finally {
    await client.close();
  }
});

/** A request on its own connection: that connection must end with `code`. */
async function goAwayWith(
  request: { op: number; payload?: Buffer },
  code: string,
  why: RegExp,
): Promise<void> {
  const client = await connectRaw();
  const err = await rejectsWith(client.request(request), code);
  assert.match(err.message, why);
  assert.ok(isShaleError(client.failed, code), 'that connection is gone');
  client.destroy();
}

test('a bad peer gets a GOAWAY with the reason and loses only its own connection', async () => {
  const errorsBefore = daemon.dataCounters?.protocolErrors ?? 0;
  await goAwayWith({ op: 99 }, FrameErrorCode.UnknownOp, /op 99 is not in the ASD's op table/);

  // Lengths that do not add up: a PUT whose index claims one byte more of value.
  const put = Buffer.concat(encodePutRequest([{ key: k('m/1'), value: Buffer.alloc(10, 1) }]));
  const longer = Buffer.from(put);
  longer.writeUInt32LE(11, 8 + 4);
  await goAwayWith(
    { op: AsdDataOp.Put, payload: longer },
    FrameErrorCode.Malformed,
    /the index says/,
  );
  // A count that cannot fit in the payload.
  const count = Buffer.from(put);
  count.writeUInt32LE(1_000_000, 0);
  await goAwayWith({ op: AsdDataOp.Put, payload: count }, FrameErrorCode.Malformed, /do not fit/);
  // A damaged key (the index CRC catches what the frame's PAYLOAD_CRC is off for).
  const damaged = encodeGetRequest([k('m/key')]);
  damaged.writeUInt8(damaged.readUInt8(damaged.length - 1) ^ 0x20, damaged.length - 1);
  await goAwayWith(
    { op: AsdDataOp.Get, payload: damaged },
    FrameErrorCode.Malformed,
    /index checksum/,
  );
  await goAwayWith(
    { op: AsdDataOp.Get, payload: Buffer.alloc(3) },
    FrameErrorCode.Malformed,
    /shorter/,
  );

  // Oversized: a header announcing more than the server takes (sent raw: FrameClient
  // refuses to send it).
  const frames = await rawExchange((socket) => {
    const hello = encodeHello(1, 1, 1024);
    socket.write(encodeFrameHeader({ op: FrameOp.Hello, handle: 0 }, hello));
    socket.write(hello);
    const header = encodeFrameHeader({ op: AsdDataOp.Put, handle: 1 });
    header.writeUInt32LE(DATA_MAX_PAYLOAD_BYTES + 1, 28);
    header.writeUInt32LE(crc32c(header.subarray(0, 36)), 36);
    socket.write(header);
  });
  const last = frames.at(-1);
  assert.equal(last?.op, FrameOp.GoAway);
  assert.match(last?.payload.toString() ?? '', /^FRAME_TOO_LARGE\n/);

  assert.equal((daemon.dataCounters?.protocolErrors ?? 0) - errorsBefore, 6);
  assert.ok(
    logs.some((line) => /FRAME_TOO_LARGE/.test(line)),
    'the ASD logs why it closed',
  );
  // The shared client's connection was never touched.
  const value = randomBytes(5000);
  await data.put([{ key: k('m/after'), value }]);
  const [back] = await data.get([k('m/after')]);
  assert.ok(back?.ok && back.value.value.equals(value));
});

test('the client reconnects after the ASD restarted, and reads retry on the new connection', async () => {
  await data.put([{ key: k('r/1'), value: Buffer.from('again') }]);
  const { port, dataPort } = daemon;
  await daemon.stop();
  daemon = await AsdDaemon.start({
    dir,
    port,
    dataPort,
    nodeId: 'n1',
    reserveBytes: 0,
    log: (line) => logs.push(line),
  });
  const [back] = await data.get([k('r/1')]);
  assert.ok(back?.ok && back.value.value.toString() === 'again');
  assert.equal(daemon.dataCounters?.connections, 1, 'one new connection');
});

/** Raw bytes to the data port; the frames that came back before the server closed. */
async function rawExchange(send: (socket: net.Socket) => void): Promise<Frame[]> {
  const socket = net.connect({ host: '127.0.0.1', port: daemon.dataPort });
  const frames: Frame[] = [];
  const decoder = new FrameDecoder({ maxPayloadBytes: 1024 * 1024 }, (f) => frames.push(f));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  socket.on('error', () => undefined);
  send(socket);
  await closed;
  return frames;
}
