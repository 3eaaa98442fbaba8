// Proves the CLI README's `shale vdisk map` section cannot drift from the code: every MAP_ error code the map code can raise is in its error table, and the default record directory and the nbdfuse timeout it names are the ones in map/constants.ts; by reading the sources and the README.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { MAP_DIR_DEFAULT, MAP_LOCK_TIMEOUT_MS, NBDFUSE_READY_TIMEOUT_MS } from './map/constants.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SOURCES = path.join(here, '..', 'src');

test('the CLI README lists every MAP_ error code and the map defaults', async () => {
  const readme = await fs.readFile(path.join(here, '..', 'README.md'), 'utf8');
  const codes = new Set<string>();
  for (const dir of ['map', 'admin']) {
    for (const file of await fs.readdir(path.join(SOURCES, dir))) {
      if (!file.endsWith('.ts') || file.endsWith('.test.ts')) continue;
      const text = await fs.readFile(path.join(SOURCES, dir, file), 'utf8');
      for (const match of text.matchAll(/'(MAP_[A-Z_]+)'/g)) codes.add(match[1] as string);
    }
  }
  assert.ok(codes.size >= 10, `found the codes: ${[...codes].join(', ')}`);
  for (const code of codes) assert.match(readme, new RegExp(`\\| \`${code}\` \\| \\d \\|`), code);
  assert.ok(readme.includes(`\`${MAP_DIR_DEFAULT}\``), MAP_DIR_DEFAULT);
  assert.ok(
    readme.includes(`within ${NBDFUSE_READY_TIMEOUT_MS / 1000} s`),
    'nbdfuse ready timeout',
  );
  assert.ok(readme.includes(`after ${MAP_LOCK_TIMEOUT_MS / 1000} s`), 'lock timeout');
});
