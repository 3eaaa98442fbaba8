/**
 * The HTTP side of the API: one request goes through one ordered list of steps (below, in
 * `answer`), each of which either passes or answers with an error from the one table.
 *
 *   1. in-flight limit              503 API_BUSY (Retry-After)
 *   2. path and query split         400 API_BAD_REQUEST
 *   3. route match (answer held)    -
 *   4. bearer token                 401 API_UNAUTHORIZED (WWW-Authenticate); not GET /health
 *   5. no route / wrong method      404 API_ROUTE_NOT_FOUND, 405 API_METHOD_NOT_ALLOWED (Allow)
 *   6. body size                    413 API_BODY_TOO_LARGE: by Content-Length before any byte
 *                                   is read (Expect: 100-continue gets no 100 then), else as
 *                                   soon as the body passes the limit; the connection closes
 *   7. content type                 415 API_UNSUPPORTED_MEDIA_TYPE
 *   8. JSON                         400 API_BAD_JSON
 *   9. path, query, body schemas    400 API_BAD_REQUEST (the failing field in the message)
 *  10. the route's handler          domain codes through the table (404, 409, 503, ...)
 *  11. the answer's own schema      500 API_INTERNAL (logged: a server bug)
 *
 * The token is checked before the route is revealed: without it, every path is a 401.
 */
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { AssertionFailure, errorMessage, ShaleError } from '@shale/common';
import { type ApiMetrics, UNMATCHED_ROUTE } from './api-metrics.js';
import {
  API_BODY_MAX_BYTES,
  API_BUSY_RETRY_AFTER_S,
  API_REQUESTS_IN_FLIGHT_MAX,
  API_TEXT_MAX_CHARS,
} from './constants.js';
import { httpStatusOf } from './error-table.js';
import { ApiErrorCode, apiError } from './errors.js';
import { validate } from './json-schema.js';
import { matchPath, splitPath } from './router.js';
import type { Route, RouteServices } from './routes.js';
import { ErrorSchema } from './schemas.js';
import { bearerMatches } from './token-file.js';

/**
 * The raw answer to a Node 'clientError': malformed HTTP (400 API_BAD_REQUEST), a request
 * past its headers or request deadline (408 API_REQUEST_TIMEOUT), headers past Node's size
 * limit (431 API_HEADERS_TOO_LARGE). A whole HTTP/1.1 response with a `{code, message}`
 * body and `Connection: close`: no request object exists to answer through.
 */
export function clientErrorAnswer(
  err: unknown,
  deadlines: { readonly headersTimeoutMs: number; readonly requestTimeoutMs: number },
): string {
  const nodeCode =
    typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : 'unknown';
  const [code, message] =
    nodeCode === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [
          ApiErrorCode.RequestTimeout,
          `the request did not arrive in time (headers within ${deadlines.headersTimeoutMs} ms, all of it within ${deadlines.requestTimeoutMs} ms)`,
        ]
      : nodeCode === 'HPE_HEADER_OVERFLOW'
        ? [ApiErrorCode.HeadersTooLarge, 'the request headers are too large']
        : [ApiErrorCode.BadRequest, `malformed HTTP request (${nodeCode})`];
  const body = JSON.stringify({ code, message });
  const status = httpStatusOf(code);
  return [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    `content-type: ${CONTENT_TYPE['application/json']}`,
    `content-length: ${Buffer.byteLength(body)}`,
    'cache-control: no-store',
    'connection: close',
    '',
    body,
  ].join('\r\n');
}

export interface ApiRequestHandlerOptions {
  readonly routes: readonly Route[];
  readonly services: RouteServices;
  readonly token: string;
  readonly metrics: ApiMetrics;
  readonly log: (line: string) => void;
  readonly bodyMaxBytes?: number;
  readonly requestsInFlightMax?: number;
}

interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer | undefined;
  readonly route: string;
  /** The connection closes after this answer (Connection: close). */
  readonly close: boolean;
}

type Body = { readonly kind: 'bytes'; readonly bytes: Buffer } | { readonly kind: 'too-large' };

const CONTENT_TYPE: Readonly<Record<Route['contentType'], string>> = {
  'application/json': 'application/json; charset=utf-8',
  'text/plain': 'text/plain; version=0.0.4; charset=utf-8',
};

