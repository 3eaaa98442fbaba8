// Proves FrameClient's request deadlines against a real frame server that reads requests and never answers some: a sent request rejects FRAME_TIMEOUT at its deadline (the client's default or its own), the connection closes so the other requests in flight reject FRAME_CLOSED and a late reply reaches no request (none in flight, none made later: those are never sent), a request waiting for room times out unsent and the connection goes on, and answered requests leave no deadline behind.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AssertionFailure } from '../assert.js';
import { isShaleError, type ShaleError } from '../errors.js';
import { FrameClient, type FrameClientOptions } from './frame-client.js';
import { type Frame, FrameErrorCode, frameError } from './frame-format.js';
import { serveFrameConnection } from './frame-server.js';

const OP_ECHO = 1;
/** Read by the server and not answered until the test says so (silent[].answer). */
const OP_SILENT = 2;
const KiB = 1024;
const TEST_TIMEOUT_MS = 10_000;

/** Every request the server read (HELLO aside), in order. */
const seen: Frame[] = [];
const silent: { frame: Frame; answer: (payload: Buffer) => void }[] = [];
/** Per accepted connection: resolves when the server's socket is closed. */
const serverClosed: Promise<void>[] = [];
const serverSockets = new Set<net.Socket>();
let server: net.Server;
let port: number;

