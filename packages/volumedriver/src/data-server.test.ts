// Proves the volumedriver's data server (the data protocol) serves a vDisk's block requests like the VolumeIo it wraps, answers bad requests with the volume's error codes on a connection that goes on, ends only the connection of a peer that breaks the protocol, keeps a client that floods reads without reading its replies from growing the server's memory while another client's verified I/O goes on; and that @shale/volumedriver/client loads none of the engine.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LevelKv } from '@shale/arakoon-kv';
import { encodeFrameHeader, encodeHello, FrameDecoder, FrameOp, isShaleError } from '@shale/common';
import { seededRandom } from '@shale/testing';
import { VolumeDataStream } from './data-client.js';
import { DataOp } from './data-protocol.js';
import { VolumeDataServer } from './data-server.js';
import { MemoryVolumeBackend } from './volume-backend.js';
import { VolumeManager } from './volume-manager.js';

const MiB = 1024 * 1024;
const SEED = Number(process.env.SHALE_SEED ?? Math.floor(Math.random() * 2 ** 31));
let dir: string;
let kv: LevelKv;
let manager: VolumeManager;
let server: VolumeDataServer;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'shale-data-server-'));
  kv = await LevelKv.open({ dir: path.join(dir, 'kv') });
  manager = await VolumeManager.open({
    kv,
    backend: new MemoryVolumeBackend(),
    dir: path.join(dir, 'wb'),
    nodeId: 'n',
  });
  await manager.createVpool({ name: 'p', backendId: 'b', scoSizeBytes: 4 * MiB });
  await manager.createVdisk({ name: 'd', vpoolName: 'p', sizeBytes: 64 * MiB });
  server = await VolumeDataServer.start({
    manager,
    host: '127.0.0.1',
    port: 0,
    maxBufferedBytesPerConnection: 8 * MiB,
  });
});

after(async () => {
  await server.close(0);
  await manager.close();
  await kv.close();
  await fs.rm(dir, { recursive: true, force: true });
});

test('block requests over the data protocol behave as the VolumeIo; errors keep the connection', async () => {
  const stream = await VolumeDataStream.open(server.address, 'd');
  try {
    assert.equal(stream.sizeBytes, 64 * MiB);
    const data = Buffer.alloc(3 * 4096 + 100, 0xab);
    await stream.write(8192 + 7, data, { fua: true });
    assert.ok((await stream.read(8192 + 7, data.length)).equals(data));
    await stream.writeZeroes(8192 + 7, 50);
    const back = await stream.read(8192 + 7, 60);
    assert.ok(back.subarray(0, 50).equals(Buffer.alloc(50)) && back[55] === 0xab);
    await stream.trim(0, 64 * MiB);
    await stream.flush();
    assert.ok((await stream.read(8192, 4096)).equals(Buffer.alloc(4096)));
    const extents = await stream.blockStatus(0, MiB);
    assert.ok(extents.length >= 1);
    await assert.rejects(
      stream.read(64 * MiB - 10, 20),
      (err: unknown) => isShaleError(err) && err.code.startsWith('VD_'),
    );
    await assert.rejects(stream.read(0, 33 * MiB), (err: unknown) =>
      isShaleError(err, 'VD_INVALID_ARGUMENT'),
    );
    assert.equal(stream.failed, undefined, 'error replies leave the connection up');
    assert.equal((await stream.read(0, 1)).length, 1);
  } finally {
    await stream.close();
  }
  await assert.rejects(
    VolumeDataStream.open(server.address, 'nope'),
    (err: unknown) => isShaleError(err, 'VD_UNAVAILABLE') && /not open there/.test(String(err)),
  );
});

/** A raw connection that says HELLO; returns the socket and the frames it got. */
async function rawClient(): Promise<{
  socket: net.Socket;
  frames: { op: number; text: string }[];
}> {
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.on('error', () => undefined);
  const frames: { op: number; text: string }[] = [];
  const decoder = new FrameDecoder({ maxPayloadBytes: 64 * MiB }, (f) =>
    frames.push({ op: f.op, text: f.payload.subarray(0, 200).toString() }),
  );
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  const hello = encodeHello(1, 1, 64 * MiB);
  socket.write(Buffer.concat([encodeFrameHeader({ op: FrameOp.Hello, handle: 0 }, hello), hello]));
  return { socket, frames };
}