const WWW_AUTHENTICATE = 'Bearer realm="shale-api"';
const utf8 = new TextDecoder('utf-8', { fatal: true });

export class ApiRequestHandler {
  private inFlight = 0;
  private readonly bodyMaxBytes: number;
  private readonly inFlightMax: number;

  constructor(private readonly options: ApiRequestHandlerOptions) {
    this.bodyMaxBytes = options.bodyMaxBytes ?? API_BODY_MAX_BYTES;
    this.inFlightMax = options.requestsInFlightMax ?? API_REQUESTS_IN_FLIGHT_MAX;
  }

  /** The http.Server 'request' listener. */
  readonly listener = (req: IncomingMessage, res: ServerResponse): void => {
    this.serve(req, res, false);
  };

  /**
   * The http.Server 'checkContinue' listener (a request with Expect: 100-continue): the
   * same pipeline, with 100 Continue sent only once the body is going to be read, so that a
   * refused request (401, 404, 413, ...) never has its body sent at all.
   */
  readonly continueListener = (req: IncomingMessage, res: ServerResponse): void => {
    this.serve(req, res, true);
  };

  private serve(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    const startedNs = process.hrtime.bigint();
    const beforeBody = expectsContinue ? () => res.writeContinue() : () => undefined;
    this.answer(req, beforeBody).then(
      (answer) => {
        const seconds = Number(process.hrtime.bigint() - startedNs) / 1e9;
        this.options.metrics.observeRequest(
          req.method ?? '-',
          answer.route,
          answer.status,
          seconds,
        );
        if (res.destroyed) return;
        // A body that was not read (a refusal before step 6, a 413) cannot be skipped to
        // reach a next request: the connection closes (lingering, see connection-guard.ts).
        const close = answer.close || !req.complete;
        try {
          res.writeHead(answer.status, {
            'cache-control': 'no-store',
            ...answer.headers,
            ...(close ? { connection: 'close' } : {}),
            ...(answer.body === undefined ? {} : { 'content-length': String(answer.body.length) }),
          });
          res.end(answer.body);
        } catch (err) {
          // A header value Node refuses (a bug of ours): cut the connection, keep serving.
          this.options.log(
            `api: cannot write the answer to ${req.method} ${req.url}: ${errorMessage(err)}`,
          );
          res.destroy();
        }
      },
      (err: unknown) => {
        // answer() turns every failure into an answer; getting here is a bug: crash loudly.
        res.destroy();
        setImmediate(() => {
          throw err;
        });
      },
    );
  }