before(async () => {
  server = net.createServer((socket) => {
    serverSockets.add(socket);
    serverClosed.push(
      new Promise((resolve) =>
        socket.once('close', () => {
          serverSockets.delete(socket);
          resolve();
        }),
      ),
    );
    serveFrameConnection(socket, {
      handle(frame: Frame) {
        seen.push(frame);
        if (frame.op === OP_ECHO) return Promise.resolve(Buffer.from(frame.payload));
        if (frame.op === OP_SILENT) {
          return new Promise<Buffer>((answer) => silent.push({ frame, answer }));
        }
        throw frameError(FrameErrorCode.UnknownOp, `op ${frame.op}`);
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});

after(async () => {
  // Let the server's silent handlers settle, and cut what a failed test left open (a
  // client whose request never timed out), so that the file ends instead of hanging.
  for (const s of silent.splice(0)) s.answer(Buffer.alloc(0));
  for (const socket of serverSockets) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});

async function connect(
  options: Partial<FrameClientOptions> = {},
): Promise<{ client: FrameClient; closedOnServer: Promise<void> }> {
  const client = await FrameClient.connect({ host: '127.0.0.1', port, ...options });
  // HELLO is answered before connect resolves, so this connection's entry is there.
  return { client, closedOnServer: serverClosed.at(-1) as Promise<void> };
}

/** The error a promise rejects with (fails the test if it resolves). */
function rejection(promise: Promise<unknown>): Promise<ShaleError> {
  return promise.then(
    (value) => assert.fail(`resolved with ${String(value)}`),
    (err: unknown) => err as ShaleError,
  );
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const giveUpAt = Date.now() + TEST_TIMEOUT_MS / 2;
  while (!condition()) {
    if (Date.now() > giveUpAt) assert.fail(`never happened: ${what}`);
    await sleep(5);
  }
}

test(
  'a request the server reads and never answers rejects FRAME_TIMEOUT at the deadline; the connection closes, the others in flight reject FRAME_CLOSED',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const { client, closedOnServer } = await connect({ requestTimeoutMs: 200 });
    const startedMs = performance.now();
    const a = client.request({ op: OP_SILENT, offset: 1 }); // the client's default: 200 ms
    const b = client.request({ op: OP_SILENT, offset: 2, timeoutMs: 60_000 });
    const aError = await rejection(a);
    const elapsedMs = performance.now() - startedMs;
    assert.ok(isShaleError(aError, FrameErrorCode.Timeout), String(aError));
    assert.equal(aError.details.sent, 'yes');
    assert.match(aError.message, /no reply to op 2 .* within 200 ms/);
    assert.ok(elapsedMs >= 190 && elapsedMs < 3000, `timed out after ${elapsedMs} ms`);
    const bError = await rejection(b);
    assert.ok(isShaleError(bError, FrameErrorCode.Closed), String(bError));
    assert.ok(isShaleError(client.failed, FrameErrorCode.Closed));
    assert.match(String(client.failed?.message), /got no reply within 200 ms/);
    assert.equal(client.pendingRequests, 0);
    await closedOnServer; // the server saw the connection go
  },
);

test(
  'a late reply after a timeout reaches no request: not those in flight, not those made later (never sent)',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const { client, closedOnServer } = await connect();
    const seenBefore = seen.length;
    const silentBefore = silent.length;
    const a = client.request({ op: OP_SILENT, offset: 10, timeoutMs: 150 });
    const b = client.request({ op: OP_SILENT, offset: 11 });
    const bSettled = rejection(b);
    await until(() => silent.length === silentBefore + 2, 'the server holds both requests');
    assert.ok(isShaleError(await rejection(a), FrameErrorCode.Timeout));
    // Made after the timeout, on the same client: refused at once, never on the wire.
    const c = await rejection(client.request({ op: OP_ECHO, payload: Buffer.from('c') }));
    assert.ok(isShaleError(c, FrameErrorCode.Closed), String(c));
    assert.ok(isShaleError(await bSettled, FrameErrorCode.Closed));
    await closedOnServer;
    // The server answers both now, late: nobody may get those bytes.
    for (const held of silent.slice(silentBefore)) {
      held.answer(Buffer.from(`late reply to ${held.frame.offset}`));
    }
    await sleep(50);
    assert.equal(seen.length - seenBefore, 2, 'the request made after the timeout was not sent');
    // A new connection gets its own replies.
    const { client: next } = await connect();
    const reply = await next.request({ op: OP_ECHO, payload: Buffer.from('mine') });
    assert.equal(reply.payload.toString(), 'mine');
    await next.close();
  },
);

test(
  'a request waiting for room past its deadline rejects FRAME_TIMEOUT unsent; the connection goes on',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const { client } = await connect({ maxInFlightBytes: 256 * KiB });
    const seenBefore = seen.length;
    const held = client.request({
      op: OP_SILENT,
      offset: 20,
      payload: Buffer.alloc(256 * KiB, 1),
      timeoutMs: 60_000,
    });
    const waited = await rejection(
      client.request({ op: OP_ECHO, payload: Buffer.alloc(256 * KiB, 2), timeoutMs: 150 }),
    );
    assert.ok(isShaleError(waited, FrameErrorCode.Timeout), String(waited));
    assert.equal(waited.details.sent, 'no');
    assert.match(waited.message, /waited 150 ms for room/);
    assert.equal(client.failed, undefined, 'the connection is still up');
    assert.equal(client.pendingRequests, 1);
    await until(() => seen.length === seenBefore + 1, 'the server holds the first request');
    (silent.at(-1) as { answer: (payload: Buffer) => void }).answer(Buffer.from('done'));
    assert.equal((await held).payload.toString(), 'done');
    const reply = await client.request({ op: OP_ECHO, payload: Buffer.from('next') });
    assert.equal(reply.payload.toString(), 'next');
    assert.equal(seen.length - seenBefore, 2, 'the request that timed out waiting was never sent');
    await client.close();
  },
);

test(
  'answered requests leave no deadline behind; a deadline setTimeout cannot keep is a programmer error',
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const { client } = await connect({ requestTimeoutMs: 100 });
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        client.request({ op: OP_ECHO, payload: Buffer.from(`r${i}`) }).then((reply) => {
          assert.equal(reply.payload.toString(), `r${i}`);
        }),
      ),
    );
    await sleep(250);
    assert.equal(client.failed, undefined);
    assert.equal(
      (await client.request({ op: OP_ECHO, payload: Buffer.from('x') })).payload.toString(),
      'x',
    );
    for (const timeoutMs of [0, -1, Number.POSITIVE_INFINITY, Number.NaN, 2 ** 31]) {
      await assert.rejects(client.request({ op: OP_ECHO, timeoutMs }), AssertionFailure);
    }
    await client.close();
  },
);
