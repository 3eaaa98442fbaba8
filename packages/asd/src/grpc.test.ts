// Proves the ASD's gRPC face with a real daemon and client: stable error codes on the wire, malformed messages answered without harm, metrics, and client deadlines.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { crc32c, ShaleError } from '@shale/common';
import { rejectsWith } from '@shale/testing';
import { AsdClient } from './client.js';
import { MAX_GRPC_MESSAGE_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES } from './constants.js';
import { AsdDaemon } from './daemon.js';
import { AsdServiceClient } from './proto-definition.js';

let daemon: AsdDaemon;
let client: AsdClient;
let dir: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'asd-grpc-'));
  daemon = await AsdDaemon.start({
    dir,
    port: 0,
    metricsPort: 0,
    nodeId: 'n1',
    reserveBytes: 0,
    log: () => undefined,
  });
  client = new AsdClient(daemon.address, { deadlineMs: 20_000 });
});

after(async () => {
  client.close();
  await daemon.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

/** A raw gRPC call with any request object, bypassing AsdClient's shaping. */
function rawCall(
  method: string,
  request: unknown,
): Promise<{ err: grpc.ServiceError | null; response: unknown }> {
  const raw = new AsdServiceClient(daemon.address, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': MAX_GRPC_MESSAGE_BYTES,
  });
  return new Promise((resolve) => {
    const fn = (raw as unknown as Record<string, (...args: unknown[]) => void>)[method] as (
      ...args: unknown[]
    ) => void;
    fn.call(
      raw,
      request,
      { deadline: Date.now() + 10_000 },
      (err: grpc.ServiceError | null, response: unknown) => {
        raw.close();
        resolve({ err, response });
      },
    );
  });
}

describe('over gRPC', () => {
  test('put, get, ranged get, list, delete, stats and health round-trip', async () => {
    const big = randomBytes(1024 * 1024);
    const crcs = await client.put([
      { key: Buffer.from('ns/a'), value: big },
      { key: Buffer.from('ns/b'), value: Buffer.from('small') },
    ]);
    assert.deepEqual(crcs, [crc32c(big), crc32c(Buffer.from('small'))]);
    assert.ok((await client.getOne(Buffer.from('ns/a'))).equals(big));
    const [slice, missing] = await client.getRanges([
      { key: Buffer.from('ns/a'), offset: 100_000, length: 4096 },
      { key: Buffer.from('ns/zzz'), offset: 0, length: 1 },
    ]);
    assert.ok(slice?.ok && slice.value.equals(big.subarray(100_000, 104_096)));
    assert.ok(missing !== undefined && !missing.ok && missing.error.code === 'ASD_NOT_FOUND');
    const listed = [];
    for await (const entry of client.listAll(Buffer.from('ns/'), 1))
      listed.push(entry.key.toString());
    assert.deepEqual(listed, ['ns/a', 'ns/b']);
    const stats = await client.stats();
    assert.equal(stats.nodeId, 'n1');
    assert.equal(stats.asdId, daemon.store.identity.asdId);
    assert.ok(stats.usedBytes >= big.length + 5);
    // ASDs on one file system say so (the API counts its space once).
    const { default: fsp } = await import('node:fs/promises');
    assert.equal(stats.filesystemId, `dev-${(await fsp.stat(daemon.store.dir)).dev}`);
    assert.equal((await client.health()).status, 'ok');
    assert.deepEqual(await client.delete([Buffer.from('ns/a'), Buffer.from('ns/a2')]), [
      true,
      false,
    ]);
    await rejectsWith(client.getOne(Buffer.from('ns/a')), 'ASD_NOT_FOUND');
  });

  test('bad input comes back with its stable code, and nothing is stored', async () => {
    const before = await client.stats();
    await rejectsWith(
      client.put([{ key: Buffer.alloc(MAX_KEY_BYTES + 1, 0x61), value: Buffer.alloc(1) }]),
      'ASD_KEY_TOO_LARGE',
    );
    await rejectsWith(
      client.put([{ key: Buffer.from('huge'), value: Buffer.alloc(MAX_VALUE_BYTES + 1) }]),
      'ASD_VALUE_TOO_LARGE',
    );
    const value = randomBytes(1000);
    await rejectsWith(
      client.put([{ key: Buffer.from('crc'), value, crc32c: crc32c(value) ^ 0xff }]),
      'ASD_CHECKSUM_MISMATCH',
    );
    await rejectsWith(client.getRanges([]), 'ASD_INVALID_ARGUMENT');
    const afterStats = await client.stats();
    assert.equal(afterStats.objectCount, before.objectCount);
    assert.equal(afterStats.usedBytes, before.usedBytes);
  });

  test('missing fields and undecodable messages get clear errors; the daemon keeps serving', async () => {
    const noKey = await rawCall('put', { items: [{ value: Buffer.from('v') }] });
    assert.equal(noKey.err?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(noKey.err?.metadata.get('shale-code')[0], 'ASD_KEY_EMPTY');
    const noItems = await rawCall('put', {});
    assert.equal(noItems.err?.metadata.get('shale-code')[0], 'ASD_INVALID_ARGUMENT');
    const noSlices = await rawCall('getRanges', { slices: [{ offset: 5, length: 1 }] });
    assert.equal(noSlices.err?.metadata.get('shale-code')[0], 'ASD_KEY_EMPTY');

    // Bytes that are not a PutRequest at all.
    const garbage = await new Promise<grpc.ServiceError | null>((resolve) => {
      const raw = new grpc.Client(daemon.address, grpc.credentials.createInsecure());
      raw.makeUnaryRequest(
        '/shale.asd.v1.AsdService/Put',
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => bytes,
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]),
        { deadline: Date.now() + 5000 },
        (err) => {
          raw.close();
          resolve(err);
        },
      );
    });
    assert.ok(garbage !== null, 'an undecodable message is an error');
    assert.equal((await client.health()).status, 'ok');
    await client.put([{ key: Buffer.from('still-works'), value: Buffer.from('yes') }]);
    assert.equal((await client.getOne(Buffer.from('still-works'))).toString(), 'yes');
  });

  test('metrics count operations and errors by code', async () => {
    await rejectsWith(client.getOne(Buffer.from('not-there')), 'ASD_NOT_FOUND');
    const response = await fetch(`http://127.0.0.1:${daemon.metricsPort}/metrics`);
    assert.equal(response.status, 200);
    const text = await response.text();
    assert.match(text, /shale_asd_operations_total\{op="put"\} [1-9]/);
    assert.match(text, /shale_asd_errors_total\{op="get",code="ASD_NOT_FOUND"\} [1-9]/);
    assert.match(text, /shale_asd_errors_total\{op="put",code="ASD_KEY_TOO_LARGE"\} [1-9]/);
    assert.match(text, /shale_asd_operation_seconds_bucket\{le="0.001",op="put"\}/);
    assert.match(text, /shale_asd_bytes_total\{direction="in"\} [1-9]/);
    const health = await fetch(`http://127.0.0.1:${daemon.metricsPort}/health`);
    assert.equal(health.status, 200);
  });
});

