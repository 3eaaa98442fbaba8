/**
 * The OpenAPI 3.1 document, generated from the route table and the very schema objects
 * the server validates with (named ones become components/schemas and `$ref`s), plus the
 * error table as `x-shale-error-codes`.
 */
import { API_BODY_MAX_BYTES } from './constants.js';
import { ERROR_STATUS, UNLISTED_ERROR_STATUS } from './error-table.js';
import { type JsonValue, type Schema, toJsonSchema } from './json-schema.js';
import type { Route } from './routes.js';
import { ErrorSchema, NAMED_SCHEMAS, type OpenApiDocument } from './schemas.js';

export const API_VERSION = '1.0.0';

const STATUS_TEXT: Readonly<Record<number, string>> = {
  200: 'OK',
  201: 'Created (Location: the new resource)',
  202: 'Accepted: an operation runs in the background (Location: the operation to poll)',
  204: 'No Content',
  400: 'Bad request: a field, parameter or the JSON itself (API_BAD_REQUEST, API_BAD_JSON, VD_INVALID_ARGUMENT, ...)',
  401: 'No bearer token or the wrong one (API_UNAUTHORIZED)',
  404: 'No such resource (VD_NOT_FOUND, PROXY_BACKEND_NOT_FOUND, API_OPERATION_NOT_FOUND, ...)',
  413: `Body larger than ${API_BODY_MAX_BYTES} bytes (API_BODY_TOO_LARGE)`,
  415: 'Body that is not application/json (API_UNSUPPORTED_MEDIA_TYPE)',
  503: 'Degraded',
};

const CONTENT_TYPES: Readonly<Record<Route['contentType'], string>> = {
  'application/json': 'application/json',
  'text/plain': 'text/plain',
};

export function openApiDocument(routes: readonly Route[]): OpenApiDocument {
  const named = new Map<Schema, string>(
    Object.entries(NAMED_SCHEMAS).map(([name, schema]) => [schema, name]),
  );
  const json = (schema: Schema): JsonValue => toJsonSchema(schema, named, false);
  const errorResponse = (status: number): JsonValue => ({
    description: STATUS_TEXT[status] ?? 'An error',
    content: { 'application/json': { schema: json(ErrorSchema) } },
  });
  const paths: Record<string, Record<string, JsonValue>> = {};
  for (const route of routes) {
    const parameters: JsonValue[] = [
      ...Object.entries(route.params).map(([name, schema]) => ({
        name,
        in: 'path',
        required: true,
        schema: json(schema),
      })),
      ...Object.entries(route.query.properties).map(([name, schema]) => ({
        name,
        in: 'query',
        required: route.query.required.includes(name),
        schema: json(schema),
      })),
    ];
    const success = (status: number): JsonValue => ({
      description: STATUS_TEXT[status] ?? 'OK',
      ...(route.responseHeaders.length === 0 || status !== route.status
        ? {}
        : {
            headers: Object.fromEntries(
              route.responseHeaders.map((header) => [header, { schema: { type: 'string' } }]),
            ),
          }),
      ...(route.response === undefined
        ? {}
        : { content: { [CONTENT_TYPES[route.contentType]]: { schema: json(route.response) } } }),
    });
    const responses: Record<string, JsonValue> = {};
    for (const status of [route.status, ...route.alsoStatuses]) responses[status] = success(status);
    const hasInput = route.body !== undefined || parameters.length > 0;
    if (hasInput) responses[400] = errorResponse(400);
    if (route.auth) responses[401] = errorResponse(401);
    if (Object.keys(route.params).length > 0) responses[404] = errorResponse(404);
    if (route.body !== undefined) {
      responses[413] = errorResponse(413);
      responses[415] = errorResponse(415);
    }
    responses.default = {
      description: 'Any other error: see x-shale-error-codes for every code and its status',
      content: { 'application/json': { schema: json(ErrorSchema) } },
    };
    const operation: Record<string, JsonValue> = {
      operationId: route.operationId,
      summary: route.summary,
      tags: [route.tag],
      security: route.auth ? [{ bearer: [] }] : [],
      parameters,
      responses,
    };
    if (route.body !== undefined) {
      operation.requestBody = {
        required: route.body.required.length > 0,
        content: { 'application/json': { schema: json(route.body) } },
      };
    }
    const item = paths[route.path.template] ?? {};
    item[route.method.toLowerCase()] = operation;
    paths[route.path.template] = item;
  }
  const schemas: Record<string, JsonValue> = {};
  for (const [name, schema] of Object.entries(NAMED_SCHEMAS))
    schemas[name] = toJsonSchema(schema, named, true);
  // Built first, returned after: the document's schema is open (extra fields are fine).
  const document = {
    openapi: '3.1.0',
    info: {
      title: 'Shale framework API',
      version: API_VERSION,
      description:
        'vPools, vDisks, snapshots, clones, backends, presets, ASDs and storage routers of a Shale cluster. Every route but GET /health needs `Authorization: Bearer <token>`. Errors are `{code, message}`; long operations answer 202 with an operation to poll.',
    },
    paths,
    components: {
      schemas,
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'the token in the file given to `shale api serve --token-file`',
        },
      },
    },
    'x-shale-error-codes': { ...ERROR_STATUS, '*': UNLISTED_ERROR_STATUS },
  };
  return document;
}
