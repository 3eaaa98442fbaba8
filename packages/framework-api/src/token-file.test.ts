// Proves the token file's rules on a real file system: a new file is 0600 even under umask 0, an existing one is reused only when no one else can read or write it, symlinks, directories and garbage are refused; and that bearer matching accepts only the exact token.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { isShaleError } from '@shale/common';
import { bearerMatches, loadOrCreateToken } from './token-file.js';

let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-token-'));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function refused(file: string, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(loadOrCreateToken(file), (err: unknown) => {
    assert.ok(isShaleError(err, code), String(err));
    assert.match((err as Error).message, pattern);
    return true;
  });
}

test('a new token file is 0600 whatever the umask, and holds 64 hex characters', async () => {
  const file = path.join(dir, 'new');
  const previous = process.umask(0);
  try {
    const first = await loadOrCreateToken(file);
    assert.equal(first.created, true);
    assert.match(first.token, /^[0-9a-f]{64}$/);
    assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
    const second = await loadOrCreateToken(file);
    assert.deepEqual(second, { token: first.token, created: false });
  } finally {
    process.umask(previous);
  }
  const other = await loadOrCreateToken(path.join(dir, 'other'));
  assert.notEqual(other.token, (await loadOrCreateToken(file)).token, 'tokens are random');
});

test('an existing token file that others can read or write, or that is not one token, is refused', async () => {
  const token = 'b'.repeat(64);
  for (const mode of [0o640, 0o604, 0o620, 0o602]) {
    const file = path.join(dir, `mode-${mode.toString(8)}`);
    await fs.writeFile(file, `${token}\n`);
    await fs.chmod(file, mode);
    await refused(
      file,
      'API_TOKEN_FILE_INSECURE',
      /group or others can read or write it; run "chmod 600/,
    );
  }
  const ok = path.join(dir, 'ok');
  await fs.writeFile(ok, token, { mode: 0o600 });
  assert.equal((await loadOrCreateToken(ok)).token, token);

  const short = path.join(dir, 'short');
  await fs.writeFile(short, 'abc\n', { mode: 0o600 });
  await refused(short, 'API_TOKEN_FILE_BAD', /64 lowercase hex/);
  const link = path.join(dir, 'link');
  await fs.symlink(ok, link);
  await refused(link, 'API_TOKEN_FILE_BAD', /cannot open/);
  await fs.mkdir(path.join(dir, 'a-dir'), { mode: 0o700 });
  await refused(path.join(dir, 'a-dir'), 'API_TOKEN_FILE_BAD', /not a regular file|cannot open/);
  await refused(path.join(dir, 'missing-dir', 'token'), 'API_TOKEN_FILE_BAD', /cannot create/);
});

test('bearer matching: only "Bearer <the token>", any case of the scheme', () => {
  const token = 'd'.repeat(64);
  assert.equal(bearerMatches(`Bearer ${token}`, token), true);
  assert.equal(bearerMatches(`bearer ${token}`, token), true);
  assert.equal(bearerMatches(`Bearer  ${token} `, token), true);
  for (const header of [
    undefined,
    '',
    token,
    `Basic ${token}`,
    `Bearer ${token}x`,
    `Bearer ${token.slice(1)}`,
    `Bearer ${token} ${token}`,
    'Bearer ',
  ]) {
    assert.equal(bearerMatches(header, token), false, String(header));
  }
});
