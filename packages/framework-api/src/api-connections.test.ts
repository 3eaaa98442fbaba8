// Proves the API cannot be locked out by connections that never finish their headers: with the cap's worth of stalled and half-closed sockets held (and more arriving), authenticated requests still succeed within seconds, no address holds more than its cap, stalled connections are answered 408 and closed after the headers deadline (never left half-open), and the default limits are sane.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from './api-client.js';
import {
  API_CLOSE_LINGER_MS,
  API_CONNECTIONS_CHECK_INTERVAL_MS,
  API_CONNECTIONS_MAX,
  API_CONNECTIONS_PER_CLIENT_MAX,
  API_HEADERS_TIMEOUT_MS,
  API_KEEP_ALIVE_TIMEOUT_MS,
} from './constants.js';
import { ApiTestCluster, type TestApi } from './testing/api-test-cluster.js';

/** A request line and one header, never finished: what a stall attack sends. */
const PARTIAL = 'GET /api/v1/vpools HTTP/1.1\r\nHost: x\r\n';

interface Raw {
  readonly socket: net.Socket;
  /** What the server sent (when `read`). */
  readonly received: () => string;
  readonly closed: Promise<void>;
}

/** A raw TCP client that sends `send`, optionally half-closes, and reads or never reads. */
async function openRaw(
  port: number,
  options: { send: string; halfClose?: boolean; read?: boolean; localAddress?: string },
): Promise<Raw> {
  const socket = net.connect({
    port,
    host: '127.0.0.1',
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  });
  let received = '';
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  // Resets are what the server does to connections it evicts or cuts: expected here.
  socket.on('error', () => undefined);
  if (options.read === true) {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString();
    });
  } else socket.pause();
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  if (options.send.length > 0) socket.write(options.send);
  if (options.halfClose === true) socket.end();
  return { socket, received: () => received, closed };
}

async function until(what: string, deadlineMs: number, check: () => boolean): Promise<void> {
  const endMs = Date.now() + deadlineMs;
  while (!check()) {
    if (Date.now() > endMs) assert.fail(`${what}: not within ${deadlineMs} ms`);
    await sleep(25);
  }
}

test('the default connection limits are sane: short headers deadline, checked often, one client below the cap', () => {
  assert.ok(API_HEADERS_TIMEOUT_MS <= 10_000, `headers deadline ${API_HEADERS_TIMEOUT_MS} ms`);
  assert.ok(
    API_CONNECTIONS_CHECK_INTERVAL_MS <= 1_000,
    'Node checks deadlines every 30 s unless told',
  );
  assert.ok(
    API_HEADERS_TIMEOUT_MS + API_CONNECTIONS_CHECK_INTERVAL_MS + API_CLOSE_LINGER_MS <= 15_000,
    'a stalled connection is gone within 15 s',
  );
  assert.ok(API_KEEP_ALIVE_TIMEOUT_MS <= 10_000);
  assert.ok(API_CONNECTIONS_PER_CLIENT_MAX < API_CONNECTIONS_MAX);
  assert.ok(API_CONNECTIONS_PER_CLIENT_MAX >= 16, 'a real client may open a few connections');
});

describe('connection lock-out', () => {
  let cluster: ApiTestCluster;
  const opened: Raw[] = [];

  before(async () => {
    cluster = await ApiTestCluster.start();
  });
  after(async () => {
    for (const raw of opened) raw.socket.destroy();
    await cluster.close();
  });

  const client = (api: TestApi): ApiClient =>
    new ApiClient({ url: api.daemon.url, token: api.token, requestTimeoutMs: 5_000 });

  test('with default limits, the cap of stalled connections plus half-closed ones, and more arriving, do not lock out an authenticated request', async () => {
    const api = await cluster.startApi();
    const port = api.daemon.port;
    for (let i = 0; i < API_CONNECTIONS_MAX; i++)
      opened.push(await openRaw(port, { send: PARTIAL }));
    for (let i = 0; i < 32; i++)
      opened.push(await openRaw(port, { send: 'GET /api/v1/vp', halfClose: true }));
    await sleep(100);

    // The attack goes on while the requests are made.
    let attacking = true;
    const attack = (async () => {
      while (attacking) {
        for (let i = 0; i < 8; i++) opened.push(await openRaw(port, { send: PARTIAL }));
        await sleep(20);
      }
    })();
    try {
      const legit = client(api);
      for (let i = 0; i < 5; i++) {
        const startedMs = Date.now();
        assert.deepEqual(await legit.listVpools(), []);
        assert.ok(Date.now() - startedMs < 5_000);
      }
    } finally {
      attacking = false;
      await attack;
    }
    assert.ok(
      api.daemon.connectionCount <= API_CONNECTIONS_PER_CLIENT_MAX,
      `127.0.0.1 holds ${api.daemon.connectionCount} connections, more than its cap`,
    );
    const metrics = await api.client.metrics();
    const evicted = /shale_api_connections_evicted_total\{reason="client-cap"\} (\d+)/.exec(
      metrics,
    );
    assert.ok(Number(evicted?.[1] ?? 0) > API_CONNECTIONS_MAX - API_CONNECTIONS_PER_CLIENT_MAX);
    for (const raw of opened.splice(0)) raw.socket.destroy();
  });

  test('stalled, silent and half-closed connections are answered 408 and closed after the headers deadline', async () => {
    const api = await cluster.startApi({
      headersTimeoutMs: 300,
      connectionsCheckIntervalMs: 100,
      closeLingerMs: 300,
    });
    const port = api.daemon.port;
    const readers: Raw[] = [];
    for (let i = 0; i < 5; i++) readers.push(await openRaw(port, { send: PARTIAL, read: true }));
    const others: Raw[] = [];
    // These never read and never close their side: only the server can end them.
    for (let i = 0; i < 5; i++) others.push(await openRaw(port, { send: PARTIAL }));
    for (let i = 0; i < 5; i++) others.push(await openRaw(port, { send: '' }));
    for (let i = 0; i < 5; i++)
      others.push(await openRaw(port, { send: 'GET /api/v1/vp', halfClose: true }));
    opened.push(...readers, ...others);
    await until(
      'the server closed every connection',
      3_000,
      () => api.daemon.connectionCount === 0,
    );
    for (const reader of readers) {
      await reader.closed;
      const text = reader.received();
      assert.match(text, /^HTTP\/1\.1 408 /, text);
      assert.match(text, /\r\nconnection: close\r\n/i);
      const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { code: string };
      assert.equal(body.code, 'API_REQUEST_TIMEOUT');
    }
    assert.deepEqual(await client(api).listVpools(), []);
  });

  test('small caps: each address is held to its cap, the global cap evicts the oldest stalled connection of anyone', async () => {
    const api = await cluster.startApi({ connectionsMax: 8, connectionsPerClientMax: 4 });
    const port = api.daemon.port;
    for (const localAddress of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) {
      for (let i = 0; i < 6; i++) opened.push(await openRaw(port, { send: PARTIAL, localAddress }));
    }
    await sleep(100);
    assert.ok(api.daemon.connectionCount <= 8, `${api.daemon.connectionCount} connections`);
    assert.deepEqual(await client(api).listVpools(), []);
    assert.ok(api.daemon.connectionCount <= 8);
    const metrics = await api.client.metrics();
    assert.match(metrics, /shale_api_connections_evicted_total\{reason="client-cap"\} [1-9]/);
    assert.match(metrics, /shale_api_connections_evicted_total\{reason="global-cap"\} [1-9]/);
    assert.match(metrics, /shale_api_connections_open \d/);
  });
});
