// Proves a reader that goes away early is not a crash: the real CLI against a real API, `shale vdisk list --json | head -1` in bash (300 vDisks, far more than a pipe holds), a stdout closed before anything is written, and a stderr closed before an error message: each exits with the command's own status and prints no stack trace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ApiTestCluster, BACKEND_ID, MiB, type TestApi } from '@shale/framework-api/testing';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');
const VDISKS = 300;
/** A Linux pipe holds 64 KiB; head reads a little more before it exits. */
const PIPE_BYTES = 64 * 1024;

interface Ended {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdoutBytes: number;
  readonly stderr: string;
}

/**
 * Runs the CLI. `headOne`: as `shale ARGS | head -1` in bash (a real pipe(2), which Node's
 * own stdio pipes are not: they are socket pairs that hold far more), the exit status being
 * shale's. `closeStdout`, `closeStderr`: the read end of that pipe is destroyed right after
 * spawning, before the CLI has written anything.
 */
function runCli(
  args: readonly string[],
  options: { headOne?: boolean; closeStdout?: boolean; closeStderr?: boolean },
): Promise<Ended> {
  const child =
    options.headOne === true
      ? spawn(
          'bash',
          [
            '-c',
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a bash expansion
            '"$@" | head -1; exit "${PIPESTATUS[0]}"',
            'bash',
            process.execPath,
            MAIN,
            ...args,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        )
      : spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdoutBytes = 0;
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdoutBytes += chunk.length;
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  if (options.closeStdout === true) child.stdout.destroy();
  if (options.closeStderr === true) child.stderr.destroy();
  return new Promise<Ended>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`shale ${args.join(' ')} did not exit within 30 s; stderr: ${stderr}`));
    }, 30_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdoutBytes, stderr });
    });
  });
}

function assertQuiet(ended: Ended, what: string): void {
  assert.equal(ended.signal, null, what);
  assert.doesNotMatch(ended.stderr, /EPIPE|\n\s+at |Unhandled|internal error/, what);
}

describe('the CLI and a reader that goes away', () => {
  let cluster: ApiTestCluster;
  let api: TestApi;
  let apiArgs: string[];

  before(async () => {
    cluster = await ApiTestCluster.start();
    api = await cluster.startApi();
    apiArgs = ['--api', api.daemon.url, '--token', api.token];
    await api.client.createVpool({
      name: 'pool',
      backend: BACKEND_ID,
      scoSizeBytes: 4 * MiB,
      writeBufferBytes: 8 * MiB,
    });
    for (let first = 0; first < VDISKS; first += 20) {
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          api.client.createVdisk({ name: `disk${first + i}`, sizeBytes: MiB }),
        ),
      );
    }
  });
  after(async () => {
    await cluster.close();
  });

  test('shale vdisk list --json | head -1: exit 0, no stack trace', async () => {
    const fullBytes = `${JSON.stringify(await api.client.listVdisks(), null, 2)}\n`.length;
    assert.ok(fullBytes > 2 * PIPE_BYTES, `only ${fullBytes} bytes: would fit in the pipe`);
    const ended = await runCli(['vdisk', 'list', '--json', ...apiArgs], { headOne: true });
    assertQuiet(ended, 'vdisk list --json | head -1');
    assert.equal(ended.code, 0, ended.stderr);
    assert.equal(ended.stdoutBytes, 2, 'head printed the first line: "[" and a newline');
  });

  test('stdout closed before anything is written (list, status): exit with the command status, no stack trace', async () => {
    const list = await runCli(['vdisk', 'list', ...apiArgs], { closeStdout: true });
    assertQuiet(list, 'vdisk list');
    assert.equal(list.code, 0, list.stderr);
    // The ASDs of the test cluster do not answer: status is degraded, and says so by its status.
    const status = await runCli(['status', ...apiArgs], { closeStdout: true });
    assertQuiet(status, 'status');
    assert.equal(status.code, 1, status.stderr);
  });

  test('stderr closed before an error message: the exit code is still the error (4: not found)', async () => {
    const ended = await runCli(['vdisk', 'show', 'nope', ...apiArgs], { closeStderr: true });
    assert.equal(ended.signal, null);
    assert.equal(ended.code, 4);
    assert.equal(ended.stdoutBytes, 0);
  });
});
