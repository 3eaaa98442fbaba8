// Proves a request body past the limit is answered 413 {code: API_BODY_TOO_LARGE, message} and that the answer reaches the client instead of a reset: by Content-Length before the body is read, with Expect: 100-continue without a 100 Continue (so the body is never sent), and for a chunked body as soon as it passes the limit; each with Node's http client and with curl, 50 MB bodies.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { API_BODY_MAX_BYTES } from './constants.js';
import { ApiTestCluster, type TestApi } from './testing/api-test-cluster.js';

const BODY_BYTES = 50 * 1024 * 1024;
const CHUNK = Buffer.alloc(1024 * 1024, 0x20);
const ANSWER_TIMEOUT_MS = 10_000;

type Mode = 'content-length' | 'expect-continue' | 'chunked';

interface Received {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  readonly gotContinue: boolean;
}

/** POSTs a BODY_BYTES body with Node's http client, writing until the answer comes. */
function nodePost(api: TestApi, mode: Mode): Promise<Received> {
  return new Promise<Received>((resolve, reject) => {
    const url = new URL(api.daemon.url);
    const req = http.request({
      host: url.hostname,
      port: url.port,
      method: 'POST',
      path: '/api/v1/vdisks',
      agent: false,
      headers: {
        authorization: `Bearer ${api.token}`,
        'content-type': 'application/json',
        ...(mode === 'chunked' ? {} : { 'content-length': String(BODY_BYTES) }),
        ...(mode === 'expect-continue' ? { expect: '100-continue' } : {}),
      },
    });
    let answered = false;
    let gotContinue = false;
    let sentBytes = 0;
    const timer = setTimeout(
      () => reject(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms (${mode})`)),
      ANSWER_TIMEOUT_MS,
    );
    const pump = (): void => {
      while (!answered && sentBytes < BODY_BYTES) {
        sentBytes += CHUNK.length;
        if (!req.write(CHUNK)) {
          req.once('drain', pump);
          return;
        }
      }
      if (!answered) req.end();
    };
    req.on('continue', () => {
      gotContinue = true;
      pump();
    });
    req.on('response', (res) => {
      answered = true;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        body += text;
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, gotContinue });
        req.destroy();
      });
    });
    req.on('error', (err) => {
      // Once the answer is in, the server closing the rest of the upload is expected.
      if (!answered) {
        clearTimeout(timer);
        reject(err);
      }
    });
    if (mode === 'expect-continue') req.flushHeaders();
    else pump();
  });
}

function expect413(received: { status: number; body: string }, what: string): void {
  assert.equal(received.status, 413, `${what}: ${received.status} ${received.body}`);
  const body = JSON.parse(received.body) as { code: string; message: string };
  assert.equal(body.code, 'API_BODY_TOO_LARGE', what);
  assert.match(body.message, new RegExp(`larger than ${API_BODY_MAX_BYTES} bytes`), what);
}

/** curl, which must be installed (Debian: apt-get install curl). */
async function curlPost(
  api: TestApi,
  file: string,
  headers: readonly string[],
): Promise<{ status: number; body: string; stderr: string }> {
  const bodyFile = `${file}.answer`;
  const args = [
    '-sS',
    '--max-time',
    String(ANSWER_TIMEOUT_MS / 1000),
    '-o',
    bodyFile,
    '-w',
    '%{http_code}',
    '-X',
    'POST',
    '-T',
    file,
    '-H',
    `Authorization: Bearer ${api.token}`,
    '-H',
    'Content-Type: application/json',
    ...headers.flatMap((header) => ['-H', header]),
    `${api.daemon.url}/api/v1/vdisks`,
  ];
  const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const failed = await new Promise<Error | undefined>((resolve) => {
    child.once('error', resolve);
    child.once('close', () => resolve(undefined));
  });
  if (failed !== undefined)
    assert.fail(`cannot run curl (install the Debian package curl): ${failed.message}`);
  const body = await fs.readFile(bodyFile, 'utf8').catch((err: unknown) => `(no body: ${err})`);
  return { status: Number(stdout.trim()), body, stderr };
}

describe('request bodies past the limit', () => {
  let cluster: ApiTestCluster;
  let api: TestApi;
  let bigFile = '';

  before(async () => {
    cluster = await ApiTestCluster.start();
    api = await cluster.startApi();
    bigFile = path.join(cluster.dir, 'big-body');
    // Sparse: 50 MB of zeros that take no disk space.
    await (await fs.open(bigFile, 'w')).close();
    await fs.truncate(bigFile, BODY_BYTES);
  });
  after(async () => {
    await cluster.close();
  });

  for (const mode of ['content-length', 'expect-continue', 'chunked'] as const) {
    test(`Node http, ${mode}: 413 ${mode === 'chunked' ? 'once the body passes the limit' : 'before the body is read, no 100 Continue'}, and the answer arrives`, async () => {
      const received = await nodePost(api, mode);
      expect413(received, mode);
      assert.equal(received.headers.connection, 'close', mode);
      assert.equal(received.gotContinue, false, 'no 100 Continue for a body that is refused');
    });
  }

  /** A small POST (chunked, or with Content-Length and Expect: 100-continue). */
  const smallPost = (options: {
    expect?: boolean;
    token?: string;
  }): Promise<{ status: number; gotContinue: boolean }> =>
    new Promise((resolve, reject) => {
      const url = new URL(api.daemon.url);
      const body = '{"name":"-bad","sizeBytes":4096}';
      const req = http.request({
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path: '/api/v1/vdisks',
        headers: {
          authorization: `Bearer ${options.token ?? api.token}`,
          'content-type': 'application/json',
          ...(options.expect === true
            ? { expect: '100-continue', 'content-length': String(body.length) }
            : {}),
        },
      });
      let gotContinue = false;
      req.on('continue', () => {
        gotContinue = true;
        req.end(body);
      });
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, gotContinue });
      });
      req.on('error', reject);
      if (options.expect === true) req.flushHeaders();
      else {
        req.write(body.slice(0, 10));
        req.end(body.slice(10));
      }
    });

  test('bodies within the limit are still read: chunked, and after 100 Continue; a refusal before the body sends no 100', async () => {
    assert.deepEqual(await smallPost({}), { status: 400, gotContinue: false });
    assert.deepEqual(await smallPost({ expect: true }), { status: 400, gotContinue: true });
    assert.deepEqual(await smallPost({ expect: true, token: 'f'.repeat(64) }), {
      status: 401,
      gotContinue: false,
    });
  });

  for (const [what, headers] of [
    ['content-length', ['Expect:']],
    ['expect-continue', ['Expect: 100-continue']],
    ['chunked', ['Expect:', 'Transfer-Encoding: chunked']],
  ] as const) {
    test(`curl, ${what}: 413 and its body arrive`, async () => {
      const received = await curlPost(api, bigFile, headers);
      expect413(received, `curl ${what} (${received.stderr.trim()})`);
    });
  }
});
