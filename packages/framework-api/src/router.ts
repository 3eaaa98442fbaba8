import { assert } from '@shale/common';
import { ApiErrorCode, apiError } from './errors.js';

/** A path template such as `/api/v1/vdisks/{name}/snapshots/{snapshot}`, split once. */
export interface CompiledPath {
  readonly template: string;
  /** Literal segments as strings, parameters as `{ param }`. */
  readonly segments: readonly (string | { readonly param: string })[];
}

export function compilePath(template: string): CompiledPath {
  assert(template.startsWith('/'), `path template ${template} must start with /`);
  const segments = template
    .slice(1)
    .split('/')
    .map((segment) => {
      const match = /^\{([A-Za-z][A-Za-z0-9]*)\}$/.exec(segment);
      assert(match !== null || !/[{}]/.test(segment), `bad segment ${segment} in ${template}`);
      return match?.[1] === undefined ? segment : { param: match[1] };
    });
  return { template, segments };
}

export function pathParams(path: CompiledPath): string[] {
  return path.segments.flatMap((s) => (typeof s === 'string' ? [] : [s.param]));
}

/**
 * Matches a request path (still percent-encoded) against a template. Each segment is
 * decoded on its own, so an encoded `/` stays inside its parameter (and then fails the
 * parameter's pattern). API_BAD_REQUEST for malformed percent-encoding.
 */
export function matchPath(
  path: CompiledPath,
  rawSegments: readonly string[],
): Record<string, string> | undefined {
  if (rawSegments.length !== path.segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < rawSegments.length; i++) {
    const want = path.segments[i];
    const raw = rawSegments[i] as string;
    if (typeof want === 'string') {
      if (want !== raw) return undefined;
      continue;
    }
    if (want === undefined || raw.length === 0) return undefined;
    try {
      params[want.param] = decodeURIComponent(raw);
    } catch (err) {
      throw apiError(ApiErrorCode.BadRequest, `path.${want.param}: malformed percent-encoding`, {
        cause: err,
      });
    }
  }
  return params;
}

export function splitPath(pathname: string): string[] {
  return pathname.slice(1).split('/');
}
