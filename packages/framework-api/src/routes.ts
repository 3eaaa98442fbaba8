/**
 * The route table: every endpoint of the API in one ordered list, each with its method,
 * path, schemas (path parameters, query, body, answer), success status and what it does.
 * The server validates with these schemas and the OpenAPI document is generated from this
 * table, so a route cannot be served without being documented, nor documented wrongly.
 */
import { assert } from '@shale/common';
import {
  API_NAME_PATTERN,
  API_OPERATION_ID_PATTERN,
  API_REGISTRY_ID_PATTERN,
} from './constants.js';
import type { Infer, ObjectSchema, Properties, Schema, StringSchema } from './json-schema.js';
import { s } from './json-schema.js';
import type { ApiResources } from './resources.js';
import { type CompiledPath, compilePath, pathParams } from './router.js';
import {
  AsdListSchema,
  BackendListSchema,
  BackendSchema,
  CloneBodySchema,
  CreateIscsiTargetBodySchema,
  CreateSnapshotBodySchema,
  CreateVdiskBodySchema,
  CreateVpoolBodySchema,
  HealthSchema,
  IscsiTargetListSchema,
  IscsiTargetSchema,
  MetricsTextSchema,
  type OpenApiDocument,
  OpenApiDocumentSchema,
  OperationListSchema,
  OperationSchema,
  PresetListSchema,
  PresetQuerySchema,
  ResizeVdiskBodySchema,
  RollbackBodySchema,
  ScrubBodySchema,
  SnapshotListSchema,
  SnapshotSchema,
  StatsSchema,
  StorageRouterListSchema,
  SyncBodySchema,
  VdiskChangeSchema,
  VdiskListSchema,
  VdiskSchema,
  VpoolListSchema,
  VpoolSchema,
} from './schemas.js';

export type HttpMethod = 'GET' | 'POST' | 'DELETE';

/** What a handler can use besides the resources. */
export interface RouteServices {
  readonly resources: ApiResources;
  /** The OpenAPI document, generated once from this table. */
  readonly openapi: () => OpenApiDocument;
  /** Prometheus text of the API's registry. */
  readonly metrics: () => Promise<string>;
}

export interface RouteReply<R> {
  readonly status: number;
  readonly body: R;
  readonly headers?: Readonly<Record<string, string>>;
}

type InferOr<S, Otherwise> = S extends Schema ? Infer<S> : Otherwise;

export interface RouteRequest<P extends string, Q, B> {
  readonly params: Readonly<Record<P, string>>;
  readonly query: InferOr<Q, Record<never, never>>;
  readonly body: InferOr<B, undefined>;
}

export type ResponseContentType = 'application/json' | 'text/plain';

interface RouteSpec<P extends string, Q, B, R> {
  readonly method: HttpMethod;
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: string;
  /** Default true: the bearer token is required. */
  readonly auth?: boolean;
  readonly params?: { readonly [K in P]: StringSchema };
  readonly query?: Q;
  readonly body?: B;
  /** The success status, and other statuses answered with the same schema (/health's 503). */
  readonly status: number;
  readonly alsoStatuses?: readonly number[];
  /** Absent: no body (204). */
  readonly response?: R;
  readonly contentType?: ResponseContentType;
  /** Headers the success answer carries, for the document. */
  readonly responseHeaders?: readonly 'Location'[];
}

type Handler<P extends string, Q, B, R> = (
  services: RouteServices,
  request: RouteRequest<P, Q, B>,
) => Promise<RouteReply<InferOr<R, undefined>>>;

/** A route with its types erased: the server validates before it calls `handle`. */
export interface Route {
  readonly method: HttpMethod;
  readonly path: CompiledPath;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: string;
  readonly auth: boolean;
  readonly params: Readonly<Record<string, StringSchema>>;
  readonly query: ObjectSchema<Properties, string>;
  readonly body: ObjectSchema<Properties, string> | undefined;
  readonly status: number;
  readonly alsoStatuses: readonly number[];
  readonly response: Schema | undefined;
  readonly contentType: ResponseContentType;
  readonly responseHeaders: readonly 'Location'[];
  readonly handle: (
    services: RouteServices,
    request: {
      readonly params: Readonly<Record<string, string>>;
      readonly query: unknown;
      readonly body: unknown;
    },
  ) => Promise<RouteReply<unknown>>;
}

