// Proves the file-backed key provider on a real temporary directory: creation with mode 0600, reopening, rotation keeping old keys, and refusal of missing, insecure and malformed files.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { rejectsWith } from '@shale/testing';
import { FileKeyProvider } from './key-provider.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'proxy-keys-'));
  dirs.push(dir);
  return dir;
}

test('creates a 0600 key file on first use, reopens it, rotates keeping old keys', async () => {
  const file = path.join(await tempDir(), 'keys.json');
  await rejectsWith(FileKeyProvider.open(file), 'PROXY_KEY_FILE_MISSING');
  const created = await FileKeyProvider.open(file, { create: true });
  const firstId = created.currentKeyId();
  const firstKey = await created.getKey(firstId);
  assert.equal(firstKey.length, 32);
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  const reopened = await FileKeyProvider.open(file);
  assert.equal(reopened.currentKeyId(), firstId);
  assert.ok((await reopened.getKey(firstId)).equals(firstKey));
  const secondId = await reopened.rotate();
  assert.notEqual(secondId, firstId);
  const third = await FileKeyProvider.open(file);
  assert.equal(third.currentKeyId(), secondId);
  assert.ok((await third.getKey(firstId)).equals(firstKey), 'old keys stay readable');
  await rejectsWith(third.getKey('k-nope'), 'PROXY_KEY_NOT_FOUND');
  assert.deepEqual((await fs.readdir(path.dirname(file))).sort(), ['keys.json']);
});

test('refuses a key file others can read, and a malformed one', async () => {
  const dir = await tempDir();
  const file = path.join(dir, 'keys.json');
  await FileKeyProvider.open(file, { create: true });
  await fs.chmod(file, 0o644);
  const err = await rejectsWith(FileKeyProvider.open(file), 'PROXY_KEY_FILE_INSECURE');
  assert.match(err.message, /chmod 600/);
  await fs.chmod(file, 0o640);
  await rejectsWith(FileKeyProvider.open(file), 'PROXY_KEY_FILE_INSECURE');
  const bad = path.join(dir, 'bad.json');
  await fs.writeFile(bad, '{"formatVersion":1,"currentKeyId":"a","keys":{"a":"c2hvcnQ="}}', {
    mode: 0o600,
  });
  await rejectsWith(FileKeyProvider.open(bad), 'PROXY_KEY_FILE_BAD');
  await fs.writeFile(bad, 'not json', { mode: 0o600 });
  await rejectsWith(FileKeyProvider.open(bad), 'PROXY_KEY_FILE_BAD');
});
