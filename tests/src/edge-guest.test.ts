// Proves a real Linux guest (Debian's kernel under QEMU, TCG unless SHALE_GUEST_ACCEL=kvm) uses a vDisk served by `shale edge serve` (etcd + 6 ASDs + proxy + volumedriver, all real processes) as its virtio disk: boot 1 makes ext4 and writes a 48 MiB random file plus 200 small files and their sha256 sums, boot 2 (a new QEMU) finds the file system clean (e2fsck -fn) and every sum right, and the host reads the disk straight from the edge (nbdcopy, e2fsck -fn, debugfs) and gets the same bytes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { VolumeClient } from '@shale/volumedriver';
import { TEST_BACKEND as BACKEND, type Cluster, startCluster } from './support/cluster.js';
import {
  bootGuest,
  buildInitramfs,
  describeBoot,
  findGuestKernel,
  GUEST_TOOLS,
  type GuestBoot,
  type GuestKernel,
  guestAccel,
  requireTools,
  runToolOk,
  verdictFields,
} from './support/guest.js';

const MiB = 1024 * 1024;
const DISK_BYTES = 512 * MiB;
const SCO_BYTES = 8 * MiB;
const VDISK = 'guestdisk';
/** The big file: whole MiBs from dd, then an odd tail so its end is aligned to nothing. */
const BIG_MIB = 48;
const BIG_TAIL_BYTES = 3077;
const SMALL_FILES = 200;
/** One boot under TCG takes 10-40 s on 2 shared cores; a hung one is killed here. */
const BOOT_TIMEOUT_MS = 5 * 60_000;
const HOST_TOOL_TIMEOUT_MS = 2 * 60_000;

const HOST_TOOLS: Readonly<Record<string, string>> = {
  ...GUEST_TOOLS,
  nbdcopy: 'libnbd-bin',
  nbdinfo: 'libnbd-bin',
  debugfs: 'e2fsprogs',
};

/**
 * /init after the prelude (modules loaded, /dev/vda there). The kernel command line
 * carries the mode and its parameters: `shale_mode=write` makes the file system and the
 * files, `shale_mode=verify` checks them against what the write boot reported. The real
 * mke2fs and e2fsck go by full path: busybox's shell runs its own applet of a name first.
 */
