// Proves `shale api serve` as a real process: it announces itself on stdout, writes a 0600 token file, serves /health without a token and refuses the rest without it, reports an unreachable volumedriver, stops cleanly on SIGTERM, and refuses to start on a token file others can read.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from '@shale/testing';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');

interface Run {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exit: Promise<number | null>;
}

function start(args: readonly string[]): Run {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exit };
}

function listening(run: Run): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(
      () => reject(new Error(`no listening line; stderr: ${run.stderr()}`)),
      20_000,
    );
    run.child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const line = stdout.split('\n').find((l) => l.includes('"listening"'));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as Record<string, unknown>);
      }
    });
    void run.exit.then((code) =>
      reject(new Error(`exited ${code} before listening: ${run.stderr()}`)),
    );
  });
}

let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-api-cli-'));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('shale api serve: listening line, 0600 token, auth, degraded health, SIGTERM; a readable token file is refused', async () => {
  const tokenFile = path.join(dir, 'api.token');
  // A port nothing listens on: the volumedriver is unreachable.
  const volumedriver = `127.0.0.1:${await freePort()}`;
  const args = [
    'api',
    'serve',
    '--kv-dir',
    path.join(dir, 'kv'),
    '--volumedriver',
    volumedriver,
    '--token-file',
    tokenFile,
    '--port',
    '0',
  ];
  const run = start(args);
  const ready = await listening(run);
  assert.equal(ready.service, 'api');
  assert.equal(ready.address, '127.0.0.1');
  assert.equal(ready.tokenFile, tokenFile);
  assert.equal(typeof ready.port, 'number');
  const base = `http://127.0.0.1:${ready.port}`;

  assert.equal((await fs.stat(tokenFile)).mode & 0o777, 0o600);
  const token = (await fs.readFile(tokenFile, 'utf8')).trim();
  assert.match(token, /^[0-9a-f]{64}$/);

  const health = await fetch(`${base}/health`);
  assert.equal(health.status, 503);
  const report = (await health.json()) as {
    status: string;
    components: { name: string; ok: boolean }[];
  };
  assert.equal(report.status, 'degraded');
  assert.deepEqual(
    report.components.map((c) => [c.name, c.ok]),
    [
      ['kv', true],
      [`volumedriver ${volumedriver}`, false],
    ],
  );
  const anonymous = await fetch(`${base}/api/v1/backends`);
  assert.equal(anonymous.status, 401);
  assert.equal(((await anonymous.json()) as { code: string }).code, 'API_UNAUTHORIZED');
  const backends = await fetch(`${base}/api/v1/backends`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(backends.status, 200);
  assert.deepEqual(await backends.json(), { backends: [] });
  const vpools = await fetch(`${base}/api/v1/vpools`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(vpools.status, 503);
  assert.equal(((await vpools.json()) as { code: string }).code, 'VD_UNAVAILABLE');

  run.child.kill('SIGTERM');
  assert.equal(await run.exit, 0, run.stderr());
  assert.match(run.stderr(), /SIGTERM, stopping/);

  // Restarted, it reuses the token; made readable by others, the file is refused.
  const again = start(args);
  const readyAgain = await listening(again);
  const reused = await fetch(`http://127.0.0.1:${readyAgain.port}/api/v1/backends`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(reused.status, 200);
  again.child.kill('SIGINT');
  assert.equal(await again.exit, 0, again.stderr());
  await fs.chmod(tokenFile, 0o644);
  const refused = start(args);
  assert.equal(await refused.exit, 1);
  assert.match(refused.stderr(), /API_TOKEN_FILE_INSECURE: .*chmod 600/);
});
