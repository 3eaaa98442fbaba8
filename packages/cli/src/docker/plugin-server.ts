/**
 * The Docker volume plugin protocol (v1, JSON over HTTP POST on a Unix socket) in front of
 * a VolumeDriver. Every answer is HTTP 200 with an `Err` field: empty on success, else one
 * sentence that the docker CLI prints as it is (`shale: CODE: message`). No call hangs: one
 * that runs past its budget answers with an error while its work finishes behind it.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { errorMessage, ShaleError } from '@shale/common';
import {
  LONG_CALL_BUDGET_MS,
  MAX_REQUEST_BYTES,
  PLUGIN_CONTENT_TYPE,
  SHORT_CALL_BUDGET_MS,
} from './constants.js';
import type { VolumeDriver } from './volume-driver.js';

type Body = Record<string, unknown>;
type Handler = (driver: VolumeDriver, body: Body) => Promise<Body>;

interface Route {
  readonly handler: Handler;
  readonly budgetMs: number;
}

/** The calls dockerd makes, with what each answers besides `Err`. */
const ROUTES: Readonly<Record<string, Route>> = {
  '/Plugin.Activate': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    handler: async () => ({ Implements: ['VolumeDriver'] }),
  },
  '/VolumeDriver.Capabilities': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    // Global: a volume is the cluster's, the same on every host (one host mounts it at a time).
    handler: async () => ({ Capabilities: { Scope: 'global' } }),
  },
  '/VolumeDriver.Create': {
    budgetMs: LONG_CALL_BUDGET_MS,
    handler: async (driver, body) => {
      await driver.create(body.Name, body.Opts);
      return {};
    },
  },
  '/VolumeDriver.Remove': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    handler: async (driver, body) => {
      await driver.remove(body.Name);
      return {};
    },
  },
  '/VolumeDriver.Mount': {
    budgetMs: LONG_CALL_BUDGET_MS,
    handler: async (driver, body) => ({ Mountpoint: await driver.mount(body.Name, body.ID) }),
  },
  '/VolumeDriver.Unmount': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    handler: async (driver, body) => {
      await driver.unmount(body.Name, body.ID);
      return {};
    },
  },
  '/VolumeDriver.Path': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    handler: async (driver, body) => ({ Mountpoint: await driver.path(body.Name) }),
  },
  '/VolumeDriver.Get': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    handler: async (driver, body) => ({ Volume: await driver.get(body.Name) }),
  },
  '/VolumeDriver.List': {
    budgetMs: SHORT_CALL_BUDGET_MS,
    handler: async (driver) => ({ Volumes: await driver.list() }),
  },
};

/** The `Err` text of a failure: the code and message of ours, any other error's message. */
export function errText(err: unknown): string {
  if (err instanceof ShaleError) return `shale: ${err.code}: ${err.message}`;
  return `shale: ${errorMessage(err)}`;
}

function withBudget<T>(work: Promise<T>, budgetMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ShaleError(
            'DOCKER_TIMEOUT',
            `${what} is still working after ${Math.round(budgetMs / 1000)} s; it goes on, try again in a while`,
          ),
        ),
      budgetMs,
    );
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

async function readBody(request: http.IncomingMessage): Promise<Body> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of request) {
    length += (chunk as Buffer).length;
    if (length > MAX_REQUEST_BYTES) {
      throw new ShaleError('DOCKER_BAD_REQUEST', `request body over ${MAX_REQUEST_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ShaleError('DOCKER_BAD_REQUEST', 'the request body is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ShaleError('DOCKER_BAD_REQUEST', 'the request body is not a JSON object');
  }
  return parsed as Body;
}

export interface PluginServerOptions {
  readonly socketPath: string;
  readonly driver: VolumeDriver;
  readonly log: (line: string) => void;
}

/**
 * Listens on the socket (its directory made; a stale socket file, one nobody answers on,
 * replaced; a live one is DOCKER_SOCKET_IN_USE). Resolves with the server once listening.
 */
export async function startPluginServer(options: PluginServerOptions): Promise<http.Server> {
  const { socketPath, driver, log } = options;
  await fsp.mkdir(path.dirname(socketPath), { recursive: true });
  if (fs.existsSync(socketPath)) {
    if (await answers(socketPath)) {
      throw new ShaleError(
        'DOCKER_SOCKET_IN_USE',
        `another plugin already serves ${socketPath}; stop it first`,
      );
    }
    await fsp.rm(socketPath, { force: true });
  }
  const server = http.createServer((request, response) => {
    void serve(request, response, driver, log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await fsp.chmod(socketPath, 0o660);
  return server;
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function serve(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  driver: VolumeDriver,
  log: (line: string) => void,
): Promise<void> {
  const started = Date.now();
  const call = (request.url ?? '').split('?')[0] ?? '';
  let answer: Body;
  let failedText: string | undefined;
  let body: Body = {};
  try {
    const route = ROUTES[call];
    if (request.method !== 'POST' || route === undefined) {
      throw new ShaleError(
        'DOCKER_BAD_REQUEST',
        `${request.method} ${call} is not a call of the volume plugin protocol`,
      );
    }
    body = await readBody(request);
    answer = { ...(await withBudget(route.handler(driver, body), route.budgetMs, call)), Err: '' };
  } catch (err) {
    failedText = errText(err);
    answer = { Err: failedText };
  }
  const named = typeof body.Name === 'string' ? ` ${body.Name}` : '';
  if (
    call !== '/VolumeDriver.Get' &&
    call !== '/VolumeDriver.List' &&
    call !== '/VolumeDriver.Path'
  ) {
    log(
      `shale docker: ${call.slice(1)}${named}: ${failedText ?? 'ok'} (${Date.now() - started} ms)`,
    );
  } else if (failedText !== undefined && !failedText.includes('DOCKER_NO_SUCH_VOLUME')) {
    log(`shale docker: ${call.slice(1)}${named}: ${failedText}`);
  }
  const text = JSON.stringify(answer);
  response.writeHead(200, {
    'content-type': PLUGIN_CONTENT_TYPE,
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}
