// Proves rejectsWith and throwsWith pass only for a ShaleError-shaped error with the expected code, and fail on success, on another code, and on a plain Error carrying the code.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rejectsWith, throwsWith } from './rejects-with.js';

/** The shape of @shale/common's ShaleError (this package cannot import it). */
function shaleError(code: string): Error {
  return Object.assign(new Error(`${code}: test`), { name: 'ShaleError', code, details: {} });
}

test('rejectsWith returns the error of the expected code', async () => {
  const err = await rejectsWith(Promise.reject(shaleError('ASD_NO_SPACE')), 'ASD_NO_SPACE');
  assert.equal(err.code, 'ASD_NO_SPACE');
});

test('rejectsWith fails on success, on another code and on a plain Error with the code', async () => {
  await assert.rejects(rejectsWith(Promise.resolve(1), 'ASD_NO_SPACE'), /call succeeded/);
  await assert.rejects(
    rejectsWith(Promise.reject(shaleError('ASD_NOT_FOUND')), 'ASD_NO_SPACE'),
    assert.AssertionError,
  );
  const plain = Object.assign(new Error('errno'), { code: 'ASD_NO_SPACE' });
  await assert.rejects(rejectsWith(Promise.reject(plain), 'ASD_NO_SPACE'), /expected a ShaleError/);
});

test('throwsWith returns the error of the expected code and fails otherwise', () => {
  const err = throwsWith(() => {
    throw shaleError('PROXY_BAD_CHUNK');
  }, 'PROXY_BAD_CHUNK');
  assert.equal(err.code, 'PROXY_BAD_CHUNK');
  assert.throws(() => throwsWith(() => 1, 'PROXY_BAD_CHUNK'), /call succeeded/);
  assert.throws(
    () =>
      throwsWith(() => {
        throw new TypeError('no');
      }, 'PROXY_BAD_CHUNK'),
    /expected a ShaleError/,
  );
});
