// Proves that data-protocol connections read into one reused buffer on both ends (a server accepting paused adopts the socket; this Node supports it), that payloads of every size survive the reuse intact, that a server not accepting paused falls back to 'data' events and still works, and that an adopted connection closes when its peer goes (server.close() does not wait for adopted connections: their owner closes them).
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { seededRandom } from '@shale/testing';
import { FrameClient } from './frame-client.js';
import type { Frame } from './frame-format.js';
import { serveFrameConnection } from './frame-server.js';
import { socketReadCounts } from './socket-reader.js';

const OP_ECHO = 1;
const SEED = Number(process.env.SHALE_SEED ?? 0x50c4e7);

async function echoServer(
  pauseOnConnect: boolean,
): Promise<{ port: number; served: net.Socket[]; server: net.Server }> {
  const served: net.Socket[] = [];
  const server = net.createServer({ pauseOnConnect }, (accepted) => {
    served.push(
      serveFrameConnection(accepted, {
        handle: async (frame: Frame) => Buffer.from(frame.payload),
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, served, server };
}

/** Echoes payloads of random sizes (1 B .. 3 MiB, many at once) and checks every byte. */
async function echoRandom(port: number, random: () => number): Promise<number> {
  const client = await FrameClient.connect({ host: '127.0.0.1', port });
  let bytes = 0;
  try {
    for (let round = 0; round < 8; round += 1) {
      const payloads = Array.from({ length: 1 + Math.floor(random() * 40) }, () => {
        const big = random() < 0.1;
        const size = 1 + Math.floor(random() * (big ? 3 * 1024 * 1024 : 70_000));
        const payload = Buffer.allocUnsafe(size);
        for (let i = 0; i < size; i += 4096) payload[i] = Math.floor(random() * 256);
        payload.writeUInt8(size % 251, size - 1);
        return payload;
      });
      const replies = await Promise.all(
        payloads.map((payload, i) => client.request({ op: OP_ECHO, offset: i, payload })),
      );
      replies.forEach((reply, i) => {
        assert.ok(reply.payload.equals(payloads[i] as Buffer), `seed ${SEED} round ${round} #${i}`);
        bytes += reply.payload.length;
      });
    }
  } finally {
    client.destroy();
  }
  return bytes;
}

test(`an adopted connection reads into reused buffers, payloads intact (seed ${SEED})`, async () => {
  const { port, served, server } = await echoServer(true);
  const before = socketReadCounts();
  try {
    const bytes = await echoRandom(port, seededRandom(SEED));
    const after = socketReadCounts();
    // The client (connectReading) and the server side (adopted) both read into their buffer.
    assert.equal(after.userBuffer - before.userBuffer, 2);
    assert.equal(after.dataEvents, before.dataEvents, 'no connection fell back to data events');
    assert.ok(bytes > 1024 * 1024);
    // The client went away (echoRandom destroyed it): the adopted socket closes too.
    assert.equal(served.length, 1);
    const socket = served[0] as net.Socket;
    if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve));
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('a server that does not accept paused is served with data events, just as well', async () => {
  const { port, server } = await echoServer(false);
  const before = socketReadCounts();
  try {
    await echoRandom(port, seededRandom(SEED + 1));
    assert.equal(socketReadCounts().dataEvents - before.dataEvents, 1);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('an adopted connection ends when its peer ends; the peer sees the close', async () => {
  const { port, served, server } = await echoServer(true);
  try {
    const client = await FrameClient.connect({ host: '127.0.0.1', port });
    const reply = await client.request({ op: OP_ECHO, payload: Buffer.from('ping') });
    assert.equal(reply.payload.toString(), 'ping');
    const socket = served[0] as net.Socket;
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    client.destroy();
    await closed;
    // And the other way round: the server cuts, the client's requests fail FRAME_CLOSED.
    const second = await FrameClient.connect({ host: '127.0.0.1', port });
    const gone = new Promise<void>((resolve) => second.onClosed(() => resolve()));
    (served[1] as net.Socket).destroy();
    await gone;
    await assert.rejects(second.request({ op: OP_ECHO, payload: Buffer.from('x') }), {
      code: 'FRAME_CLOSED',
    });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
