import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, ShaleError } from '@shale/common';
import {
  API_CLIENT_POLL_INITIAL_MS,
  API_CLIENT_POLL_MAX_MS,
  API_CLIENT_REQUEST_TIMEOUT_MS,
  API_CLIENT_WAIT_TIMEOUT_MS,
} from './constants.js';
import { ApiErrorCode, apiError } from './errors.js';
import type {
  Asd,
  Backend,
  CloneBody,
  CreateIscsiTargetBody,
  CreateVdiskBody,
  CreateVpoolBody,
  Health,
  IscsiTarget,
  OpenApiDocument,
  Operation,
  Preset,
  ResizeVdiskBody,
  ScrubBody,
  Snapshot,
  Stats,
  StorageRouter,
  Vdisk,
  VdiskChange,
  Vpool,
} from './schemas.js';

export interface ApiClientOptions {
  /** `http://host:port` of the API. */
  readonly url: string;
  /** The bearer token (the content of the API's token file). */
  readonly token: string;
  readonly requestTimeoutMs?: number;
  /** The seam to the network (default: the global fetch). */
  readonly fetch?: typeof fetch;
}

export interface WaitOptions {
  /** Called with the operation after every poll (running ones included). */
  readonly onProgress?: (operation: Operation) => void;
  readonly timeoutMs?: number;
}

/** A raw answer, for callers that want the status and headers too. */
export interface ApiResponse {
  readonly status: number;
  readonly headers: Headers;
  /** Parsed JSON, the text of a text answer, or undefined for no body. */
  readonly body: unknown;
}

const seg = (value: string): string => encodeURIComponent(value);

/**
 * A typed client of every endpoint of the framework API (fetch-based). A failed request
 * throws a ShaleError with the server's code (API_*, VD_*, ...) and `details.httpStatus`;
 * API_UNREACHABLE when the server cannot be reached, API_CLIENT_TIMEOUT past the request
 * timeout, API_BAD_RESPONSE when the answer is not the API's JSON. Nothing is retried.
 * Answers are trusted to match the server's schemas (the server checks them); the types
 * are the ones inferred from those schemas.
 */
export class ApiClient {
  private readonly base: string;
  private readonly token: string;
  private readonly requestTimeoutMs: number;
  private readonly fetch: typeof fetch;

  constructor(options: ApiClientOptions) {
    this.fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.base = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.requestTimeoutMs = options.requestTimeoutMs ?? API_CLIENT_REQUEST_TIMEOUT_MS;
  }

  // ---------------------------------------------------------------- system

  /** The health report, whether ok (200) or degraded (503). */
  async health(): Promise<Health> {
    const response = await this.send('GET', '/health', undefined);
    if (response.status !== 200 && response.status !== 503)
      throw this.failure('GET', '/health', response);
    return response.body as Health;
  }
  openapi(): Promise<OpenApiDocument> {
    return this.call('GET', '/openapi.json');
  }
  metrics(): Promise<string> {
    return this.call('GET', '/metrics');
  }

  // ---------------------------------------------------------------- vPools

  async listVpools(): Promise<Vpool[]> {
    return (await this.call<{ vpools: Vpool[] }>('GET', '/api/v1/vpools')).vpools;
  }
  createVpool(body: CreateVpoolBody): Promise<Vpool> {
    return this.call('POST', '/api/v1/vpools', body);
  }
  getVpool(name: string): Promise<Vpool> {
    return this.call('GET', `/api/v1/vpools/${seg(name)}`);
  }

  // ---------------------------------------------------------------- vDisks

