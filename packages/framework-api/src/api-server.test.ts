// Proves the request pipeline on its own, with a small route table of fakes over real HTTP: the one error table (every code the brief lists has its status), an answer that fails its schema or an unexpected exception is a logged 500 API_INTERNAL, unknown codes pass through as 500, and the in-flight limit answers 503 API_BUSY with Retry-After.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ShaleError } from '@shale/common';
import { ApiMetrics } from './api-metrics.js';
import { ApiRequestHandler } from './api-server.js';
import { httpStatusOf } from './error-table.js';
import { s } from './json-schema.js';
import type { ApiResources } from './resources.js';
import { compilePath } from './router.js';
import type { Route, RouteReply, RouteServices } from './routes.js';

const TOKEN = 'c'.repeat(64);

function fakeRoute(
  path: string,
  handle: () => Promise<RouteReply<unknown>>,
  response = s.object({ n: s.integer() }),
): Route {
  return {
    method: 'GET',
    path: compilePath(path),
    operationId: path,
    summary: path,
    tag: 'test',
    auth: true,
    params: {},
    query: s.object({}),
    body: undefined,
    status: 200,
    alsoStatuses: [],
    response,
    contentType: 'application/json',
    responseHeaders: [],
    handle,
  };
}

test('the error table gives every code of the brief its status; unknown codes are 500', () => {
  const expected: Record<string, number> = {
    API_BAD_REQUEST: 400,
    API_BAD_JSON: 400,
    API_BODY_TOO_LARGE: 413,
    API_UNAUTHORIZED: 401,
    API_ROUTE_NOT_FOUND: 404,
    API_METHOD_NOT_ALLOWED: 405,
    API_INTERNAL: 500,
    VD_INVALID_ARGUMENT: 400,
    VD_OUT_OF_RANGE: 400,
    VD_NOT_FOUND: 404,
    VD_EXISTS: 409,
    VD_HAS_CLONES: 409,
    VD_FENCED: 409,
    VD_BAD_STATE: 409,
    VD_BUSY: 409,
    VD_UNAVAILABLE: 503,
    VD_DEADLINE_EXCEEDED: 503,
    KV_UNAVAILABLE: 503,
    VD_BACKEND_ERROR: 503,
    VD_NO_SPACE: 507,
    VD_CORRUPT: 500,
    VD_IO_ERROR: 500,
    SOMETHING_ELSE: 500,
    toString: 500,
  };
  for (const [code, status] of Object.entries(expected))
    assert.equal(httpStatusOf(code), status, code);
});

describe('the request pipeline', () => {
  const logs: string[] = [];
  let server: http.Server;
  let base = '';
  let releaseSlow: () => void = () => undefined;
  const slow = new Promise<void>((resolve) => {
    releaseSlow = resolve;
  });
  const metrics = new ApiMetrics(() => 0);
  const routes: Route[] = [
    fakeRoute('/good', async () => ({ status: 200, body: { n: 1 } })),
    fakeRoute('/bad-body', async () => ({ status: 200, body: { n: 'one' } })),
    fakeRoute('/bad-status', async () => ({ status: 201, body: { n: 1 } })),
    fakeRoute('/throws', async () => {
      throw new TypeError('undefined is not a function');
    }),
    fakeRoute('/no-space', async () => {
      throw new ShaleError('VD_NO_SPACE', 'the write buffer is full');
    }),
    fakeRoute('/odd-code', async () => {
      throw new ShaleError('VD_CORRUPT', 'a cluster failed its CRC32C');
    }),
    fakeRoute('/slow', async () => {
      await slow;
      return { status: 200, body: { n: 2 } };
    }),
  ];

  before(async () => {
    const handler = new ApiRequestHandler({
      routes,
      services: {
        resources: {} as ApiResources,
        openapi: () => ({
          openapi: '3.1.0',
          info: { title: 't', version: '1' },
          paths: {},
          components: {},
        }),
        metrics: () => metrics.text(),
      } satisfies RouteServices,
      token: TOKEN,
      metrics,
      log: (line) => logs.push(line),
      requestsInFlightMax: 1,
    });
    server = http.createServer(handler.listener);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    releaseSlow();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const get = async (path: string) => {
    const response = await fetch(`${base}${path}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    return {
      status: response.status,
      headers: response.headers,
      body: (await response.json()) as { code?: string; n?: number },
    };
  };

  test('an answer that fails its schema (body or status) is a logged 500 API_INTERNAL', async () => {
    assert.deepEqual((await get('/good')).body, { n: 1 });
    for (const path of ['/bad-body', '/bad-status']) {
      const answer = await get(path);
      assert.equal(answer.status, 500);
      assert.equal(answer.body.code, 'API_INTERNAL');
    }
    const violations = logs.filter((l) => l.includes('response_schema_violation'));
    assert.equal(violations.length, 2);
    assert.match(violations[0] ?? '', /response\.n: must be an integer/);
    assert.match(violations[1] ?? '', /status 201 is not one of 200/);
    assert.match(await metrics.text(), /shale_api_response_schema_violations_total 2/);
  });

  test('an unexpected exception is a 500 API_INTERNAL that does not leak; codes pass through with their status', async () => {
    const thrown = await get('/throws');
    assert.equal(thrown.status, 500);
    assert.deepEqual(thrown.body, {
      code: 'API_INTERNAL',
      message: 'internal error; see the API log',
    });
    assert.ok(
      logs.some((l) => l.includes('internal_error') && l.includes('undefined is not a function')),
    );
    const full = await get('/no-space');
    assert.equal(full.status, 507);
    assert.equal(full.body.code, 'VD_NO_SPACE');
    const odd = await get('/odd-code');
    assert.equal(odd.status, 500);
    assert.equal(odd.body.code, 'VD_CORRUPT');
  });

  test('past the in-flight limit the answer is 503 API_BUSY with Retry-After', async () => {
    const pending = get('/slow');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const busy = await get('/good');
    assert.equal(busy.status, 503);
    assert.equal(busy.body.code, 'API_BUSY');
    assert.equal(busy.headers.get('retry-after'), '1');
    releaseSlow();
    assert.deepEqual((await pending).body, { n: 2 });
    assert.equal((await get('/good')).status, 200);
  });
});
