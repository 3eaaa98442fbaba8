import assert from 'node:assert/strict';

/**
 * What `rejectsWith` and `throwsWith` hand back: the `ShaleError` of `@shale/common`, seen
 * through its shape (this package depends on Node only, so that `@shale/common`'s own tests
 * can use it without a cycle).
 */
export interface CodedError extends Error {
  readonly code: string;
  readonly details: Readonly<Record<string, string>>;
}

/** A ShaleError is recognised by the name its constructor sets and a string code. */
function assertCoded(err: unknown, code: string): asserts err is CodedError {
  assert.ok(
    err instanceof Error &&
      err.name === 'ShaleError' &&
      typeof (err as { code?: unknown }).code === 'string',
    `expected a ShaleError, got ${String(err)}`,
  );
  assert.equal((err as CodedError).code, code, err.message);
}

/** Awaits `promise`, asserts it rejects with a ShaleError of `code`, and returns that error. */
export async function rejectsWith(promise: Promise<unknown>, code: string): Promise<CodedError> {
  try {
    await promise;
  } catch (err) {
    assertCoded(err, code);
    return err;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

/** Calls `fn`, asserts it throws a ShaleError of `code`, and returns that error. */
export function throwsWith(fn: () => unknown, code: string): CodedError {
  try {
    fn();
  } catch (err) {
    assertCoded(err, code);
    return err;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}