const INIT_BODY = `
MODE=$(arg shale_mode)
DISK_BYTES=$(arg shale_disk_bytes)
got=$(blockdev --getsize64 /dev/vda)
[ "$got" = "$DISK_BYTES" ] || fail "mode=$MODE /dev/vda is $got bytes, not $DISK_BYTES"
say "/dev/vda is $got bytes; mode $MODE"
t0=$(cut -d' ' -f1 /proc/uptime)
took() { echo "$(cut -d' ' -f1 /proc/uptime) $t0" | awk '{ print $1 - $2 }'; }
case "$MODE" in
write)
  SMALL=$(arg shale_small_files)
  /sbin/mke2fs -F -q -t ext4 -L shale-guest /dev/vda || fail "mode=write mke2fs -t ext4"
  mount -t ext4 /dev/vda /mnt || fail "mode=write mount"
  dd if=/dev/urandom of=/mnt/big.bin bs=1M count="$(arg shale_big_mib)" 2>/dev/null || fail "mode=write dd big.bin"
  head -c "$(arg shale_big_tail_bytes)" /dev/urandom >>/mnt/big.bin || fail "mode=write big.bin tail"
  mkdir /mnt/small || fail "mode=write mkdir"
  i=1
  while [ $i -le "$SMALL" ]; do
    head -c $(( (i * 389) % 6000 + 1 )) /dev/urandom >/mnt/small/f$i || fail "mode=write small/f$i"
    i=$((i + 1))
  done
  (cd /mnt && sha256sum big.bin small/*) >/tmp/SHA256SUMS || fail "mode=write sha256sum"
  cp /tmp/SHA256SUMS /mnt/SHA256SUMS || fail "mode=write cp SHA256SUMS"
  BIG=$(grep ' big.bin$' /tmp/SHA256SUMS | cut -d' ' -f1)
  BIG_BYTES=$(stat -c %s /mnt/big.bin)
  SUMS=$(sha256sum /tmp/SHA256SUMS | cut -d' ' -f1)
  FILES=$(wc -l </tmp/SHA256SUMS)
  sync
  umount /mnt || fail "mode=write umount"
  say "write phase took $(took) s"
  verdict "PASS mode=write big.sha256=$BIG big.bytes=$BIG_BYTES sums.sha256=$SUMS files=$FILES"
  ;;
verify)
  /sbin/e2fsck -fn /dev/vda >/tmp/fsck.log 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then cat /tmp/fsck.log; fail "mode=verify e2fsck -fn exited $rc"; fi
  say "e2fsck -fn clean: $(tail -n 1 /tmp/fsck.log)"
  mount -t ext4 -o ro /dev/vda /mnt || fail "mode=verify mount"
  SUMS=$(sha256sum /mnt/SHA256SUMS | cut -d' ' -f1)
  [ "$SUMS" = "$(arg shale_sums_sha256)" ] || fail "mode=verify SHA256SUMS hashes to $SUMS, boot 1 wrote $(arg shale_sums_sha256)"
  if ! (cd /mnt && sha256sum -c SHA256SUMS) >/tmp/check.log 2>&1; then
    grep -v ': OK$' /tmp/check.log | head -n 20
    fail "mode=verify sha256sum -c: $(grep -c ': FAILED$' /tmp/check.log) files differ"
  fi
  OK=$(grep -c ': OK$' /tmp/check.log)
  [ "$OK" = "$(arg shale_files)" ] || fail "mode=verify $OK files checked, boot 1 wrote $(arg shale_files)"
  BIG=$(grep ' big.bin$' /mnt/SHA256SUMS | cut -d' ' -f1)
  umount /mnt || fail "mode=verify umount"
  say "verify phase took $(took) s"
  verdict "PASS mode=verify big.sha256=$BIG files=$OK"
  ;;
*)
  fail "unknown mode '$MODE'"
  ;;
esac
`;

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Boots once and asserts a clean power-off with a PASS verdict; returns its fields. */
async function bootAndPass(
  kernel: GuestKernel,
  initramfsPath: string,
  url: string,
  kernelArgs: readonly string[],
  what: string,
): Promise<{ boot: GuestBoot; fields: Record<string, string> }> {
  const boot = await bootGuest({
    kernel,
    initramfsPath,
    driveFile: url,
    kernelArgs,
    timeoutMs: BOOT_TIMEOUT_MS,
    onSerialLine: (line) => {
      if (line.startsWith('guest: ')) process.stdout.write(`  [${what}] ${line}\n`);
    },
  });
  process.stdout.write(
    `  [${what}] ${boot.accel} boot to power-off ${boot.durationMs} ms; verdict: ${boot.verdict ?? '<none>'}\n`,
  );
  assert.ok(boot.verdict?.startsWith('PASS') === true, `${what}: ${describeBoot(boot)}`);
  assert.ok(
    !boot.timedOut && boot.exitCode === 0,
    `${what} passed but did not power off cleanly: ${describeBoot(boot)}`,
  );
  return { boot, fields: verdictFields(boot.verdict ?? '') };
}

/** sha256 of a file inside the image, read by debugfs (never mounted on the host). */
async function debugfsSha256(image: string, file: string): Promise<string> {
  const hash = createHash('sha256');
  await runToolOk('debugfs', ['-R', `cat ${file}`, image], {
    timeoutMs: HOST_TOOL_TIMEOUT_MS,
    stdoutTo: (chunk) => hash.update(chunk),
  });
  return hash.digest('hex');
}