const NO_QUERY = s.object({});

/**
 * `route(spec).handle(fn)`: two steps so that the schemas alone fix the types, and the
 * handler is then checked against them (inferring both at once is too deep for the
 * compiler). The schema type parameters are unconstrained for the same reason; the
 * builders in json-schema.ts only make Schemas, and the Route stores them as such.
 */
function route<P extends string = never, Q = undefined, B = undefined, R = undefined>(
  spec: RouteSpec<P, Q, B, R>,
): { handle(handler: Handler<P, Q, B, R>): Route } {
  return { handle: (handler) => routeOf(spec, handler as Route['handle']) };
}

function routeOf<P extends string, Q, B, R>(
  spec: RouteSpec<P, Q, B, R>,
  handle: Route['handle'],
): Route {
  const body = spec.body as ObjectSchema<Properties, string> | undefined;
  const path = compilePath(spec.path);
  const params: Readonly<Record<string, StringSchema>> = spec.params ?? {};
  assert(
    JSON.stringify(pathParams(path).sort()) === JSON.stringify(Object.keys(params).sort()),
    `${spec.method} ${spec.path}: the path's parameters and the params schemas differ`,
  );
  assert(
    body === undefined || body.additionalProperties === false,
    `${spec.method} ${spec.path}: a request body schema must refuse unknown fields`,
  );
  assert((spec.response === undefined) === (spec.status === 204), `${spec.path}: 204 iff no body`);
  return {
    method: spec.method,
    path,
    operationId: spec.operationId,
    summary: spec.summary,
    tag: spec.tag,
    auth: spec.auth ?? true,
    params,
    query: (spec.query as ObjectSchema<Properties, string> | undefined) ?? NO_QUERY,
    body,
    status: spec.status,
    alsoStatuses: spec.alsoStatuses ?? [],
    response: spec.response as Schema | undefined,
    contentType: spec.contentType ?? 'application/json',
    responseHeaders: spec.responseHeaders ?? [],
    handle,
  };
}

const nameParam = s.string({ pattern: API_NAME_PATTERN, description: 'a vDisk or vPool name' });
const snapshotParam = s.string({ pattern: API_NAME_PATTERN, description: 'a snapshot name' });
const idParam = s.string({ pattern: API_REGISTRY_ID_PATTERN, description: 'a backend id' });
const operationIdParam = s.string({ pattern: API_OPERATION_ID_PATTERN });
/** Checked by the target model (400 ISCSI_BAD_IQN), not here: ':' and '.' come percent-decoded. */
const iqnParam = s.string({ minLength: 1, maxLength: 1024, description: 'the target IQN' });

const ok = <T>(body: T): RouteReply<T> => ({ status: 200, body });
const created = <T>(body: T, location?: string): RouteReply<T> => ({
  status: 201,
  body,
  ...(location === undefined ? {} : { headers: { location } }),
});
const accepted = <T extends { id: string }>(operation: T): RouteReply<T> => ({
  status: 202,
  body: operation,
  headers: { location: `/api/v1/operations/${operation.id}` },
});
const at = (...segments: string[]): string =>
  `/api/v1/${segments.map((segment) => encodeURIComponent(segment)).join('/')}`;

