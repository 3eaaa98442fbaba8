// Proves the edge serves vDisks to real NBD clients through the whole stack (etcd, 6 ASDs, proxy, volumedrivers, edge: all real processes), stand-alone and co-located inside a volumedriver (its own vDisks in-process, another router's through it, unaffected by a client that floods reads without reading replies or sends garbage): nbdinfo lists and describes exports, qemu-io writes and reads back patterns, nbdcopy round-trips 256 MiB, nbdsh sees the right errors and the connection survives them, fio verifies crc32c at QD32, block status maps holes, the edge routes to the owner it is not configured with, and a volumedriver killed with SIGKILL under a connected client comes back without the client noticing.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_IHAVEOPT,
  NBD_OPT_EXPORT_NAME,
  NBD_REQUEST_MAGIC,
} from '@shale/edge';
import { VolumeClient } from '@shale/volumedriver';
import { type Cluster, startCluster, TEST_BACKEND } from './support/cluster.js';
import { mustRun, runCommand } from './support/commands.js';
import type { ShaleProcess } from './support/shale-process.js';

const MiB = 1024 * 1024;
const SCO_BYTES = 8 * MiB;
const DISK_BYTES = 512 * MiB;

let cluster: Cluster;
let vd1: ShaleProcess;
let vd2: ShaleProcess;
let edge: ShaleProcess;
let client1: VolumeClient;
let client2: VolumeClient;

const url = (name: string, port = edge.port) => `nbd://127.0.0.1:${port}/${name}`;

/**
 * A client that opens `name` (EXPORT_NAME), then sends `reads` requests of 1 MiB each and
 * never reads a reply. Resolves with the socket once everything is written or the server
 * stopped taking it (the socket's buffer is full and stays full).
 */
async function greedyReader(port: number, name: string, reads: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // Server greeting: NBDMAGIC, IHAVEOPT, handshake flags (18 bytes).
  await new Promise<void>((resolve) => {
    let got = 0;
    const onData = (chunk: Buffer) => {
      got += chunk.length;
      if (got >= 18) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
  });
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
  const option = Buffer.alloc(16 + name.length);
  option.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  option.writeUInt32BE(NBD_OPT_EXPORT_NAME, 8);
  option.writeUInt32BE(name.length, 12);
  option.write(name, 16);
  socket.write(Buffer.concat([flags, option]));
  // Export size and transmission flags (10 bytes with NO_ZEROES), then stop reading.
  await new Promise<void>((resolve) => {
    let got = 0;
    const onData = (chunk: Buffer) => {
      got += chunk.length;
      if (got >= 10) {
        socket.off('data', onData);
        socket.pause();
        resolve();
      }
    };
    socket.on('data', onData);
  });
  const requests = Buffer.alloc(28 * reads);
  for (let i = 0; i < reads; i += 1) {
    const at = i * 28;
    requests.writeUInt32BE(NBD_REQUEST_MAGIC, at);
    requests.writeUInt16BE(0, at + 4); // flags
    requests.writeUInt16BE(0, at + 6); // NBD_CMD_READ
    requests.writeBigUInt64BE(BigInt(i + 1), at + 8); // handle
    requests.writeBigUInt64BE(BigInt((i % 32) * MiB), at + 16);
    requests.writeUInt32BE(MiB, at + 24);
  }
  socket.write(requests);
  return socket;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 'NaN');
  return kib * 1024;
}

async function sha256File(file: string, lengthBytes?: number): Promise<string> {
  const data = await fs.readFile(file);
  return createHash('sha256')
    .update(lengthBytes === undefined ? data : data.subarray(0, lengthBytes))
    .digest('hex');
}

/** Runs qemu-io commands on an export; fails on any error or pattern mismatch. */
async function qemuIo(target: string, commands: readonly string[], extra: readonly string[] = []) {
  const result = await mustRun(
    'qemu-io',
    ['-f', 'raw', ...extra, ...commands.flatMap((c) => ['-c', c]), target],
    { package: 'qemu-utils', timeoutMs: 180_000 },
  );
  assert.doesNotMatch(
    result.stdout + result.stderr,
    /verification failed|Pattern verification|error|failed/i,
  );
  return result;
}

