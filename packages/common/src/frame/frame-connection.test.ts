// Proves the data protocol's connections: requests in flight answered out of order and matched by handle, error replies that leave the connection usable, HELLO version refusal, and that a bad peer (garbage, an unknown op, an oversized length, a handle reused in flight, a client that never reads its replies) gets a GOAWAY with the reason and loses only its own connection, while the server's memory stays bounded and other clients go on; and that a client never has more in flight than its budget.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { isShaleError, ShaleError } from '../errors.js';
import { FrameClient } from './frame-client.js';
import { FrameDecoder } from './frame-decoder.js';
import {
  encodeFrameHeader,
  type Frame,
  FrameErrorCode,
  FrameOp,
  frameError,
} from './frame-format.js';
import { encodeHello } from './frame-hello.js';
import { createFrameServerCounters, serveFrameConnection } from './frame-server.js';

const OP_ECHO = 1;
const OP_READ = 2;
const OP_FAIL = 3;
const MiB = 1024 * 1024;

const counters = createFrameServerCounters();
let concurrent = 0;
let maxConcurrent = 0;
let server: net.Server;
let port: number;
const logs: string[] = [];

before(async () => {
  server = net.createServer({ pauseOnConnect: true }, (socket) =>
    serveFrameConnection(
      socket,
      {
        handle(frame: Frame) {
          if (frame.op === OP_ECHO) return later(frame, () => Buffer.from(frame.payload));
          if (frame.op === OP_READ)
            return later(frame, () => Buffer.alloc(frame.extent, frame.offset % 256));
          if (frame.op === OP_FAIL)
            return Promise.reject(new ShaleError('TEST_REFUSED', `refused ${frame.offset}`));
          throw frameError(FrameErrorCode.UnknownOp, `op ${frame.op} is not in the op table`);
        },
      },
      {
        maxBufferedBytes: 8 * MiB,
        maxPayloadBytes: 4 * MiB,
        replyBytesOf: (frame) => (frame.op === OP_READ ? frame.extent : 0),
        counters,
        log: (l) => logs.push(l),
      },
    ),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** Answers after a delay that depends on the offset (so replies overtake each other). */
async function later(frame: Frame, make: () => Buffer): Promise<Buffer> {
  concurrent += 1;
  maxConcurrent = Math.max(maxConcurrent, concurrent);
  try {
    await new Promise((resolve) => setTimeout(resolve, frame.offset % 7));
    return make();
  } finally {
    concurrent -= 1;
  }
}

const connect = (extra: { maxInFlightBytes?: number } = {}) =>
  FrameClient.connect({ host: '127.0.0.1', port, ...extra });

test('requests in flight come back out of order, each to its caller, payloads intact', async () => {
  const client = await connect();
  try {
    const calls = Array.from({ length: 200 }, (_, i) => {
      const payload = Buffer.alloc(1 + ((i * 131) % 9000), i);
      return client
        .request({ op: OP_ECHO, offset: 200 - i, payload })
        .then((reply) => assert.ok(reply.payload.equals(payload), `echo ${i}`));
    });
    await Promise.all(calls);
    const reads = await Promise.all(
      [5, 3, 1].map((o) =>
        client.request({ op: OP_READ, offset: o, extent: 4096, replyBytes: 4096 }),
      ),
    );
    assert.deepEqual(
      reads.map((r) => r.payload[0]),
      [5, 3, 1],
    );
  } finally {
    await client.close();
  }
});

test('an error reply rejects that request with its code; the connection goes on', async () => {
  const client = await connect();
  try {
    await assert.rejects(
      client.request({ op: OP_FAIL, offset: 9 }),
      (err: unknown) => isShaleError(err, 'TEST_REFUSED') && /refused 9/.test(String(err)),
    );
    const reply = await client.request({ op: OP_ECHO, payload: Buffer.from('still here') });
    assert.equal(reply.payload.toString(), 'still here');
  } finally {
    await client.close();
  }
});

test('an unknown op ends that connection with FRAME_UNKNOWN_OP; another connection is unaffected', async () => {
  const bad = await connect();
  const good = await connect();
  try {
    await assert.rejects(bad.request({ op: 77 }), (err: unknown) =>
      isShaleError(err, FrameErrorCode.UnknownOp),
    );
    assert.ok(isShaleError(bad.failed, FrameErrorCode.UnknownOp));
    await assert.rejects(bad.request({ op: OP_ECHO }), (err: unknown) => isShaleError(err));
    const reply = await good.request({ op: OP_ECHO, payload: Buffer.from('ok') });
    assert.equal(reply.payload.toString(), 'ok');
  } finally {
    bad.destroy();
    await good.close();
  }
});

/** A raw connection: sends bytes, collects frames until the server closes. */
async function raw(send: (socket: net.Socket) => void): Promise<Frame[]> {
  const socket = net.connect({ host: '127.0.0.1', port });
  const frames: Frame[] = [];
  const decoder = new FrameDecoder({ maxPayloadBytes: 64 * MiB }, (f) => frames.push(f));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  socket.on('error', () => undefined);
  send(socket);
  await closed;
  return frames;
}

function hello(socket: net.Socket, min = 1, max = 1): void {
  const payload = encodeHello(min, max, 64 * MiB);
  socket.write(
    Buffer.concat([encodeFrameHeader({ op: FrameOp.Hello, handle: 0 }, payload), payload]),
  );
}

function goAwayCode(frames: Frame[]): string {
  const last = frames.at(-1);
  assert.equal(last?.op, FrameOp.GoAway, 'the last frame is GOAWAY');
  return (last as Frame).payload.toString().split('\n')[0] as string;
}

test('bad peers get GOAWAY with the reason and lose their connection only', async () => {
  const garbage = await raw((s) =>
    s.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(3))),
  );
  assert.equal(goAwayCode(garbage), FrameErrorCode.Malformed);

  const beforeHello = await raw((s) => {
    s.write(encodeFrameHeader({ op: OP_ECHO, handle: 1 }));
  });
  assert.equal(goAwayCode(beforeHello), FrameErrorCode.UnknownOp);

  const tooLarge = await raw((s) => {
    hello(s);
    const header = encodeFrameHeader({ op: OP_ECHO, handle: 1 });
    header.writeUInt32LE(5 * MiB, 28);
    // Re-sign the header so that only the length is wrong.
    const fixed = encodeFrameHeader({ op: OP_ECHO, handle: 1 }, Buffer.alloc(5 * MiB));
    s.write(fixed);
  });
  assert.equal(goAwayCode(tooLarge), FrameErrorCode.TooLarge);

  const reused = await raw((s) => {
    hello(s);
    // Two requests with the same handle, the first still being answered (delay 6 ms).
    s.write(encodeFrameHeader({ op: OP_READ, handle: 7, offset: 6, extent: 1 }));
    s.write(encodeFrameHeader({ op: OP_READ, handle: 7, offset: 6, extent: 1 }));
  });
  assert.equal(goAwayCode(reused), FrameErrorCode.HandleInUse);

  const version = await raw((s) => hello(s, 5, 9));
  assert.equal(goAwayCode(version), FrameErrorCode.Version);
  assert.ok(
    logs.some((l) => /FRAME_VERSION/.test(l)),
    'the server logs why it closed',
  );

  await assert.rejects(
    FrameClient.connect({
      host: '127.0.0.1',
      port: (server.address() as net.AddressInfo).port,
      maxPayloadBytes: 1,
    }),
    (err: unknown) => isShaleError(err),
    'a client whose limit is below the HELLO reply fails cleanly',
  );
  const good = await connect();
  assert.equal(
    (await good.request({ op: OP_ECHO, payload: Buffer.from('x') })).payload.toString(),
    'x',
  );
  await good.close();
});

test('a client that never reads its replies holds a bounded amount of server memory; others go on', async () => {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.on('error', () => undefined);
  socket.pause(); // never read
  const start = counters.requests;
  hello(socket);
  // 2,000 reads of 1 MiB each (2 GiB of replies), none of them read.
  for (let i = 0; i < 2000; i += 1) {
    socket.write(encodeFrameHeader({ op: OP_READ, handle: i + 1, offset: 0, extent: MiB }));
  }
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const served = counters.requests - start;
  // 8 MiB of budget plus the kernel's socket buffers: far from 2,000.
  assert.ok(served < 200, `served ${served} of 2000 unread 1 MiB reads`);
  assert.ok(counters.pauses > 0);
  const good = await connect();
  const reply = await good.request({ op: OP_READ, offset: 3, extent: 4096, replyBytes: 4096 });
  assert.equal(reply.payload[0], 3);
  await good.close();
  socket.destroy();
});

test('a client keeps at most its in-flight budget outstanding; the rest wait, in order', async () => {
  const client = await connect({ maxInFlightBytes: MiB });
  maxConcurrent = 0;
  try {
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        client
          .request({ op: OP_ECHO, offset: 3, payload: Buffer.alloc(256 * 1024, i) })
          .then((r) => order.push(r.payload[0] as number)),
      ),
    );
    assert.ok(maxConcurrent <= 4, `at most 4 x 256 KiB in flight, saw ${maxConcurrent}`);
    assert.equal(order.length, 64);
  } finally {
    await client.close();
  }
});
