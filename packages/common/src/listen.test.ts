// Proves listenOn resolves with the port the server got, and turns a listen failure into a rejection that leaves the server closed.
import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import { listenOn } from './listen.js';

test('listenOn: port 0 gets a free port; a taken port rejects with EADDRINUSE', async () => {
  const first = net.createServer();
  const port = await listenOn(first, 0, '127.0.0.1');
  assert.ok(port > 0);
  const second = net.createServer();
  await assert.rejects(listenOn(second, port, '127.0.0.1'), { code: 'EADDRINUSE' });
  assert.equal(second.listening, false);
  assert.equal(second.listenerCount('error'), 0);
  await new Promise<void>((resolve) => first.close(() => resolve()));
});
