// Proves the TCP relay against a real echo server on 127.0.0.1: bytes flow both ways, freeze holds them (the connection stays up) and thaw delivers them, dropConnections resets the client, and cut closes every connection and refuses new ones.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { TcpRelay } from './tcp-relay.js';

let echo: net.Server;
let echoPort: number;

before(async () => {
  echo = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as net.AddressInfo).port;
});

after(async () => {
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

/** A client through the relay, with everything it received and how it ended. */
async function connect(relay: TcpRelay) {
  const socket = net.connect(relay.port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const state = { received: '', error: undefined as NodeJS.ErrnoException | undefined };
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    state.received += chunk;
  });
  socket.on('error', (err) => {
    state.error = err;
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, state, closed };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('bytes flow both ways; freeze holds them with the connection up, thaw delivers them', async () => {
  const relay = await TcpRelay.start({ host: '127.0.0.1', port: echoPort });
  try {
    const client = await connect(relay);
    client.socket.write('ping');
    await until(() => client.state.received === 'ping', 'the echo');
    assert.equal(relay.acceptedCount, 1);
    relay.freeze();
    client.socket.write('held');
    await sleep(200);
    assert.equal(client.state.received, 'ping', 'nothing moves while frozen');
    assert.equal(client.socket.destroyed, false);
    relay.thaw();
    await until(() => client.state.received === 'pingheld', 'the held bytes');
    client.socket.destroy();
  } finally {
    await relay.close();
  }
});

test('dropConnections resets the client; the relay still accepts new connections', async () => {
  const relay = await TcpRelay.start({ host: '127.0.0.1', port: echoPort });
  try {
    const first = await connect(relay);
    await until(() => relay.acceptedCount === 1, 'the accept');
    relay.dropConnections();
    await first.closed;
    assert.equal(first.state.error?.code, 'ECONNRESET');
    const second = await connect(relay);
    second.socket.write('again');
    await until(() => second.state.received === 'again', 'the echo after a drop');
    second.socket.destroy();
  } finally {
    await relay.close();
  }
});

test('cut closes every connection and refuses new ones; a second cut does nothing', async () => {
  const relay = await TcpRelay.start({ host: '127.0.0.1', port: echoPort });
  const client = await connect(relay);
  await until(() => relay.acceptedCount === 1, 'the accept');
  await relay.cut();
  await client.closed;
  await relay.cut();
  await assert.rejects(
    new Promise<void>((resolve, reject) => {
      const socket = net.connect(relay.port, '127.0.0.1', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', reject);
    }),
    { code: 'ECONNREFUSED' },
  );
});
