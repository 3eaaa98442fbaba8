// Proves `shale up --iscsi-port` runs tgtd through `shale iscsi serve` and keeps its targets in line with the records of the metadata store: address and IQN ACLs refuse strangers, CHAP refuses no and wrong secrets and admits the right one, mutual CHAP checks the target, bytes written with qemu's iscsi:// driver read back through NBD, a SIGKILLed tgtd comes back with every target, a deleted record removes its target, and stopping leaves no tgtd.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RemoteKv } from '@shale/arakoon-kv';
import {
  IscsiTargetRecords,
  type IscsiTargetRequest,
  SecretBox,
  validateTargetRequest,
} from '@shale/framework-api';
import { freePort } from '@shale/testing';
import { parseTargets } from './iscsi/tgt-admin.js';
import { MapHarness, run } from './testing/map-harness.js';

/** qemu-io reads `reads` (qemu-io -c commands) from `target`; fails on an error or a wrong byte. */
async function readsBack(target: string, reads: readonly string[]): Promise<void> {
  const read = await run(
    'qemu-io',
    ['-r', '-f', 'raw', ...reads.flatMap((r) => ['-c', r]), target],
    {
      env: PATH_ENV,
    },
  );
  assert.equal(read.code, 0, `${target}: ${read.stderr}`);
  assert.doesNotMatch(
    read.stdout,
    /verification failed|Pattern verification/,
    `${target}: ${read.stdout}`,
  );
}

const SECRET = 'Secret-Pass-1234';
const MUTUAL_SECRET = 'Target-Pass-5678';
const PATH_ENV = { PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };

for (const backing of ['native', 'file'] as const)
  describe(`shale iscsi serve under shale up, ${backing} backing`, { timeout: 300_000 }, () => {
    let h: MapHarness;
    let port: number;
    let kv: RemoteKv;
    let records: IscsiTargetRecords;
    let box: SecretBox;

    const tgtadm = (args: readonly string[]) =>
      run('tgtadm', ['-C', String(port > 32767 ? port - 32768 : port), '--lld', 'iscsi', ...args], {
        env: PATH_ENV,
      });
    const targets = async () =>
      [
        ...(await tgtadm(['--op', 'show', '--mode', 'target'])).stdout.matchAll(
          /^Target \d+: (\S+)$/gm,
        ),
      ].map((m) => m[1] as string);
    const waitFor = async (what: string, check: () => Promise<boolean>, ms = 20_000) => {
      const deadline = Date.now() + ms;
      while (!(await check())) {
        if (Date.now() > deadline)
          throw new Error(`${what} did not happen within ${ms} ms:\n${h.upOutput().slice(-3000)}`);
        await sleep(200);
      }
    };
    const url = (iqn: string, auth = '', query = '') =>
      `iscsi://${auth === '' ? '' : `${auth}@`}127.0.0.1:${port}/${iqn}/1${query}`;
    const inq = (target: string, args: readonly string[] = []) =>
      run('iscsi-inq', [...args, target], { env: PATH_ENV, timeoutMs: 30_000 });
    async function exportDisk(request: IscsiTargetRequest): Promise<string> {
      await h
        .shale(['vdisk', 'create', request.vdisk, '--size', '64MiB'])
        .then((r) => assert.equal(r.code, 0, r.stderr));
      const record = await records.create(validateTargetRequest(request), box);
      // Made in steps (target, LUN, accounts, then initiators): wait for the last one, or
      // a login can race the ACL and get "target not found".
      const accounts = (request.chap ? 1 : 0) + (request.mutual ? 1 : 0);
      await waitFor(`target ${record.iqn} with its LUN, accounts and ACL`, async () => {
        const made = parseTargets((await tgtadm(['--op', 'show', '--mode', 'target'])).stdout).find(
          (t) => t.iqn === record.iqn,
        );
        return (
          made?.luns.some((l) => l.lun === 1) === true &&
          made.accounts.length === accounts &&
          made.acl.length === (request.initiators?.length ?? 0)
        );
      });
      return record.iqn;
    }

    before(async () => {
      port = await freePort();
      h = await MapHarness.start('shale-iscsi-', () => [
        '--iscsi-port',
        String(port),
        '--iscsi-backing',
        backing,
      ]);
      const layout = JSON.parse(
        await fsp.readFile(path.join(h.dataDir, 'shale-up.json'), 'utf8'),
      ) as {
        ports: { kv: number };
      };
      kv = new RemoteKv({ endpoint: `127.0.0.1:${layout.ports.kv}` });
      records = new IscsiTargetRecords(kv);
      box = await SecretBox.open(path.join(h.dataDir, 'iscsi-secrets.key'));
    });

    after(async () => {
      await kv?.close();
      await h?.close();
      if (port !== undefined) {
        const left = (
          await run('pgrep', ['-f', `tgtd -f -C ${port > 32767 ? port - 32768 : port} `])
        ).stdout.trim();
        assert.equal(left, '', `a tgtd of this test is still running: ${left}`);
      }
    });

    test('CHAP: none and a wrong secret refused, the right one admitted; data reaches the vDisk', async () => {
      assert.match(h.upOutput(), new RegExp(`iSCSI {5}127\\.0\\.0\\.1:${port}`));
      const iqn = await exportDisk({
        vdisk: 'i1',
        initiators: ['127.0.0.1'],
        chap: { user: 'i1-user', secret: SECRET },
      });
      assert.equal(iqn, 'iqn.2026-12.io.shale:i1');
      const shown = (await tgtadm(['--op', 'show', '--mode', 'target'])).stdout;
      assert.match(
        shown,
        new RegExp(`Backing store type: ${backing === 'native' ? 'shale' : 'rdwr'}`),
      );
      assert.notEqual((await inq(url(iqn))).code, 0, 'no credentials: refused');
      assert.notEqual(
        (await inq(url(iqn, 'i1-user%wrong-secret-99'))).code,
        0,
        'wrong secret: refused',
      );
      const admitted = await inq(url(iqn, `i1-user%${SECRET}`));
      assert.equal(admitted.code, 0, admitted.stderr);
      const listed = await run('iscsi-ls', ['-s', `iscsi://i1-user%${SECRET}@127.0.0.1:${port}`], {
        env: PATH_ENV,
      });
      assert.match(
        listed.stdout,
        /Lun:1\s.*DIRECT_ACCESS/,
        `iscsi-ls with CHAP lists the LUN: ${listed.stdout}${listed.stderr}`,
      );
      const noChap = await run('iscsi-ls', ['-s', `iscsi://127.0.0.1:${port}`], { env: PATH_ENV });
      assert.doesNotMatch(noChap.stdout, /Lun:1/, 'iscsi-ls without CHAP sees no LUN');
      for (const [auth, ok] of [
        ['', false],
        ['i1-user%wrong-secret-99', false],
        [`i1-user%${SECRET}`, true],
      ] as const) {
        const qemu = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', url(iqn, auth)], {
          env: PATH_ENV,
        });
        assert.equal(qemu.code === 0, ok, `qemu-io with "${auth}": ${qemu.stderr}`);
      }
      const write = await run(
        'qemu-io',
        [
          '-f',
          'raw',
          '-c',
          'write -P 0xa5 0 1M',
          '-c',
          'write -P 0x3c 4M 64k',
          '-c',
          'flush',
          url(iqn, `i1-user%${SECRET}`),
        ],
        { env: PATH_ENV },
      );
      assert.equal(write.code, 0, write.stderr + write.stdout);
      await readsBack(`nbd://127.0.0.1:${h.nbdPort}/i1`, [
        'read -P 0xa5 0 1M',
        'read -P 0x3c 4M 64k',
      ]);
    });

    test('ACL: a disallowed address or IQN is refused; an allowed IQN is admitted', async () => {
      const other = await exportDisk({ vdisk: 'i2', initiators: ['127.0.0.2'] });
      assert.notEqual((await inq(url(other))).code, 0, 'address 127.0.0.1 is not allowed');
      const named = await exportDisk({
        vdisk: 'i3',
        initiators: ['iqn.2026-12.io.shale.test:allowed'],
      });
      assert.notEqual(
        (await inq(url(named), ['-i', 'iqn.2026-12.io.shale.test:stranger'])).code,
        0,
      );
      const allowed = await inq(url(named), ['-i', 'iqn.2026-12.io.shale.test:allowed']);
      assert.equal(allowed.code, 0, allowed.stderr);
    });

    test('mutual CHAP: the initiator checks the target (a wrong target secret is refused)', async () => {
      const iqn = await exportDisk({
        vdisk: 'i4',
        initiators: ['ALL'],
        chap: { user: 'i4-user', secret: SECRET },
        mutual: { user: 'i4-target', secret: MUTUAL_SECRET },
      });
      const good = await inq(
        url(iqn, `i4-user%${SECRET}`, `?target_user=i4-target&target_password=${MUTUAL_SECRET}`),
      );
      assert.equal(good.code, 0, good.stderr);
      const bad = await inq(
        url(iqn, `i4-user%${SECRET}`, '?target_user=i4-target&target_password=Not-The-Target-1'),
      );
      assert.notEqual(bad.code, 0, 'the target could not prove itself: refused by the initiator');
      for (const [password, ok] of [
        [MUTUAL_SECRET, true],
        // qemu's iscsi driver does not check the target's secret (it reads no target_password):
        // only libiscsi's own tools verify mutual CHAP (README: limitations).
      ] as const) {
        const qemu = await run(
          'qemu-io',
          [
            '-r',
            '-f',
            'raw',
            '-c',
            'read 0 4k',
            url(iqn, `i4-user%${SECRET}`, `?target_user=i4-target&target_password=${password}`),
          ],
          { env: PATH_ENV },
        );
        assert.equal(qemu.code === 0, ok, `qemu-io, mutual secret ${password}: ${qemu.stderr}`);
      }
    });

    test('shale iscsi create (through the REST API): the target is served; the vDisk cannot be deleted until it is gone', async () => {
      const secretFile = path.join(h.dataDir, 'i5-secret');
      await fsp.writeFile(secretFile, `${SECRET}\n`, { mode: 0o600 });
      await h
        .shale(['vdisk', 'create', 'i5', '--size', '64MiB'])
        .then((r) => assert.equal(r.code, 0, r.stderr));
      const created = await h.shale([
        'iscsi',
        'create',
        'i5',
        '--initiator',
        '127.0.0.1',
        '--chap-user',
        'i5-user',
        '--chap-secret-file',
        secretFile,
      ]);
      assert.equal(created.code, 0, created.stderr);
      const iqn = 'iqn.2026-12.io.shale:i5';
      await waitFor(`target ${iqn} made by serve`, async () => {
        const made = parseTargets((await tgtadm(['--op', 'show', '--mode', 'target'])).stdout).find(
          (t) => t.iqn === iqn,
        );
        return made?.acl.length === 1 && made.accounts.length === 1;
      });
      const admitted = await inq(url(iqn, `i5-user%${SECRET}`));
      assert.equal(admitted.code, 0, admitted.stderr);
      const listed = await h.shale(['iscsi', 'list', '--json']);
      assert.equal(listed.code, 0, listed.stderr);
      assert.ok(!listed.stdout.includes(SECRET), 'no secret in the list');
      const refused = await h.shale(['vdisk', 'delete', 'i5']);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /ISCSI_VDISK_EXPORTED|exported/);
      assert.equal((await h.shale(['iscsi', 'delete', iqn])).code, 0);
      await waitFor(`target ${iqn} removed`, async () => !(await targets()).includes(iqn));
      const deleted = await h.shale(['vdisk', 'delete', 'i5']);
      assert.equal(deleted.code, 0, deleted.stderr);
    });

    test('tgtd SIGKILLed: serve exits, shale up restarts it, every target is back with its data', async () => {
      const before = (await targets()).sort();
      const pid = Number(
        (await fsp.readFile(path.join(h.dataDir, 'iscsi', 'tgtd.pid'), 'utf8')).trim(),
      );
      process.kill(pid, 'SIGKILL');
      await waitFor(
        'the targets back after a tgtd restart',
        async () => {
          const now = (await targets()).sort();
          return now.length === before.length && now.every((t, i) => t === before[i]);
        },
        60_000,
      );
      await readsBack(url('iqn.2026-12.io.shale:i1', `i1-user%${SECRET}`), ['read -P 0xa5 0 1M']);
      assert.notEqual((await inq(url('iqn.2026-12.io.shale:i1'))).code, 0, 'CHAP is back too');
    });

    test(
      'the volumedriver (the NBD server) SIGKILLed under flushed iSCSI writes: native, a pause, no error; every write is there',
      {
        skip:
          backing === 'file'
            ? 'nbdfuse does not reconnect: the file backing fails I/O until the target is made again (README)'
            : false,
      },
      async () => {
        const iqn = 'iqn.2026-12.io.shale:i1';
        const bootId = (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
        const info = await run('nbdinfo', [`nbd://127.0.0.1:${h.nbdPort}/i1`], { env: PATH_ENV });
        assert.match(info.stdout, new RegExp(`durable-epoch=${bootId}\\.[0-9a-f]{32}\\.0`));
        const WRITES = 96;
        const commands: string[] = [];
        for (let i = 0; i < WRITES; i++)
          commands.push('-c', `write -P ${0x40 + i} ${8192 + i * 512}k 512k`, '-c', 'flush');
        // Writeback (a guest's default; qemu-io's own is writethrough: every write FUA),
        // so durability rests on the flushes.
        const writer = run(
          'qemu-io',
          ['-t', 'writeback', '-f', 'raw', ...commands, url(iqn, `i1-user%${SECRET}`)],
          {
            env: PATH_ENV,
            timeoutMs: 120_000,
          },
        );
        let finished = false;
        void writer.then(() => {
          finished = true;
        });
        const started = Date.now();
        await sleep(400);
        const pid = await h.volumedriverPid();
        assert.equal(finished, false, 'the writer is still writing when the NBD server dies');
        process.kill(pid, 'SIGKILL');
        const written = await writer;
        console.log(
          `iSCSI writer: ${WRITES} x (512 KiB write + flush) took ${Date.now() - started} ms, the volumedriver SIGKILLed at 400 ms`,
        );
        // A write acknowledged but not yet flushed when the kill lands is in the write
        // buffer's files, which the next volumedriver replays: the edge says so with a
        // durable epoch (same boot, same vDisk), so bs_shale's flush on the new connection
        // covers it and fails nothing (bs-shale-lost-writes.test.ts: a server without one).
        assert.equal(written.code, 0, `${written.stderr}${written.stdout}`);
        assert.doesNotMatch(written.stdout + written.stderr, /error|failed/i);
        await waitFor(
          'the NBD server back',
          async () =>
            (
              await run('nbdinfo', ['--can', 'connect', `nbd://127.0.0.1:${h.nbdPort}/i1`], {
                env: PATH_ENV,
              })
            ).code === 0,
          60_000,
        );
        const reads: string[] = [];
        for (let i = 0; i < WRITES; i++) reads.push(`read -P ${0x40 + i} ${8192 + i * 512}k 512k`);
        await readsBack(`nbd://127.0.0.1:${h.nbdPort}/i1`, reads);
      },
    );

    test('shale up restarted (SIGTERM, up again): every target back; bytes read back through iSCSI and NBD', async () => {
      const before = (await targets()).sort();
      await h.restart();
      await waitFor(
        'the targets back after shale up restarted',
        async () => {
          const now = (await targets()).sort();
          return now.length === before.length && now.every((t, i) => t === before[i]);
        },
        60_000,
      );
      for (const target of [
        url('iqn.2026-12.io.shale:i1', `i1-user%${SECRET}`),
        `nbd://127.0.0.1:${h.nbdPort}/i1`,
      ]) {
        await readsBack(target, ['read -P 0xa5 0 1M', 'read -P 0x3c 4M 64k']);
      }
    });

    test('a deleted record removes its target and its accounts', async () => {
      await records.delete('iqn.2026-12.io.shale:i2');
      await waitFor(
        'target i2 removed',
        async () => !(await targets()).includes('iqn.2026-12.io.shale:i2'),
      );
      await records.delete('iqn.2026-12.io.shale:i4');
      await waitFor(
        'target i4 removed',
        async () => !(await targets()).includes('iqn.2026-12.io.shale:i4'),
      );
      // The accounts go after the target (one step each): wait for them too.
      const accounts = async () => (await tgtadm(['--op', 'show', '--mode', 'account'])).stdout;
      await waitFor(
        'the accounts of i4 removed',
        async () => !/i4-user|i4-target/.test(await accounts()),
      );
      assert.match(await accounts(), /i1-user/);
      assert.ok(fs.existsSync(path.join(h.dataDir, 'iscsi-secrets.key')));
    });
  });