test(
  'a Linux guest makes ext4 on a vDisk through the edge, and a second boot and the host read it back intact',
  { timeout: 15 * 60_000 },
  async () => {
    // Fail fast, naming what is missing, before any process starts.
    requireTools(HOST_TOOLS);
    const accel = guestAccel();
    const kernel = await findGuestKernel();
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'edge-guest-'));
    let cluster: Cluster | undefined;
    let client: VolumeClient | undefined;
    try {
      const initramfs = await buildInitramfs({
        kernel,
        dir: work,
        modules: ['virtio_pci', 'virtio_blk', 'crc32c', 'ext4'],
        programs: ['mke2fs', 'e2fsck'],
        files: ['/etc/mke2fs.conf'],
        initBody: INIT_BODY,
      });
      process.stdout.write(
        `edge-guest: kernel ${kernel.version} (${accel}), initramfs ${(initramfs.sizeBytes / MiB).toFixed(1)} MiB with ${initramfs.moduleFiles.length} modules\n`,
      );

      cluster = await startCluster('edge-guest-');
      const vd = await cluster.startVolumedriver('guest-node', path.join(cluster.dir, 'vd'));
      client = new VolumeClient(`127.0.0.1:${vd.port}`);
      await client.createVpool({ name: 'pool', backendId: BACKEND, scoSizeBytes: SCO_BYTES });
      await client.createVdisk({ name: VDISK, vpoolName: 'pool', sizeBytes: DISK_BYTES });
      const edge = await cluster.startEdge([vd.port]);
      const url = `nbd://127.0.0.1:${edge.port}/${VDISK}`;
      const size = await runToolOk('nbdinfo', ['--size', url], { timeoutMs: 30_000 });
      assert.equal(Number(size.stdout.trim()), DISK_BYTES, `nbdinfo --size ${url}`);

      const common = [`shale_disk_bytes=${DISK_BYTES}`];
      const first = await bootAndPass(
        kernel,
        initramfs.path,
        url,
        [
          ...common,
          'shale_mode=write',
          `shale_big_mib=${BIG_MIB}`,
          `shale_big_tail_bytes=${BIG_TAIL_BYTES}`,
          `shale_small_files=${SMALL_FILES}`,
        ],
        'boot 1 (write)',
      );
      const bigSha = first.fields['big.sha256'] ?? '';
      const sumsSha = first.fields['sums.sha256'] ?? '';
      assert.match(bigSha, /^[0-9a-f]{64}$/, `boot 1 verdict: ${first.boot.verdict}`);
      assert.match(sumsSha, /^[0-9a-f]{64}$/, `boot 1 verdict: ${first.boot.verdict}`);
      assert.equal(first.fields['big.bytes'], String(BIG_MIB * MiB + BIG_TAIL_BYTES));
      assert.equal(first.fields.files, String(SMALL_FILES + 1), 'big.bin plus the small files');

      const second = await bootAndPass(
        kernel,
        initramfs.path,
        url,
        [
          ...common,
          'shale_mode=verify',
          `shale_sums_sha256=${sumsSha}`,
          `shale_files=${SMALL_FILES + 1}`,
        ],
        'boot 2 (verify)',
      );
      assert.equal(second.fields['big.sha256'], bigSha, 'boot 2 read the big file boot 1 wrote');

      // The host reads the disk straight from the edge: no guest, no QEMU in the path.
      const image = path.join(work, 'disk.img');
      const t0 = Date.now();
      await runToolOk('nbdcopy', [url, image], { timeoutMs: HOST_TOOL_TIMEOUT_MS });
      assert.equal((await fs.stat(image)).size, DISK_BYTES);
      const fsck = await runToolOk('e2fsck', ['-fn', image], { timeoutMs: HOST_TOOL_TIMEOUT_MS });
      const fsckSummary = fsck.stdout.trim().split('\n').pop() ?? '';
      assert.equal(await debugfsSha256(image, '/big.bin'), bigSha, 'host: big.bin via debugfs');
      const sums = await runToolOk('debugfs', ['-R', 'cat /SHA256SUMS', image], {
        timeoutMs: HOST_TOOL_TIMEOUT_MS,
      });
      assert.equal(sha256(sums.stdout), sumsSha, 'host: SHA256SUMS via debugfs');
      // Every small file, dumped in one debugfs run, against the guest's sums.
      const dumpDir = path.join(work, 'dump');
      await fs.mkdir(dumpDir);
      await runToolOk('debugfs', ['-R', `rdump /small ${dumpDir}`, image], {
        timeoutMs: HOST_TOOL_TIMEOUT_MS,
      });
      const wrong: string[] = [];
      let checked = 0;
      for (const line of sums.stdout.trim().split('\n')) {
        const [want, name] = line.split(/\s+/);
        assert.ok(want !== undefined && name !== undefined, `SHA256SUMS line ${line}`);
        if (name === 'big.bin') continue;
        const got = sha256(await fs.readFile(path.join(dumpDir, name)));
        checked += 1;
        if (got !== want && wrong.length < 10) wrong.push(`${name}: host ${got}, guest ${want}`);
      }
      assert.deepEqual(wrong, [], 'host: small files via debugfs rdump');
      assert.equal(checked, SMALL_FILES);
      process.stdout.write(
        `edge-guest: host read of the export in ${Date.now() - t0} ms: e2fsck clean (${fsckSummary}), big.bin and ${checked} small files match the guest's sha256\n`,
      );
    } finally {
      client?.close();
      await cluster?.stop();
      await fs.rm(work, { recursive: true, force: true });
    }
  },
);
