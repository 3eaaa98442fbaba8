// Proves `shale iscsi create | list | show | delete` against a real API (a real VolumeService behind it): secrets come from files and never appear on stdout or stderr, refusals exit with the documented codes (2 usage, 4 not found, 5 conflict, 1 bad input), and `shale vdisk delete` is refused (5, ISCSI_VDISK_EXPORTED) until the target is deleted.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { IscsiTargetRecords, openTarget, SecretBox } from '@shale/framework-api';
import { ApiTestCluster, MiB, type TestApi } from '@shale/framework-api/testing';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.js');

function shale(
  args: readonly string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

describe('shale iscsi create, list, show, delete', () => {
  let cluster: ApiTestCluster;
  let api: TestApi;
  let apiArgs: string[];
  const chapSecret = 'cli-chap-secret-42';
  const mutualSecret = 'cli-mutual-secret-42';
  const iqn = 'iqn.2026-12.io.shale:disk1';

  before(async () => {
    cluster = await ApiTestCluster.start();
    api = await cluster.startApi();
    apiArgs = ['--api', api.daemon.url, '--token', api.token];
    await api.client.createVpool({ name: 'pool', backend: 'local' });
    await api.client.createVdisk({ name: 'disk1', sizeBytes: MiB });
    await fs.writeFile(path.join(cluster.dir, 'chap'), `${chapSecret}\n`, { mode: 0o600 });
    await fs.writeFile(path.join(cluster.dir, 'mutual'), mutualSecret, { mode: 0o600 });
    await fs.writeFile(path.join(cluster.dir, 'short'), '01234567890\n', { mode: 0o600 });
  });
  after(async () => {
    await cluster.close();
  });

  test('create with CHAP from files, list, show; the secrets are never printed', async () => {
    const outputs: string[] = [];
    const run = async (args: string[]) => {
      const result = await shale([...args, ...apiArgs]);
      outputs.push(result.stdout, result.stderr);
      return result;
    };
    const created = await run([
      'iscsi',
      'create',
      'disk1',
      '--initiator',
      '127.0.0.1',
      '--initiator',
      'iqn.1993-08.org.debian:01:host',
      '--chap-user',
      'alice',
      '--chap-secret-file',
      path.join(cluster.dir, 'chap'),
      '--mutual-user',
      'target-alice',
      '--mutual-secret-file',
      path.join(cluster.dir, 'mutual'),
    ]);
    assert.equal(created.code, 0, created.stderr);
    assert.equal(created.stdout, `created iSCSI target ${iqn} for vDisk disk1\n`);
    assert.equal(created.stderr, '');
    // The final newline of the secret file was dropped: the secret as written is the one stored.
    const record = await new IscsiTargetRecords(cluster.kv).require(iqn);
    const opened = openTarget(record, await SecretBox.open(api.daemon.iscsiKeyFile));
    assert.deepEqual(opened.chap, { user: 'alice', secret: chapSecret });
    assert.deepEqual(opened.mutual, { user: 'target-alice', secret: mutualSecret });

    const list = await run(['iscsi', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^IQN +VDISK +INITIATORS +CHAP +MUTUAL +RO\n/);
    assert.match(
      list.stdout,
      /iqn\.2026-12\.io\.shale:disk1 +disk1 +127\.0\.0\.1,iqn\.1993-08\.org\.debian:01:host +alice +target-alice +no\n$/,
    );

    const show = await run(['iscsi', 'show', iqn, '--json']);
    assert.equal(show.code, 0, show.stderr);
    const json = JSON.parse(show.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json).sort(), [
      'chapUser',
      'createdAtMs',
      'initiators',
      'iqn',
      'mutualUser',
      'readOnly',
      'vdisk',
    ]);
    const fields = await run(['iscsi', 'show', iqn]);
    assert.match(fields.stdout, /^iqn: +iqn\.2026-12\.io\.shale:disk1\n/);
    assert.match(fields.stdout, /\nchap user: +alice\n/);

    for (const text of outputs) {
      assert.ok(!text.includes(chapSecret) && !text.includes(mutualSecret), text);
    }
  });

  test('refusals: usage 2, bad input 1, unknown vDisk or target 4, taken 5; vdisk delete 5 while exported', async () => {
    const noFile = await shale(['iscsi', 'create', 'disk1', '--chap-user', 'bob', ...apiArgs]);
    assert.equal(noFile.code, 2, noFile.stderr);
    assert.match(noFile.stderr, /--chap-user and --chap-secret-file go together/);
    const argvSecret = await shale(['iscsi', 'create', 'disk1', '--chap-secret', 'x', ...apiArgs]);
    assert.equal(argvSecret.code, 2, 'there is no option that takes a secret on the command line');

    const short = await shale([
      'iscsi',
      'create',
      'disk2',
      '--chap-user',
      'bob',
      '--chap-secret-file',
      path.join(cluster.dir, 'short'),
      ...apiArgs,
    ]);
    assert.equal(short.code, 1, short.stderr);
    assert.match(short.stderr, /^shale: ISCSI_CHAP_SECRET_SHORT: the CHAP secret has 11 bytes/);
    const badIqn = await shale(['iscsi', 'create', 'disk1', '--iqn', 'nope', ...apiArgs]);
    assert.equal(badIqn.code, 1, badIqn.stderr);
    assert.match(badIqn.stderr, /^shale: ISCSI_BAD_IQN: /);

    const unknown = await shale(['iscsi', 'create', 'disk2', ...apiArgs]);
    assert.equal(unknown.code, 4, unknown.stderr);
    assert.match(unknown.stderr, /^shale: VD_NOT_FOUND: /);
    const taken = await shale([
      'iscsi',
      'create',
      'disk1',
      '--iqn',
      'iqn.2001-04.com.example:b',
      ...apiArgs,
    ]);
    assert.equal(taken.code, 5, taken.stderr);
    assert.match(taken.stderr, /^shale: ISCSI_VDISK_TAKEN: /);
    const missing = await shale(['iscsi', 'show', 'iqn.2001-04.com.example:none', ...apiArgs]);
    assert.equal(missing.code, 4, missing.stderr);
    assert.match(missing.stderr, /^shale: ISCSI_TARGET_NOT_FOUND: /);
    assert.equal((await api.client.listIscsiTargets()).length, 1, 'the refusals changed nothing');

    const exported = await shale(['vdisk', 'delete', 'disk1', ...apiArgs]);
    assert.equal(exported.code, 5, exported.stderr);
    assert.match(
      exported.stderr,
      /^shale: ISCSI_VDISK_EXPORTED: vDisk disk1 is exported by iSCSI target iqn\.2026-12\.io\.shale:disk1/,
    );
    assert.equal((await api.client.getVdisk('disk1')).name, 'disk1');

    const deleted = await shale(['iscsi', 'delete', iqn, ...apiArgs]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal(deleted.stdout, `deleted iSCSI target ${iqn}\n`);
    const again = await shale(['iscsi', 'delete', iqn, ...apiArgs]);
    assert.equal(again.code, 4, again.stderr);
    const empty = await shale(['iscsi', 'create', 'disk1', '--read-only', ...apiArgs]);
    assert.equal(empty.code, 0, empty.stderr);
    assert.match(empty.stderr, /no --initiator: nobody may log in/);
    await api.client.deleteIscsiTarget(iqn);
    const gone = await shale(['vdisk', 'delete', 'disk1', ...apiArgs]);
    assert.equal(gone.code, 0, gone.stderr);
    assert.equal(gone.stdout, 'deleted vDisk disk1\n');
  });

  test('the iscsi group lists create, list, show, delete and serve', async () => {
    const help = await shale(['iscsi', '--help']);
    assert.equal(help.code, 0);
    for (const verb of ['create', 'list', 'show', 'delete', 'serve'])
      assert.match(help.stdout, new RegExp(`\\n  ${verb} +`));
  });
});