describe('client deadlines', () => {
  test('an unreachable ASD fails within the deadline with ASD_UNAVAILABLE or ASD_DEADLINE_EXCEEDED', async () => {
    // A port with nothing listening: bind one, note it, close it.
    const port = await new Promise<number>((resolve) => {
      const server = net.createServer();
      server.listen(0, '127.0.0.1', () => {
        const bound = (server.address() as net.AddressInfo).port;
        server.close(() => resolve(bound));
      });
    });
    const dead = new AsdClient(`127.0.0.1:${port}`, { deadlineMs: 1500 });
    const started = Date.now();
    try {
      await dead.get([Buffer.from('k')]);
      assert.fail('a call to a dead ASD succeeded');
    } catch (err) {
      assert.ok(err instanceof ShaleError);
      assert.ok(['ASD_UNAVAILABLE', 'ASD_DEADLINE_EXCEEDED'].includes(err.code), err.code);
    } finally {
      dead.close();
    }
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  });

  test('a server that accepts but never answers hits the deadline', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const stuck = new AsdClient(`127.0.0.1:${port}`, { deadlineMs: 800 });
    const started = Date.now();
    try {
      await rejectsWith(
        stuck.put([{ key: Buffer.from('k'), value: Buffer.from('v') }]),
        'ASD_DEADLINE_EXCEEDED',
      );
    } finally {
      stuck.close();
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
    assert.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
  });
});