  private async answer(req: IncomingMessage, beforeBody: () => void): Promise<Answer> {
    let routeLabel = UNMATCHED_ROUTE;
    let counted = false;
    try {
      // 1. in-flight limit
      if (this.inFlight >= this.inFlightMax) {
        throw apiError(
          ApiErrorCode.Busy,
          `${this.inFlight} requests in progress (at most ${this.inFlightMax}); retry later`,
        );
      }
      this.inFlight++;
      this.options.metrics.inFlight.inc();
      counted = true;

      // 2. path and query
      const rawUrl = req.url ?? '/';
      const queryAt = rawUrl.indexOf('?');
      const pathname = queryAt < 0 ? rawUrl : rawUrl.slice(0, queryAt);
      if (!pathname.startsWith('/'))
        throw apiError(
          ApiErrorCode.BadRequest,
          `path ${JSON.stringify(pathname)} must start with /`,
        );
      const search = new URLSearchParams(queryAt < 0 ? '' : rawUrl.slice(queryAt + 1));

      // 3. route match: the answer to a miss waits until the token is checked
      const segments = splitPath(pathname);
      const method = req.method ?? '';
      let matched: { route: Route; params: Record<string, string> } | undefined;
      const allowed: string[] = [];
      let badPath: unknown;
      for (const route of this.options.routes) {
        let params: Record<string, string> | undefined;
        try {
          params = matchPath(route.path, segments);
        } catch (err) {
          badPath ??= err;
          continue;
        }
        if (params === undefined) continue;
        if (route.method === method) {
          matched = { route, params };
          break;
        }
        allowed.push(route.method);
      }
      if (matched !== undefined) routeLabel = matched.route.path.template;

      // 4. bearer token
      if (
        matched?.route.auth !== false &&
        !bearerMatches(req.headers.authorization, this.options.token)
      ) {
        throw apiError(
          ApiErrorCode.Unauthorized,
          req.headers.authorization === undefined
            ? "this route needs Authorization: Bearer <token> (the token is in the API's --token-file)"
            : "the bearer token is not the API's token",
          {
            details: {
              challenge:
                req.headers.authorization === undefined
                  ? WWW_AUTHENTICATE
                  : `${WWW_AUTHENTICATE}, error="invalid_token"`,
            },
          },
        );
      }

      // 5. no route, wrong method
      if (matched === undefined) {
        if (allowed.length > 0) {
          throw apiError(
            ApiErrorCode.MethodNotAllowed,
            `${method} is not served on ${pathname}; it serves ${allowed.join(', ')}`,
            { details: { allow: allowed.join(', ') } },
          );
        }
        if (badPath !== undefined) throw badPath;
        throw apiError(ApiErrorCode.RouteNotFound, `no route ${pathname}; see GET /openapi.json`);
      }
      const { route, params } = matched;

      // 6. body size: by Content-Length before anything is read, else while reading
      const declared = Number(req.headers['content-length'] ?? '0');
      if (declared > this.bodyMaxBytes) {
        throw apiError(
          ApiErrorCode.BodyTooLarge,
          `the request body (Content-Length ${declared}) is larger than ${this.bodyMaxBytes} bytes`,
        );
      }
      beforeBody();
      const body = await this.readBody(req);
      if (body.kind === 'too-large') {
        throw apiError(
          ApiErrorCode.BodyTooLarge,
          `the request body is larger than ${this.bodyMaxBytes} bytes`,
        );
      }

      // 7. content type, 8. JSON
      let parsed: unknown;
      if (body.bytes.length > 0) {
        const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
        if (type !== 'application/json') {
          throw apiError(
            ApiErrorCode.UnsupportedMediaType,
            `the request body must be Content-Type: application/json, not ${JSON.stringify(req.headers['content-type'] ?? '(none)')}`,
          );
        }
        if (route.body === undefined)
          throw apiError(
            ApiErrorCode.BadRequest,
            `body: ${method} ${route.path.template} takes no body`,
          );
        try {
          parsed = JSON.parse(utf8.decode(body.bytes));
        } catch (err) {
          throw apiError(ApiErrorCode.BadJson, `body: not JSON (${errorMessage(err)})`, {
            cause: err,
          });
        }
      } else if (route.body !== undefined) {
        parsed = {};
      }

      // 9. schemas: path parameters, query, body
      for (const [name, schema] of Object.entries(route.params)) {
        const failure = validate(schema, params[name], `path.${name}`);
        if (failure !== undefined)
          throw apiError(ApiErrorCode.BadRequest, `${failure.path}: ${failure.message}`);
      }
      const query: Record<string, string> = {};
      for (const [name, value] of search) {
        if (Object.hasOwn(query, name))
          throw apiError(ApiErrorCode.BadRequest, `query.${name}: given more than once`);
        query[name] = value;
      }
      const queryFailure = validate(route.query, query, 'query');
      if (queryFailure !== undefined) {
        throw apiError(ApiErrorCode.BadRequest, `${queryFailure.path}: ${queryFailure.message}`);
      }
      if (route.body !== undefined) {
        const failure = validate(route.body, parsed, 'body');
        if (failure !== undefined)
          throw apiError(ApiErrorCode.BadRequest, `${failure.path}: ${failure.message}`);
      }

      // 10. the handler
      const reply = await route.handle(this.options.services, { params, query, body: parsed });

      // 11. the answer's own schema
      const statuses = [route.status, ...route.alsoStatuses];
      const violation = !statuses.includes(reply.status)
        ? `status ${reply.status} is not one of ${statuses.join(', ')}`
        : route.response === undefined
          ? reply.body === undefined
            ? undefined
            : 'a body on a route without one'
          : (() => {
              const failure = validate(route.response, reply.body, 'response');
              return failure === undefined ? undefined : `${failure.path}: ${failure.message}`;
            })();
      if (violation !== undefined) {
        this.options.metrics.schemaViolations.inc();
        this.options.log(
          JSON.stringify({
            event: 'response_schema_violation',
            route: `${route.method} ${route.path.template}`,
            path: pathname,
            violation,
          }),
        );
        throw apiError(
          ApiErrorCode.Internal,
          `internal error: the answer of ${route.method} ${route.path.template} fails its schema; see the API log`,
        );
      }
      const text =
        reply.body === undefined
          ? undefined
          : route.contentType === 'application/json'
            ? JSON.stringify(reply.body)
            : String(reply.body);
      return {
        status: reply.status,
        headers: {
          ...(text === undefined ? {} : { 'content-type': CONTENT_TYPE[route.contentType] }),
          ...(reply.headers ?? {}),
        },
        body: text === undefined ? undefined : Buffer.from(text, 'utf8'),
        route: routeLabel,
        close: false,
      };
    } catch (err) {
      return this.errorAnswer(err, routeLabel, req);
    } finally {
      if (counted) {
        this.inFlight--;
        this.options.metrics.inFlight.dec();
      }
    }
  }