  async listVdisks(): Promise<Vdisk[]> {
    return (await this.call<{ vdisks: Vdisk[] }>('GET', '/api/v1/vdisks')).vdisks;
  }
  /** The new vDisk, with `warnings` when the vDisks now provision more than is free. */
  createVdisk(body: CreateVdiskBody): Promise<VdiskChange> {
    return this.call('POST', '/api/v1/vdisks', body);
  }
  getVdisk(name: string): Promise<Vdisk> {
    return this.call('GET', `/api/v1/vdisks/${seg(name)}`);
  }
  /** An operation: wait for it with waitForOperation. */
  deleteVdisk(name: string): Promise<Operation> {
    return this.call('DELETE', `/api/v1/vdisks/${seg(name)}`);
  }
  /** The resized vDisk, with `warnings` as for createVdisk. */
  resizeVdisk(name: string, body: ResizeVdiskBody): Promise<VdiskChange> {
    return this.call('POST', `/api/v1/vdisks/${seg(name)}/resize`, body);
  }
  async listSnapshots(name: string): Promise<Snapshot[]> {
    return (
      await this.call<{ snapshots: Snapshot[] }>('GET', `/api/v1/vdisks/${seg(name)}/snapshots`)
    ).snapshots;
  }
  createSnapshot(name: string, snapshotName: string): Promise<Snapshot> {
    return this.call('POST', `/api/v1/vdisks/${seg(name)}/snapshots`, { name: snapshotName });
  }
  async deleteSnapshot(name: string, snapshotName: string): Promise<void> {
    await this.call('DELETE', `/api/v1/vdisks/${seg(name)}/snapshots/${seg(snapshotName)}`);
  }
  /** An operation whose result is the new vDisk. */
  cloneVdisk(name: string, body: CloneBody): Promise<Operation> {
    return this.call('POST', `/api/v1/vdisks/${seg(name)}/clone`, body);
  }
  /** An operation whose result is the rolled-back vDisk. */
  rollbackVdisk(name: string, snapshotName: string): Promise<Operation> {
    return this.call('POST', `/api/v1/vdisks/${seg(name)}/rollback`, { snapshot: snapshotName });
  }
  /** An operation; succeeded = everything written before it is in the backend. */
  syncVdisk(name: string): Promise<Operation> {
    return this.call('POST', `/api/v1/vdisks/${seg(name)}/sync`, {});
  }
  /** An operation whose result is the scrub report. */
  scrubVdisk(name: string, body: ScrubBody = {}): Promise<Operation> {
    return this.call('POST', `/api/v1/vdisks/${seg(name)}/scrub`, body);
  }

  // ---------------------------------------------------------------- iSCSI targets

  async listIscsiTargets(): Promise<IscsiTarget[]> {
    return (await this.call<{ iscsiTargets: IscsiTarget[] }>('GET', '/api/v1/iscsi-targets'))
      .iscsiTargets;
  }
  /** The new target as the API shows it: its CHAP users, never their secrets. */
  createIscsiTarget(body: CreateIscsiTargetBody): Promise<IscsiTarget> {
    return this.call('POST', '/api/v1/iscsi-targets', body);
  }
  getIscsiTarget(iqn: string): Promise<IscsiTarget> {
    return this.call('GET', `/api/v1/iscsi-targets/${seg(iqn)}`);
  }
  async deleteIscsiTarget(iqn: string): Promise<void> {
    await this.call('DELETE', `/api/v1/iscsi-targets/${seg(iqn)}`);
  }

  // ---------------------------------------------------------------- operations

  async listOperations(): Promise<Operation[]> {
    return (await this.call<{ operations: Operation[] }>('GET', '/api/v1/operations')).operations;
  }
  getOperation(id: string): Promise<Operation> {
    return this.call('GET', `/api/v1/operations/${seg(id)}`);
  }

  /**
   * Polls until the operation is finished (every API_CLIENT_POLL_INITIAL_MS at first,
   * doubling up to API_CLIENT_POLL_MAX_MS). Resolves with a succeeded operation; a failed
   * one throws a ShaleError with the operation's code (details.operationId); past
   * `timeoutMs`, API_CLIENT_TIMEOUT (the operation goes on in the cluster).
   */
  async waitForOperation(id: string, options: WaitOptions = {}): Promise<Operation> {
    const timeoutMs = options.timeoutMs ?? API_CLIENT_WAIT_TIMEOUT_MS;
    const deadlineMs = Date.now() + timeoutMs;
    let intervalMs = API_CLIENT_POLL_INITIAL_MS;
    for (;;) {
      const operation = await this.getOperation(id);
      options.onProgress?.(operation);
      if (operation.state === 'succeeded') return operation;
      if (operation.state === 'failed') {
        throw new ShaleError(
          operation.error?.code ?? ApiErrorCode.Internal,
          operation.error?.message ?? `operation ${id} failed`,
          { details: { operationId: id, kind: operation.kind } },
        );
      }
      const leftMs = deadlineMs - Date.now();
      if (leftMs <= 0) {
        throw apiError(
          ApiErrorCode.ClientTimeout,
          `operation ${id} (${operation.kind} ${operation.target}) still running after ${timeoutMs} ms`,
          { details: { operationId: id } },
        );
      }
      await sleep(Math.min(intervalMs, leftMs));
      intervalMs = Math.min(intervalMs * 2, API_CLIENT_POLL_MAX_MS);
    }
  }

