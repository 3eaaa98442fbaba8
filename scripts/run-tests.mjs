// Runs every compiled test file (packages/*/dist/**/*.test.js, tests/dist/**/*.test.js)
// with the node test runner. Arguments filter files by substring: `node scripts/run-tests.mjs asd`.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function findTests(dir, out = []) {
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) findTests(full, out);
    else if (entry.name.endsWith('.test.js')) out.push(full);
  }
  return out;
}

const distDirs = [
  ...fs
    .readdirSync(path.join(root, 'packages'))
    .map((name) => path.join(root, 'packages', name, 'dist')),
  path.join(root, 'tests', 'dist'),
];
const filters = process.argv.slice(2);
const files = distDirs
  .flatMap((dir) => findTests(dir))
  .filter((file) => filters.length === 0 || filters.some((filter) => file.includes(filter)))
  .sort();
if (files.length === 0) {
  console.error('run-tests: no test files found; build first (bash scripts/setup.sh)');
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  env: {
    ...process.env,
    UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16',
    PATH: `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}`,
  },
});
process.exit(result.status ?? 1);