  private errorAnswer(err: unknown, route: string, req: IncomingMessage): Answer {
    let code: string = ApiErrorCode.Internal;
    let message = 'internal error; see the API log';
    let details: Readonly<Record<string, string>> = {};
    if (err instanceof ShaleError) {
      code = err.code;
      message = err.message;
      details = err.details;
    } else {
      this.options.log(
        JSON.stringify({
          event: 'internal_error',
          request: `${req.method} ${req.url}`,
          error: err instanceof Error ? (err.stack ?? err.message) : String(err),
        }),
      );
      if (err instanceof AssertionFailure) {
        // A programmer error: answer, then crash loudly, as everywhere in Shale.
        setImmediate(() => {
          throw err;
        });
      }
    }
    let body: { code: string; message: string } = {
      code,
      message: message.slice(0, API_TEXT_MAX_CHARS),
    };
    if (validate(ErrorSchema, body) !== undefined) {
      this.options.log(
        `api: error code ${JSON.stringify(code)} breaks the error schema: ${message}`,
      );
      body = { code: ApiErrorCode.Internal, message: 'internal error; see the API log' };
    }
    const status = httpStatusOf(body.code);
    const headers: Record<string, string> = { 'content-type': CONTENT_TYPE['application/json'] };
    if (body.code === ApiErrorCode.Unauthorized)
      headers['www-authenticate'] = details.challenge ?? WWW_AUTHENTICATE;
    if (body.code === ApiErrorCode.MethodNotAllowed && details.allow !== undefined)
      headers.allow = details.allow;
    if (body.code === ApiErrorCode.Busy) headers['retry-after'] = String(API_BUSY_RETRY_AFTER_S);
    // The rest of a too-large body is never read: the connection cannot carry another request.
    const close = body.code === ApiErrorCode.BodyTooLarge;
    return { status, headers, body: Buffer.from(JSON.stringify(body), 'utf8'), route, close };
  }

  /**
   * The whole body, or 'too-large' as soon as it passes bodyMaxBytes (a chunked body, or one
   * longer than its Content-Length said): the rest is not kept, and the connection closes
   * after the 413 (the guard reads and drops what still comes, up to a limit).
   */
  private readBody(req: IncomingMessage): Promise<Body> {
    const max = this.bodyMaxBytes;
    return new Promise<Body>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let sizeBytes = 0;
      let settled = false;
      const settle = (body: Body): void => {
        settled = true;
        resolve(body);
      };
      req.on('data', (chunk: Buffer) => {
        if (settled) return;
        sizeBytes += chunk.length;
        if (sizeBytes > max) {
          chunks.length = 0;
          settle({ kind: 'too-large' });
          return;
        }
        chunks.push(chunk);
      });
      req.on('end', () => {
        if (!settled) settle({ kind: 'bytes', bytes: Buffer.concat(chunks) });
      });
      req.on('error', (err) => {
        if (!settled) reject(err);
      });
      req.on('close', () => {
        if (!settled && !req.complete)
          reject(apiError(ApiErrorCode.BadRequest, 'the client went away mid-request'));
      });
    });
  }
}
