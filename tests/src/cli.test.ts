// Proves the shale command as a user meets it: --help on every verb and sub-verb, strict option parsing, and the ASD's start-up refusals (foreign identity, locked directory) with clear messages and exit codes.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { type Command, rootCommand } from '@shale/cli';
import { runShale, type ShaleProcess, startShale } from './support/shale-process.js';

const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

function allPaths(command: Command, prefix: string[] = []): string[][] {
  const here = prefix.length === 0 ? [] : prefix;
  const below = (command.subcommands ?? []).flatMap((sub) => allPaths(sub, [...prefix, sub.name]));
  return [here, ...below];
}

test('every verb and sub-verb answers --help with its usage, exit code 0', async () => {
  const paths = allPaths(rootCommand);
  assert.ok(paths.length >= 5);
  for (const words of paths) {
    // 60 s: a shared machine under load has stalled one start past 20 s.
    const result = await runShale([...words, '--help'], 60_000);
    assert.equal(result.code, 0, `shale ${words.join(' ')} --help: ${result.stderr}`);
    assert.match(result.stdout, /Usage: shale/, `shale ${words.join(' ')} --help`);
  }
});

test('unknown verbs and options are refused with exit code 2 and a pointer to --help', async () => {
  const verb = await runShale(['asd', 'frobnicate']);
  assert.equal(verb.code, 2);
  assert.match(verb.stderr, /unknown command "shale asd frobnicate"/);
  const option = await runShale(['asd', 'serve', '--dir', '/tmp/x', '--port', '1', '--bogus']);
  assert.equal(option.code, 2);
  assert.match(option.stderr, /--bogus/);
  const port = await runShale(['asd', 'serve', '--dir', '/tmp/x', '--port', 'http']);
  assert.equal(port.code, 2);
  assert.match(port.stderr, /--port must be a port number/);
  const missing = await runShale(['asd', 'serve', '--port', '0']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--dir is required/);
});

test('an ASD directory of another node is refused unless --claim; a running one is locked', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-cli-'));
  cleanup.push(() => fs.rm(dir, { recursive: true, force: true }));
  const asdDir = path.join(dir, 'asd');
  let first: ShaleProcess | undefined = await startShale([
    'asd',
    'serve',
    '--dir',
    asdDir,
    '--port',
    '0',
    '--node-id',
    'node-a',
  ]);
  cleanup.push(async () => first?.kill9());
  const asdId = String(first.ready.asdId);

  const locked = await runShale([
    'asd',
    'serve',
    '--dir',
    asdDir,
    '--port',
    '0',
    '--node-id',
    'node-a',
  ]);
  assert.equal(locked.code, 1);
  assert.match(locked.stderr, /ASD_DIR_LOCKED/);

  const stats = await runShale(['asd', 'stats', '--address', `127.0.0.1:${first.port}`, '--json']);
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal((JSON.parse(stats.stdout) as { asdId: string }).asdId, asdId);
  const health = await runShale(['asd', 'health', '--address', `127.0.0.1:${first.port}`]);
  assert.equal(health.code, 0);
  assert.match(health.stdout, /: ok/);

  assert.equal(await first.stop(), 0);
  first = undefined;

  const refused = await runShale([
    'asd',
    'serve',
    '--dir',
    asdDir,
    '--port',
    '0',
    '--node-id',
    'node-b',
  ]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /ASD_IDENTITY_MISMATCH/);
  assert.match(refused.stderr, /--claim/);

  const claimed = await startShale([
    'asd',
    'serve',
    '--dir',
    asdDir,
    '--port',
    '0',
    '--node-id',
    'node-b',
    '--claim',
  ]);
  cleanup.push(() => claimed.kill9());
  assert.equal(claimed.ready.asdId, asdId, 'claiming keeps the ASD id and its objects');
  assert.equal(claimed.ready.nodeId, 'node-b');
  assert.equal(await claimed.stop(), 0);

  const unreachable = await runShale(['asd', 'health', '--address', '127.0.0.1:1']);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /ASD_UNAVAILABLE|ASD_DEADLINE_EXCEEDED/);
});
