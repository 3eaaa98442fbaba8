// Proves the fragment cache on a real directory: hits return exact bytes, LRU eviction keeps it under quota, a damaged entry is a miss (never wrong bytes), and a restart keeps it warm.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { FragmentCache } from './fragment-cache.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'frag-cache-'));
  dirs.push(dir);
  return dir;
}
const quiet = (_line: string): void => undefined;

test('hits return the exact bytes; misses count', async () => {
  const cache = await FragmentCache.open({
    dir: await tempDir(),
    quotaBytes: 1024 * 1024,
    log: quiet,
  });
  const data = randomBytes(10_000);
  assert.equal(await cache.get('ns/obj/1/0/0'), undefined);
  await cache.put('ns/obj/1/0/0', data);
  assert.ok((await cache.get('ns/obj/1/0/0'))?.equals(data));
  const stats = cache.stats();
  assert.equal(stats.hits, 1);
  assert.equal(stats.misses, 1);
  assert.equal(stats.bytes, 10_000);
});

test('least recently used entries leave first; the quota holds', async () => {
  const cache = await FragmentCache.open({ dir: await tempDir(), quotaBytes: 100_000, log: quiet });
  for (const name of ['a', 'b', 'c']) await cache.put(name, randomBytes(25_000));
  await cache.get('a'); // a is now the most recently used
  await cache.put('d', randomBytes(25_000));
  await cache.put('e', randomBytes(25_000)); // over quota: b goes, then nothing else
  assert.ok(cache.stats().bytes <= 100_000);
  assert.equal(await cache.get('b'), undefined);
  assert.ok((await cache.get('a')) !== undefined);
  assert.ok((await cache.get('e')) !== undefined);
  assert.equal(cache.stats().evictions, 1);
  // Larger than a quarter of the quota: not cached at all.
  await cache.put('huge', randomBytes(30_000));
  assert.equal(await cache.get('huge'), undefined);
});

test('a damaged entry is a miss and is removed', async () => {
  const dir = await tempDir();
  const cache = await FragmentCache.open({ dir, quotaBytes: 1024 * 1024, log: quiet });
  await cache.put('victim', randomBytes(5000));
  const fan = (await fs.readdir(dir))[0] as string;
  const file = path.join(dir, fan, (await fs.readdir(path.join(dir, fan)))[0] as string);
  const raw = await fs.readFile(file);
  raw[100] = (raw[100] as number) ^ 1;
  await fs.writeFile(file, raw);
  assert.equal(await cache.get('victim'), undefined);
  assert.equal(cache.stats().damaged, 1);
  await assert.rejects(fs.stat(file));
});

test('a restart finds the entries again, in recency order', async () => {
  const dir = await tempDir();
  const first = await FragmentCache.open({ dir, quotaBytes: 1024 * 1024, log: quiet });
  const data = randomBytes(7000);
  await first.put('kept', data);
  const second = await FragmentCache.open({ dir, quotaBytes: 1024 * 1024, log: quiet });
  assert.ok((await second.get('kept'))?.equals(data));
  assert.equal(second.stats().entries, 1);
  // A smaller quota at restart evicts down to it.
  const third = await FragmentCache.open({ dir, quotaBytes: 1000, log: quiet });
  assert.equal(third.stats().entries, 0);
});