export const ROUTES: readonly Route[] = [
  // ---------------------------------------------------------------- system
  route({
    method: 'GET',
    path: '/health',
    operationId: 'getHealth',
    tag: 'system',
    summary: 'Liveness and readiness: the metadata store and every configured volumedriver',
    auth: false,
    status: 200,
    alsoStatuses: [503],
    response: HealthSchema,
  }).handle(async ({ resources }) => {
    const health = await resources.health();
    return { status: health.status === 'ok' ? 200 : 503, body: health };
  }),
  route({
    method: 'GET',
    path: '/openapi.json',
    operationId: 'getOpenApi',
    tag: 'system',
    summary: 'This document',
    status: 200,
    response: OpenApiDocumentSchema,
  }).handle(async ({ openapi }) => ok(openapi())),
  route({
    method: 'GET',
    path: '/metrics',
    operationId: 'getMetrics',
    tag: 'system',
    summary: 'Prometheus metrics of the API (requests by route and status, latency)',
    status: 200,
    response: MetricsTextSchema,
    contentType: 'text/plain',
  }).handle(async ({ metrics }) => ok(await metrics())),

  // ---------------------------------------------------------------- vPools
  route({
    method: 'GET',
    path: '/api/v1/vpools',
    operationId: 'listVpools',
    tag: 'vpools',
    summary: 'Every vPool',
    status: 200,
    response: VpoolListSchema,
  }).handle(async ({ resources }) => ok({ vpools: await resources.listVpools() })),
  route({
    method: 'POST',
    path: '/api/v1/vpools',
    operationId: 'createVpool',
    tag: 'vpools',
    summary: 'Create a vPool on a backend of the registry (and one of its presets)',
    body: CreateVpoolBodySchema,
    status: 201,
    response: VpoolSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { body }) => {
    const vpool = await resources.createVpool(body);
    return created(vpool, at('vpools', vpool.name));
  }),
  route({
    method: 'GET',
    path: '/api/v1/vpools/{name}',
    operationId: 'getVpool',
    tag: 'vpools',
    summary: 'One vPool',
    params: { name: nameParam },
    status: 200,
    response: VpoolSchema,
  }).handle(async ({ resources }, { params }) => ok(await resources.getVpool(params.name))),

  // ---------------------------------------------------------------- vDisks
  route({
    method: 'GET',
    path: '/api/v1/vdisks',
    operationId: 'listVdisks',
    tag: 'vdisks',
    summary: 'Every vDisk, as its owner sees it',
    status: 200,
    response: VdiskListSchema,
  }).handle(async ({ resources }) => ok({ vdisks: await resources.listVdisks() })),
  route({
    method: 'POST',
    path: '/api/v1/vdisks',
    operationId: 'createVdisk',
    tag: 'vdisks',
    summary:
      'Create a thin vDisk (vpool defaults to the only vPool when there is exactly one); warnings say when the vDisks provision more than the backend has free',
    body: CreateVdiskBodySchema,
    status: 201,
    response: VdiskChangeSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { body }) => {
    const vdisk = await resources.createVdisk(body);
    return created(vdisk, at('vdisks', vdisk.name));
  }),
  route({
    method: 'GET',
    path: '/api/v1/vdisks/{name}',
    operationId: 'getVdisk',
    tag: 'vdisks',
    summary: 'One vDisk, from its owner (snapshots, stats)',
    params: { name: nameParam },
    status: 200,
    response: VdiskSchema,
  }).handle(async ({ resources }, { params }) => ok(await resources.getVdisk(params.name))),
  route({
    method: 'DELETE',
    path: '/api/v1/vdisks/{name}',
    operationId: 'deleteVdisk',
    tag: 'vdisks',
    summary: 'Delete a vDisk and its backend data (an operation; 409 while it has clones)',
    params: { name: nameParam },
    status: 202,
    response: OperationSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { params }) =>
    accepted(await resources.deleteVdisk(params.name)),
  ),
  route({
    method: 'POST',
    path: '/api/v1/vdisks/{name}/resize',
    operationId: 'resizeVdisk',
    tag: 'vdisks',
    summary:
      'Grow a vDisk (shrinking needs force: the tail is discarded); warnings as for a create',
    params: { name: nameParam },
    body: ResizeVdiskBodySchema,
    status: 200,
    response: VdiskChangeSchema,
  }).handle(async ({ resources }, { params, body }) =>
    ok(await resources.resizeVdisk(params.name, body)),
  ),
  route({
    method: 'GET',
    path: '/api/v1/vdisks/{name}/snapshots',
    operationId: 'listSnapshots',
    tag: 'snapshots',
    summary: "A vDisk's snapshots, oldest first",
    params: { name: nameParam },
    status: 200,
    response: SnapshotListSchema,
  }).handle(async ({ resources }, { params }) =>
    ok({ snapshots: await resources.listSnapshots(params.name) }),
  ),
  route({
    method: 'POST',
    path: '/api/v1/vdisks/{name}/snapshots',
    operationId: 'createSnapshot',
    tag: 'snapshots',
    summary: 'Snapshot a vDisk',
    params: { name: nameParam },
    body: CreateSnapshotBodySchema,
    status: 201,
    response: SnapshotSchema,
  }).handle(async ({ resources }, { params, body }) =>
    created(await resources.createSnapshot(params.name, body.name)),
  ),
  route({
    method: 'DELETE',
    path: '/api/v1/vdisks/{name}/snapshots/{snapshot}',
    operationId: 'deleteSnapshot',
    tag: 'snapshots',
    summary: 'Delete a snapshot (409 while clones read from it)',
    params: { name: nameParam, snapshot: snapshotParam },
    status: 204,
  }).handle(async ({ resources }, { params }) => {
    await resources.deleteSnapshot(params.name, params.snapshot);
    return { status: 204, body: undefined };
  }),
  route({
    method: 'POST',
    path: '/api/v1/vdisks/{name}/clone',
    operationId: 'cloneVdisk',
    tag: 'vdisks',
    summary: 'Clone a vDisk from one of its snapshots (an operation; its result is the new vDisk)',
    params: { name: nameParam },
    body: CloneBodySchema,
    status: 202,
    response: OperationSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { params, body }) =>
    accepted(await resources.cloneVdisk(params.name, body)),
  ),
  route({
    method: 'POST',
    path: '/api/v1/vdisks/{name}/rollback',
    operationId: 'rollbackVdisk',
    tag: 'vdisks',
    summary: 'Roll a vDisk back to a snapshot (an operation; later snapshots go)',
    params: { name: nameParam },
    body: RollbackBodySchema,
    status: 202,
    response: OperationSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { params, body }) =>
    accepted(await resources.rollbackVdisk(params.name, body.snapshot)),
  ),
  route({
    method: 'POST',
    path: '/api/v1/vdisks/{name}/sync',
    operationId: 'syncVdisk',
    tag: 'vdisks',
    summary: 'Make everything written so far durable in the backend (an operation)',
    params: { name: nameParam },
    body: SyncBodySchema,
    status: 202,
    response: OperationSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { params }) => accepted(await resources.syncVdisk(params.name))),
  route({
    method: 'POST',
    path: '/api/v1/vdisks/{name}/scrub',
    operationId: 'scrubVdisk',
    tag: 'vdisks',
    summary: 'Rewrite SCOs with little live data (an operation; its result is the report)',
    params: { name: nameParam },
    body: ScrubBodySchema,
    status: 202,
    response: OperationSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { params, body }) =>
    accepted(await resources.scrubVdisk(params.name, body)),
  ),

  // ---------------------------------------------------------------- iSCSI targets
  route({
    method: 'GET',
    path: '/api/v1/iscsi-targets',
    operationId: 'listIscsiTargets',
    tag: 'iscsi',
    summary: 'Every iSCSI target (never its CHAP secrets)',
    status: 200,
    response: IscsiTargetListSchema,
  }).handle(async ({ resources }) => ok({ iscsiTargets: await resources.listIscsiTargets() })),
  route({
    method: 'POST',
    path: '/api/v1/iscsi-targets',
    operationId: 'createIscsiTarget',
    tag: 'iscsi',
    summary:
      'Export a vDisk as an iSCSI target (one per vDisk); shale iscsi serve configures tgtd from it. Secrets are write-only',
    body: CreateIscsiTargetBodySchema,
    status: 201,
    response: IscsiTargetSchema,
    responseHeaders: ['Location'],
  }).handle(async ({ resources }, { body }) => {
    const target = await resources.createIscsiTarget(body);
    return created(target, at('iscsi-targets', target.iqn));
  }),
  route({
    method: 'GET',
    path: '/api/v1/iscsi-targets/{iqn}',
    operationId: 'getIscsiTarget',
    tag: 'iscsi',
    summary: 'One iSCSI target (never its CHAP secrets)',
    params: { iqn: iqnParam },
    status: 200,
    response: IscsiTargetSchema,
  }).handle(async ({ resources }, { params }) => ok(await resources.getIscsiTarget(params.iqn))),
  route({
    method: 'DELETE',
    path: '/api/v1/iscsi-targets/{iqn}',
    operationId: 'deleteIscsiTarget',
    tag: 'iscsi',
    summary: 'Stop exporting a vDisk (shale iscsi serve removes it from tgtd); the vDisk stays',
    params: { iqn: iqnParam },
    status: 204,
  }).handle(async ({ resources }, { params }) => {
    await resources.deleteIscsiTarget(params.iqn);
    return { status: 204, body: undefined };
  }),

  // ---------------------------------------------------------------- operations
  route({
    method: 'GET',
    path: '/api/v1/operations',
    operationId: 'listOperations',
    tag: 'operations',
    summary: 'Recent operations, newest first (the last 1000)',
    status: 200,
    response: OperationListSchema,
  }).handle(async ({ resources }) => ok({ operations: resources.operations.list() })),
  route({
    method: 'GET',
    path: '/api/v1/operations/{id}',
    operationId: 'getOperation',
    tag: 'operations',
    summary: 'One operation',
    params: { id: operationIdParam },
    status: 200,
    response: OperationSchema,
  }).handle(async ({ resources }, { params }) => ok(resources.operations.get(params.id))),

  // ---------------------------------------------------------------- backends
  route({
    method: 'GET',
    path: '/api/v1/backends',
    operationId: 'listBackends',
    tag: 'backends',
    summary: 'Every backend of the registry',
    status: 200,
    response: BackendListSchema,
  }).handle(async ({ resources }) => ok({ backends: await resources.listBackends() })),
  route({
    method: 'GET',
    path: '/api/v1/backends/{id}',
    operationId: 'getBackend',
    tag: 'backends',
    summary: 'One backend',
    params: { id: idParam },
    status: 200,
    response: BackendSchema,
  }).handle(async ({ resources }, { params }) => ok(await resources.getBackend(params.id))),
  route({
    method: 'GET',
    path: '/api/v1/presets',
    operationId: 'listPresets',
    tag: 'backends',
    summary: 'The presets of a backend (?backend=ID), or of every backend',
    query: PresetQuerySchema,
    status: 200,
    response: PresetListSchema,
  }).handle(async ({ resources }, { query }) =>
    ok({ presets: await resources.listPresets(query.backend) }),
  ),
  route({
    method: 'GET',
    path: '/api/v1/asds',
    operationId: 'listAsds',
    tag: 'backends',
    summary: 'Every OSD of every backend, with its live health and capacity',
    status: 200,
    response: AsdListSchema,
  }).handle(async ({ resources }) => ok({ asds: await resources.listAsds() })),
  route({
    method: 'GET',
    path: '/api/v1/storagerouters',
    operationId: 'listStorageRouters',
    tag: 'storagerouters',
    summary: 'Every registered storage router (volumedriver), with its health',
    status: 200,
    response: StorageRouterListSchema,
  }).handle(async ({ resources }) => ok({ storageRouters: await resources.listStorageRouters() })),
  route({
    method: 'GET',
    path: '/api/v1/stats',
    operationId: 'getStats',
    tag: 'stats',
    summary: 'Per-vDisk statistics, totals, and backend capacity',
    status: 200,
    response: StatsSchema,
  }).handle(async ({ resources }) => ok(await resources.stats())),
];
