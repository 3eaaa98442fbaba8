// Proves the README cannot drift from the code: it names every constant of constants.ts, every code of the error table, every warning code, and every route of the route table.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ApiWarningCode } from './capacity.js';
import * as constants from './constants.js';
import { ERROR_STATUS } from './error-table.js';
import { ApiErrorCode } from './errors.js';
import { ROUTES } from './routes.js';

const README = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'README.md');

test('the README lists every limit, every error code, every warning code and every route', async () => {
  const text = await fs.readFile(README, 'utf8');
  for (const name of Object.keys(constants))
    assert.ok(text.includes(`\`${name}\``), `constant ${name}`);
  for (const code of [...Object.keys(ERROR_STATUS), ...Object.values(ApiErrorCode)])
    assert.ok(text.includes(`\`${code}\``), `error code ${code}`);
  for (const code of Object.values(ApiWarningCode))
    assert.ok(text.includes(`\`${code}\``), `warning code ${code}`);
  for (const route of ROUTES) {
    const template =
      route.path.template === '/api/v1/presets'
        ? '/api/v1/presets?backend=ID'
        : route.path.template;
    assert.ok(
      text.includes(`\`${route.method} ${template}\``),
      `route ${route.method} ${template}`,
    );
  }
});