  // ---------------------------------------------------------------- backends, ASDs, routers

  async listBackends(): Promise<Backend[]> {
    return (await this.call<{ backends: Backend[] }>('GET', '/api/v1/backends')).backends;
  }
  getBackend(id: string): Promise<Backend> {
    return this.call('GET', `/api/v1/backends/${seg(id)}`);
  }
  /** Of one backend, or of every backend when `backendId` is not given. */
  async listPresets(backendId?: string): Promise<Preset[]> {
    const query = backendId === undefined ? '' : `?backend=${seg(backendId)}`;
    return (await this.call<{ presets: Preset[] }>('GET', `/api/v1/presets${query}`)).presets;
  }
  async listAsds(): Promise<Asd[]> {
    return (await this.call<{ asds: Asd[] }>('GET', '/api/v1/asds')).asds;
  }
  async listStorageRouters(): Promise<StorageRouter[]> {
    return (await this.call<{ storageRouters: StorageRouter[] }>('GET', '/api/v1/storagerouters'))
      .storageRouters;
  }
  stats(): Promise<Stats> {
    return this.call('GET', '/api/v1/stats');
  }

  // ---------------------------------------------------------------- transport

  /** One request; a non-2xx answer throws (see the class comment). */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.send(method, path, body);
    if (response.status < 200 || response.status > 299) throw this.failure(method, path, response);
    return response.body as T;
  }

  /** One request, whatever its status; throws only when there is no usable answer. */
  async send(
    method: string,
    path: string,
    body: unknown,
    headers: Readonly<Record<string, string>> = {},
  ): Promise<ApiResponse> {
    let response: Response;
    try {
      response = await this.fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.requestTimeoutMs),
        redirect: 'error',
      });
    } catch (err) {
      if (err instanceof Error && err.name === 'TimeoutError') {
        throw apiError(
          ApiErrorCode.ClientTimeout,
          `${method} ${path}: no answer from ${this.base} within ${this.requestTimeoutMs} ms`,
          { cause: err },
        );
      }
      const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
      throw apiError(
        ApiErrorCode.Unreachable,
        `${method} ${path}: cannot reach the API at ${this.base}: ${errorMessage(cause)}`,
        { cause: err },
      );
    }
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      throw apiError(
        ApiErrorCode.Unreachable,
        `${method} ${path}: the answer was cut: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    const type = response.headers.get('content-type') ?? '';
    let parsed: unknown;
    if (text.length === 0) parsed = undefined;
    else if (type.startsWith('application/json')) {
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        throw apiError(ApiErrorCode.BadResponse, `${method} ${path}: the answer is not JSON`, {
          cause: err,
          details: { httpStatus: String(response.status) },
        });
      }
    } else parsed = text;
    return { status: response.status, headers: response.headers, body: parsed };
  }

  private failure(method: string, path: string, response: ApiResponse): ShaleError {
    const details = { httpStatus: String(response.status), method, path };
    const body = response.body;
    if (
      typeof body === 'object' &&
      body !== null &&
      typeof (body as { code?: unknown }).code === 'string' &&
      typeof (body as { message?: unknown }).message === 'string'
    ) {
      const { code, message } = body as { code: string; message: string };
      return new ShaleError(code, message, { details });
    }
    return apiError(
      ApiErrorCode.BadResponse,
      `${method} ${path}: HTTP ${response.status} without an error body`,
      { details },
    );
  }
}