test(`a flood of unread reads and protocol breakers leave verified I/O of another client intact (seed ${SEED})`, async () => {
  const requestsBefore = server.counters.requests;
  // A greedy client: OPEN, then 4,096 reads of 1 MiB, never reading a reply.
  const greedy = net.connect({ host: '127.0.0.1', port: server.port });
  await new Promise<void>((resolve) => greedy.once('connect', () => resolve()));
  greedy.on('error', () => undefined);
  greedy.pause();
  const hello = encodeHello(1, 1, 64 * MiB);
  const name = Buffer.from('d');
  greedy.write(Buffer.concat([encodeFrameHeader({ op: FrameOp.Hello, handle: 0 }, hello), hello]));
  greedy.write(Buffer.concat([encodeFrameHeader({ op: DataOp.Open, handle: 1 }, name), name]));
  for (let i = 0; i < 4096; i += 1) {
    greedy.write(encodeFrameHeader({ op: DataOp.Read, handle: i + 2, offset: 0, extent: MiB }));
  }
  // Protocol breakers: a block op before OPEN, and garbage.
  const early = await rawClient();
  early.socket.write(encodeFrameHeader({ op: DataOp.Read, handle: 5, offset: 0, extent: 1 }));
  const garbage = await rawClient();
  garbage.socket.write(Buffer.from('\x00\x01garbage'.repeat(10)));

  // Meanwhile, verified random I/O at depth 32 against a model.
  const random = seededRandom(SEED);
  const int = (n: number) => Math.floor(random() * n);
  const model = Buffer.alloc(16 * MiB);
  const stream = await VolumeDataStream.open(server.address, 'd');
  let checked = 0;
  try {
    const worker = async (w: number) => {
      for (let i = 0; i < 60; i += 1) {
        // Each worker owns its own 512 KiB slice: no two requests race on one block.
        const block = w * 128 + int(128);
        const at = block * 4096;
        if (int(2) === 0) {
          const data = Buffer.alloc(4096, int(256));
          data.writeUInt32LE(w * 1000 + i, 0);
          await stream.write(at, data);
          data.copy(model, at);
        } else {
          const got = await stream.read(at, 4096);
          assert.ok(got.equals(model.subarray(at, at + 4096)), `block ${block} (seed ${SEED})`);
          checked += 1;
        }
      }
    };
    await Promise.all(Array.from({ length: 32 }, (_, w) => worker(w)));
  } finally {
    await stream.close();
  }
  assert.ok(checked > 100, `checked ${checked} reads`);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(early.frames.at(-1)?.op, FrameOp.GoAway);
  assert.match(early.frames.at(-1)?.text ?? '', /FRAME_UNKNOWN_OP/);
  assert.equal(garbage.frames.at(-1)?.op, FrameOp.GoAway);
  assert.match(garbage.frames.at(-1)?.text ?? '', /FRAME_MALFORMED/);
  const greedyServed = server.counters.requests - requestsBefore - 1920;
  assert.ok(greedyServed < 400, `the unread client got ${greedyServed} of 4096 reads served`);
  assert.ok(server.counters.pauses > 0);
  for (const s of [greedy, early.socket, garbage.socket]) s.destroy();
});

test('@shale/volumedriver/client loads none of the engine (its module graph, statically)', async () => {
  const distDir = path.dirname(fileURLToPath(import.meta.url));
  const seen = new Set<string>();
  const bare = new Set<string>();
  const walk = async (file: string): Promise<void> => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = await fs.readFile(file, 'utf8');
    for (const m of text.matchAll(/^(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/gm)) {
      const spec = m[1] as string;
      if (spec.startsWith('.')) await walk(path.resolve(path.dirname(file), spec));
      else bare.add(spec);
    }
  };
  await walk(path.join(distDir, 'client.js'));
  const files = [...seen].map((f) => path.basename(f));
  for (const engine of ['volume.js', 'lba-map.js', 'volume-manager.js', 'engine-backend.js']) {
    assert.ok(!files.includes(engine), `${engine} is in the client's graph: ${files.join(', ')}`);
  }
  for (const dep of ['classic-level', '@shale/alba-proxy', '@shale/arakoon-kv']) {
    assert.ok(!bare.has(dep), `${dep} is imported by the client entry: ${[...bare].join(', ')}`);
  }
  assert.ok(files.includes('data-client.js') && files.includes('volume-service.js'));
});
