// Proves a Shale LUN (shale up --iscsi-port, tgt's native shale backing store) passes libiscsi's full iscsi-test-cu suite, destructive tests on, with no failure that the same tgtd's LUN on a plain file does not also have in the same run (tgt 1.0.85 fails 8 distinct tests on a file); a target tgtd serves that is not Shale's is left alone by the reconciler. SHALE_ISCSI_CU_BACKINGS=native,file runs the nbdfuse backing too (the long tier).
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { RemoteKv } from '@shale/arakoon-kv';
import { IscsiTargetRecords, SecretBox, validateTargetRequest } from '@shale/framework-api';
import { freePort } from '@shale/testing';
import { MapHarness, run } from './testing/map-harness.js';

const PATH_ENV = { PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };
const LUN_BYTES = 256 * 1024 * 1024;
const FILE_IQN = 'iqn.2026-12.io.example:not-shale';
const BACKINGS = (process.env.SHALE_ISCSI_CU_BACKINGS ?? 'native').split(',');

interface CuResult {
  readonly total: number;
  readonly passed: number;
  readonly failed: number;
  readonly failing: readonly string[];
  readonly ms: number;
}

/** Runs the whole suite against a LUN; the CUnit XML results, parsed. */
async function conformance(url: string, dir: string): Promise<CuResult> {
  await fsp.mkdir(dir, { recursive: true });
  const started = Date.now();
  // -d: destructive tests; -s: SCSI tests; -x: XML results in the working directory.
  const suite = await run('sh', ['-c', `cd ${dir} && exec iscsi-test-cu -d -s -x ${url}`], {
    env: PATH_ENV,
    timeoutMs: 900_000,
  });
  const ms = Date.now() - started;
  const xml = await fsp
    .readFile(path.join(dir, 'CUnitAutomated-Results.xml'), 'utf8')
    .catch(() => '');
  assert.notEqual(
    xml,
    '',
    `iscsi-test-cu wrote no results (exit ${suite.code}): ${suite.stderr.slice(-2000)}`,
  );
  const failing = new Set<string>();
  for (const m of xml.matchAll(
    /<SUITE_NAME>\s*(.*?)\s*<\/SUITE_NAME>(.*?)<\/CUNIT_RUN_SUITE_(?:SUCCESS|FAILURE)>/gs,
  )) {
    for (const t of (m[2] as string).matchAll(
      /<CUNIT_RUN_TEST_FAILURE>\s*<TEST_NAME>\s*(.*?)\s*<\/TEST_NAME>/gs,
    )) {
      failing.add(`${m[1]}.${t[1]}`);
    }
  }
  const totals =
    /<TYPE> Test Cases <\/TYPE>\s*<TOTAL>\s*(\d+).*?<SUCCEEDED>\s*(\d+).*?<FAILED>\s*(\d+)/s.exec(
      xml,
    );
  assert.ok(totals !== null, 'the results have a test-case summary');
  return {
    total: Number(totals[1]),
    passed: Number(totals[2]),
    failed: Number(totals[3]),
    failing: [...failing].sort(),
    ms,
  };
}

for (const backing of BACKINGS) {
  describe(
    `iscsi-test-cu on a Shale LUN (${backing}) beside a file LUN`,
    { timeout: 1_800_000 },
    () => {
      let h: MapHarness;
      let port: number;
      let kv: RemoteKv;
      const control = () => (port > 32767 ? port - 32768 : port);
      const tgtadm = (args: readonly string[]) =>
        run('tgtadm', ['-C', String(control()), '--lld', 'iscsi', ...args], { env: PATH_ENV });

      before(async () => {
        port = await freePort();
        // Thin provisioning off, as on the file LUN: with it on, libiscsi's client spins
        // forever in the suite on a thin LUN, a file one as much as Shale's (README: limitations).
        h = await MapHarness.start('shale-iscsi-cu-', () => [
          '--iscsi-port',
          String(port),
          '--iscsi-backing',
          backing,
          '--iscsi-unmap',
          'off',
        ]);
        const layout = JSON.parse(
          await fsp.readFile(path.join(h.dataDir, 'shale-up.json'), 'utf8'),
        ) as {
          ports: { kv: number };
        };
        kv = new RemoteKv({ endpoint: `127.0.0.1:${layout.ports.kv}` });
      });

      after(async () => {
        await tgtadm(['--op', 'delete', '--mode', 'target', '--tid', '100', '--force']);
        await kv?.close();
        await h?.close();
      });

      test('no failure beyond the file LUN; the duration beside it', async () => {
        // The reference: a target of tgtd's own on a plain file (tid 100, not a Shale IQN).
        const file = path.join(h.dir, 'lun.img');
        await fsp.writeFile(file, '');
        await fsp.truncate(file, LUN_BYTES);
        for (const args of [
          ['--op', 'new', '--mode', 'target', '--tid', '100', '-T', FILE_IQN],
          [
            '--op',
            'new',
            '--mode',
            'logicalunit',
            '--tid',
            '100',
            '--lun',
            '1',
            '--bstype',
            'rdwr',
            '-b',
            file,
          ],
          ['--op', 'bind', '--mode', 'target', '--tid', '100', '-I', '127.0.0.1'],
        ]) {
          const r = await tgtadm(args);
          assert.equal(r.code, 0, r.stderr);
        }
        const created = await h.shale(['vdisk', 'create', 'cu', '--size', '256MiB']);
        assert.equal(created.code, 0, created.stderr);
        const box = await SecretBox.open(path.join(h.dataDir, 'iscsi-secrets.key'));
        const record = await new IscsiTargetRecords(kv).create(
          validateTargetRequest({ vdisk: 'cu', initiators: ['127.0.0.1'] }),
          box,
        );
        const deadline = Date.now() + 30_000;
        while (!(await tgtadm(['--op', 'show', '--mode', 'target'])).stdout.includes(record.iqn)) {
          assert.ok(
            Date.now() < deadline,
            `target ${record.iqn} did not appear:\n${h.upOutput().slice(-2000)}`,
          );
          await sleep(200);
        }

        const reference = await conformance(
          `iscsi://127.0.0.1:${port}/${FILE_IQN}/1`,
          path.join(h.dir, 'cu-file'),
        );
        const shale = await conformance(
          `iscsi://127.0.0.1:${port}/${record.iqn}/1`,
          path.join(h.dir, 'cu-shale'),
        );
        const show = (r: CuResult) =>
          `${r.total} test cases, ${r.passed} passed, ${r.failed} failed (${r.failing.length} distinct: ${r.failing.join(' ')}), ${r.ms} ms`;
        console.log(`iscsi-test-cu, file LUN: ${show(reference)}`);
        console.log(`iscsi-test-cu, Shale LUN (${backing}): ${show(shale)}`);
        console.log(
          `iscsi-test-cu duration, Shale / file: ${(shale.ms / reference.ms).toFixed(2)}x (goal <= 1.5x)`,
        );
        assert.ok(reference.total > 500, `the whole suite ran (${reference.total} test cases)`);
        assert.equal(shale.total, reference.total, 'the same suite ran on both');
        const extra = shale.failing.filter((name) => !reference.failing.includes(name));
        assert.deepEqual(
          extra,
          [],
          `failures on the Shale LUN that the file LUN does not have: ${extra.join(' ')}`,
        );
        // The reconciler left tgtd's own target alone through all of it.
        assert.match(
          (await tgtadm(['--op', 'show', '--mode', 'target'])).stdout,
          new RegExp(`Target 100: ${FILE_IQN}`),
        );
      });
    },
  );
}