/** nbdsh with a Python script (libnbd's handle is `h`). */
async function nbdsh(target: string, script: string, extra: readonly string[] = []) {
  return mustRun('nbdsh', [...extra, '-u', target, '-c', script], {
    package: 'python3-libnbd',
    timeoutMs: 120_000,
  });
}

describe('edge with real NBD clients', { timeout: 900_000 }, () => {
  before(async () => {
    cluster = await startCluster('edge-clients-');
    // node-1 also serves NBD itself (co-located, as `shale up` runs it).
    vd1 = await cluster.startVolumedriver('node-1', path.join(cluster.dir, 'vd1'), 0, [
      '--nbd-port',
      '0',
    ]);
    // node-2 reaches the backend through the proxy process (node-1 with the engine inside).
    vd2 = await cluster.startVolumedriver(
      'node-2',
      path.join(cluster.dir, 'vd2'),
      0,
      ['--metrics-port', '0'],
      'proxy',
    );
    client1 = new VolumeClient(`127.0.0.1:${vd1.port}`);
    client2 = new VolumeClient(`127.0.0.1:${vd2.port}`);
    await client1.createVpool({ name: 'pool', backendId: TEST_BACKEND, scoSizeBytes: SCO_BYTES });
    await client1.createVdisk({ name: 'disk-a', vpoolName: 'pool', sizeBytes: DISK_BYTES });
    await client1.createVdisk({ name: 'disk-b', vpoolName: 'pool', sizeBytes: 64 * MiB });
    // Owned by node-2, whose address the edge is not given: it must be located.
    await client2.createVdisk({ name: 'disk-c', vpoolName: 'pool', sizeBytes: 64 * MiB });
    // The first address is dead: locating falls through to the next.
    edge = await cluster.startEdge([1, vd1.port]);
  });

  after(async () => {
    client1?.close();
    client2?.close();
    await cluster?.stop();
  });

  test('nbdinfo lists every export with its size and block sizes', async () => {
    const list = JSON.parse(
      (await mustRun('nbdinfo', ['--list', '--json', url('')], { package: 'libnbd-bin' })).stdout,
    ) as {
      exports: {
        'export-name': string;
        'export-size': number;
        block_size_minimum?: number;
        block_size_preferred?: number;
        block_size_maximum?: number;
        description?: string;
      }[];
    };
    const byName = new Map(list.exports.map((e) => [e['export-name'], e]));
    assert.deepEqual([...byName.keys()].sort(), ['disk-a', 'disk-b', 'disk-c']);
    const a = byName.get('disk-a');
    assert.equal(a?.['export-size'], DISK_BYTES);
    assert.equal(a?.block_size_minimum, 512);
    assert.equal(a?.block_size_preferred, 4096);
    assert.equal(a?.block_size_maximum, 32 * MiB);
    assert.match(a?.description ?? '', /vPool pool, owner node-1/);
    assert.equal(byName.get('disk-c')?.['export-size'], 64 * MiB);
    const info = await mustRun('nbdinfo', [url('disk-a')]);
    assert.match(info.stdout, /can_multi_conn: true/);
    assert.match(info.stdout, /base:allocation/);
    const missing = await runCommand('nbdinfo', [url('no-such-disk')]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /No such file or directory for export: no-such-disk/);
  });

  test('qemu-io: aligned, unaligned, sub-cluster and cross-SCO patterns read back, also on a new connection', async () => {
    await qemuIo(url('disk-a'), [
      'write -P 0xab 0 1M',
      'read -P 0xab 0 1M',
      'write -P 0x5c 3M 64k',
      'read -P 0x5c 3M 64k',
      // 3 bytes at an odd offset: qemu does its own read-modify-write to 512 B sectors.
      'write -P 0x11 7340033 3',
      'read -P 0x11 7340033 3',
      // 512 B inside one 4 KiB cluster: the volumedriver's read-modify-write.
      'write -P 0x22 4608 512',
      'read -P 0xab 4096 512',
      'read -P 0x22 4608 512',
      'read -P 0xab 5120 3072',
      // Across the first SCO boundary (8 MiB SCOs), and a FUA write.
      `write -P 0x33 ${8 * MiB - 256 * 1024} 1M`,
      `read -P 0x33 ${8 * MiB - 256 * 1024} 1M`,
      `write -f -P 0x44 ${20 * MiB} 4k`,
      'write -P 0xcd 2M 1M',
      'discard 2M 1M',
      'read -P 0 2M 1M',
      'write -P 0xee 4M 1M',
      'write -z 4M 1M',
      'read -P 0 4M 1M',
      'write -P 0x77 5M 64k',
      'write -z -u 5M 64k',
      'read -P 0 5M 64k',
      'flush',
    ]);
    await qemuIo(
      url('disk-a'),
      [
        'read -P 0xab 0 4096',
        'read -P 0x22 4608 512',
        `read -P 0x33 ${8 * MiB - 256 * 1024} 1M`,
        `read -P 0x44 ${20 * MiB} 4k`,
      ],
      ['-r'],
    );
  });

  test('nbdcopy copies a random 256 MiB file in and out with equal checksums', async () => {
    const source = path.join(cluster.dir, 'src.bin');
    const copy = path.join(cluster.dir, 'dst.bin');
    const size = 256 * MiB;
    const handle = await fs.open(source, 'w');
    for (let at = 0; at < size; at += 16 * MiB) await handle.write(randomBytes(16 * MiB));
    await handle.close();
    const t0 = Date.now();
    await mustRun('nbdcopy', ['--connections=4', '--flush', source, url('disk-a')], {
      timeoutMs: 300_000,
    });
    const t1 = Date.now();
    await mustRun('nbdcopy', ['--connections=4', url('disk-a'), copy], { timeoutMs: 300_000 });
    const t2 = Date.now();
    process.stdout.write(`nbdcopy 256 MiB: in ${t1 - t0} ms, whole export out ${t2 - t1} ms\n`);
    assert.equal(await sha256File(copy, size), await sha256File(source));
    // Read back by another client too: qemu-io sees the same first sector.
    const first = (await fs.readFile(source)).subarray(0, 512);
    const dumped = await mustRun('nbdsh', [
      '-u',
      url('disk-a'),
      '-c',
      'import sys; sys.stdout.write(h.pread(512, 0).hex())',
    ]);
    assert.equal(dumped.stdout.trim(), first.toString('hex'));
    await fs.rm(source);
    await fs.rm(copy);
  });

  test('nbdsh: past the end is EINVAL (read, trim) / ENOSPC (write) and the connection survives; trim, write-zeroes, flush, block status', async () => {
    const result = await nbdsh(
      url('disk-b'),
      `
import errno
sz = h.get_size()
assert sz == ${64 * MiB}, sz
h.pwrite(b"\\xcd" * 65536, 0)
assert h.pread(65536, 0) == b"\\xcd" * 65536
h.pwrite(b"\\x5a" * 4096, 8192, nbd.CMD_FLAG_FUA)
h.zero(16384, 16384)
assert h.pread(16384, 16384) == bytes(16384)
h.trim(32768, 32768)
assert h.pread(32768, 32768) == bytes(32768)
h.flush()
# Unaligned I/O: the server does it (libnbd refuses it unless told not to check).
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
h.pwrite(b"xyz", 12345)
assert h.pread(3, 12345) == b"xyz"
h.pwrite(b"E", sz - 1)
assert h.pread(1, sz - 1) == b"E"
ext = []
h.block_status(131072, 0, lambda ctx, off, ents, err: ext.append((ctx, list(ents))))
ctx, ents = ext[0]
assert ctx == "base:allocation", ctx
# 0..16 KiB data, 16..64 KiB holes (write-zeroes and trim unmap whole clusters), rest hole.
assert ents[0:2] == [16384, 0], ents
assert ents[2] == 131072 - 16384 and ents[3] == 3, ents
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
codes = []
for fn in (lambda: h.pread(4096, sz), lambda: h.pwrite(b"x" * 4096, sz - 2048), lambda: h.trim(8192, sz - 4096)):
    try:
        fn()
        raise SystemExit("past the end did not fail")
    except nbd.Error as e:
        codes.append(e.errnum)
assert codes == [errno.EINVAL, errno.ENOSPC, errno.EINVAL], codes
assert h.pread(1, sz - 1) == b"E"
h.shutdown()
print("nbdsh OK")
`,
      ['--base-allocation'],
    );
    assert.match(result.stdout, /nbdsh OK/);
    const map = await mustRun('nbdinfo', ['--map', '--json', url('disk-b')]);
    const extents = JSON.parse(map.stdout) as { offset: number; length: number; type: number }[];
    assert.deepEqual(extents[0], { offset: 0, length: 16384, type: 0, description: 'data' });
    assert.ok(
      extents.some((e) => e.offset === 16384 && (e.type & 1) === 1),
      map.stdout,
    );
  });

  test('read-only edge: EPERM on writes, reads work', async () => {
    await qemuIo(url('disk-b'), [`write -P 0x9c ${MiB} 4k`]);
    const ro = await cluster.startEdge([vd1.port], ['--read-only']);
    try {
      const result = await nbdsh(
        url('disk-b', ro.port),
        `
import errno
assert h.is_read_only()
assert h.pread(4096, ${MiB}) == b"\\x9c" * 4096
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 512, 0)
    raise SystemExit("write on a read-only export did not fail")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
print("ro OK")
`,
      );
      assert.match(result.stdout, /ro OK/);
    } finally {
      await ro.stop();
    }
  });

  test('fio --ioengine=nbd: random 4 KiB writes at QD32 verify with crc32c', async () => {
    const result = await mustRun(
      'fio',
      [
        '--name=verify',
        '--ioengine=nbd',
        `--uri=${url('disk-c')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--iodepth=32',
        '--size=24M',
        '--verify=crc32c',
        '--verify_fatal=1',
        '--do_verify=1',
        // No verify state file in the working directory.
        '--verify_state_save=0',
        '--output-format=json',
      ],
      { package: 'fio', timeoutMs: 300_000 },
    );
    // fio's nbd engine prints a line before the JSON.
    const job = (
      JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as {
        jobs: {
          error: number;
          write: { io_bytes: number; iops: number };
          read: { io_bytes: number };
        }[];
      }
    ).jobs[0];
    assert.ok(job !== undefined);
    assert.equal(job.error, 0);
    assert.equal(job.write.io_bytes, 24 * MiB);
    assert.equal(job.read.io_bytes, 24 * MiB, 'fio read back everything it wrote to verify it');
    process.stdout.write(
      `fio verify: ${Math.round(job.write.iops)} write IOPS at QD32 (disk-c, routed to node-2)\n`,
    );
    // The edge reached node-2 over the data protocol, not the gRPC Io stream.
    const metrics = await (await fetch(`http://127.0.0.1:${vd2.ready.metricsPort}/metrics`)).text();
    const dataRequests = Number(
      /^shale_volumedriver_data_requests_total (\d+)/m.exec(metrics)?.[1],
    );
    const ioStreamRequests = Number(
      /^shale_volumedriver_io_requests_received_total (\d+)/m.exec(metrics)?.[1] ?? 0,
    );
    assert.ok(dataRequests >= 12_288, `node-2 served ${dataRequests} data protocol requests`);
    assert.equal(ioStreamRequests, 0, 'no request came over the gRPC Io stream');
  });

  test("co-located: the NBD server inside volumedriver node-1 serves its own vDisks in-process and node-2's through node-2; a client that floods reads and never reads replies, and one that sends garbage, leave fio verify at QD32 unaffected", async () => {
    const nbdPort = Number(vd1.ready.nbdPort);
    assert.ok(nbdPort > 0, `no nbdPort in ${JSON.stringify(vd1.ready)}`);
    await client1.createVdisk({ name: 'colo-1', vpoolName: 'pool', sizeBytes: 64 * MiB });
    await client2.createVdisk({ name: 'colo-2', vpoolName: 'pool', sizeBytes: 64 * MiB });
    const list = await mustRun('nbdinfo', ['--list', url('', nbdPort)], { package: 'libnbd-bin' });
    for (const name of ['disk-a', 'disk-c', 'colo-1', 'colo-2'])
      assert.match(list.stdout, new RegExp(name));
    // Local (node-1 owns it) and remote (node-2 owns it) through the same NBD server.
    for (const name of ['colo-1', 'colo-2']) {
      await qemuIo(url(name, nbdPort), [
        'write -P 0x3c 0 1M',
        'write -P 0x3d 7340033 3',
        'flush',
        'read -P 0x3c 0 1M',
      ]);
      // Read back through the stand-alone edge: the same bytes, whoever served the write.
      await qemuIo(url(name), ['read -P 0x3c 0 1M', 'read -P 0x3d 7340033 3'], ['-r']);
    }
    // Misbehaving clients on the same server: one floods 4,096 reads of 1 MiB and never
    // reads a reply (4 GiB of answers), one sends garbage instead of a handshake.
    const greedy = await greedyReader(nbdPort, 'colo-1', 4096);
    const garbage = net.connect(nbdPort, '127.0.0.1');
    garbage.on('error', () => undefined);
    garbage.write(randomBytes(4096));
    const pid = vd1.child.pid as number;
    const rssBefore = await rssBytes(pid);
    try {
      const result = await mustRun(
        'fio',
        [
          '--name=verify',
          '--ioengine=nbd',
          `--uri=${url('colo-1', nbdPort)}`,
          '--rw=randwrite',
          '--bs=4k',
          '--iodepth=32',
          '--size=16M',
          '--offset=32M',
          '--verify=crc32c',
          '--verify_fatal=1',
          '--do_verify=1',
          '--verify_state_save=0',
          '--output-format=json',
        ],
        { package: 'fio', timeoutMs: 300_000 },
      );
      const job = (
        JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as {
          jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[];
        }
      ).jobs[0];
      assert.equal(job?.error, 0);
      assert.equal(job?.write.io_bytes, 16 * MiB);
      assert.equal(job?.read.io_bytes, 16 * MiB, 'fio read everything back and verified it');
      // The flood is held back (no reads while its replies are not taken), not buffered.
      const rssAfter = await rssBytes(pid);
      assert.ok(
        rssAfter - rssBefore < 768 * MiB,
        `the volumedriver grew by ${Math.round((rssAfter - rssBefore) / MiB)} MiB under the flood`,
      );
      assert.ok(!greedy.destroyed, 'the greedy client is only held back, not cut');
    } finally {
      greedy.destroy();
      garbage.destroy();
    }
    // The server still serves new connections.
    await qemuIo(url('colo-1', nbdPort), ['read -P 0x3c 0 1M'], ['-r']);
  });

  test('a volumedriver killed with SIGKILL under a connected client comes back; the client sees its data', async () => {
    const port = vd1.port;
    // qemu-io keeps one connection open: write and flush, then sleep while the volumedriver
    // dies and returns on the same port, then read back and write again.
    const session = runCommand(
      'qemu-io',
      [
        '-f',
        'raw',
        '-c',
        `write -P 0x5a ${40 * MiB} 1M`,
        '-c',
        'flush',
        '-c',
        'sleep 6000',
        '-c',
        `read -P 0x5a ${40 * MiB} 1M`,
        '-c',
        `write -P 0x6b ${41 * MiB} 1M`,
        '-c',
        'flush',
        '-c',
        `read -P 0x6b ${41 * MiB} 1M`,
        url('disk-a'),
      ],
      { timeoutMs: 180_000 },
    );
    await sleep(1500);
    await vd1.kill9();
    vd1 = await cluster.startVolumedriver('node-1', path.join(cluster.dir, 'vd1'), port);
    const result = await session;
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.doesNotMatch(result.stdout + result.stderr, /failed|error/i);
    assert.equal((result.stdout.match(/^read /gm) ?? []).length, 2, result.stdout);
    // The edge noticed: it opened a second stream to the restarted volumedriver.
    assert.match(edge.stderr(), /vDisk disk-a: stream to 127\.0\.0\.1:\d+ lost/);
    assert.match(edge.stderr(), /vDisk disk-a: stream [2-9] to node-1/);
    // And what was written before the kill is still there for a new connection.
    await qemuIo(
      url('disk-a'),
      [`read -P 0x5a ${40 * MiB} 1M`, `read -P 0x6b ${41 * MiB} 1M`],
      ['-r'],
    );
  });
});
