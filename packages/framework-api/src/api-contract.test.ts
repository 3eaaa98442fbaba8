// Proves every endpoint's contract (auth, 400/404/409 codes, iSCSI targets with write-only secrets and the vDisk delete they block, the happy path from vPool to delete with the data read back, operations, metrics, the token file) over real HTTP against a real VolumeManager behind a real VolumeService, and that every answer received matches the served OpenAPI document.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isShaleError, ShaleError } from '@shale/common';
import { VolumeClient } from '@shale/volumedriver';
import { ApiDaemon } from './api-daemon.js';
import { API_BODY_MAX_BYTES } from './constants.js';
import { IscsiTargetRecords, openTarget } from './iscsi/iscsi-records.js';
import { SecretBox } from './iscsi/iscsi-secrets.js';
import { parseSchema, validate } from './json-schema.js';
import { ROUTES } from './routes.js';
import {
  OpenApiDocumentSchema,
  type Operation,
  OperationSchema,
  ScrubReportSchema,
  VdiskSchema,
} from './schemas.js';
import {
  ApiTestCluster,
  BACKEND_ID,
  deadPort,
  MiB,
  NODE_ID,
  type RawResponse,
  type TestApi,
} from './testing/api-test-cluster.js';
import type { VolumeApi } from './volumedriver-pool.js';

/** The routes the brief asks for; the route table and the document must list exactly these. */
const EXPECTED_ROUTES = [
  'GET /health',
  'GET /openapi.json',
  'GET /metrics',
  'GET /api/v1/vpools',
  'POST /api/v1/vpools',
  'GET /api/v1/vpools/{name}',
  'GET /api/v1/vdisks',
  'POST /api/v1/vdisks',
  'GET /api/v1/vdisks/{name}',
  'DELETE /api/v1/vdisks/{name}',
  'POST /api/v1/vdisks/{name}/resize',
  'GET /api/v1/vdisks/{name}/snapshots',
  'POST /api/v1/vdisks/{name}/snapshots',
  'DELETE /api/v1/vdisks/{name}/snapshots/{snapshot}',
  'POST /api/v1/vdisks/{name}/clone',
  'POST /api/v1/vdisks/{name}/rollback',
  'POST /api/v1/vdisks/{name}/sync',
  'POST /api/v1/vdisks/{name}/scrub',
  'GET /api/v1/operations',
  'GET /api/v1/operations/{id}',
  'GET /api/v1/backends',
  'GET /api/v1/backends/{id}',
  'GET /api/v1/presets',
  'GET /api/v1/asds',
  'GET /api/v1/storagerouters',
  'GET /api/v1/stats',
  'GET /api/v1/iscsi-targets',
  'POST /api/v1/iscsi-targets',
  'GET /api/v1/iscsi-targets/{iqn}',
  'DELETE /api/v1/iscsi-targets/{iqn}',
].sort();

const SAMPLE_PARAMS: Readonly<Record<string, string>> = {
  name: 'nope',
  snapshot: 'snap',
  id: 'local',
};

function concretePath(template: string): string {
  return template.replace(/\{(\w+)\}/g, (_, param: string) =>
    template.startsWith('/api/v1/operations') ? '0'.repeat(32) : (SAMPLE_PARAMS[param] ?? 'x'),
  );
}

function expectError(response: RawResponse, status: number, code: string, pattern?: RegExp): void {
  assert.equal(
    response.status,
    status,
    `expected ${status} ${code}, got ${response.status} ${response.text}`,
  );
  const body = response.body as { code: string; message: string };
  assert.equal(body.code, code, response.text);
  assert.equal(typeof body.message, 'string');
  if (pattern !== undefined) assert.match(body.message, pattern);
}

async function rejectsCode(work: Promise<unknown>, code: string): Promise<ShaleError> {
  let caught: ShaleError | undefined;
  await assert.rejects(work, (err: unknown) => {
    assert.ok(isShaleError(err, code), `expected ${code}, got ${String(err)}`);
    caught = err;
    return true;
  });
  return caught as ShaleError;
}

const pattern = (byte: number): Buffer => Buffer.alloc(4096, byte);

describe('framework API contract', () => {
  let cluster: ApiTestCluster;
  let api: TestApi;

  before(async () => {
    cluster = await ApiTestCluster.start();
    api = await cluster.startApi();
  });
  after(async () => {
    await cluster.close();
  });

  test('the token file is created 0600 with 32 random bytes in hex, reused on restart, refused when others can read it', async () => {
    const stat = await fs.stat(api.daemon.tokenFile);
    assert.equal(stat.mode & 0o777, 0o600);
    assert.match(await fs.readFile(api.daemon.tokenFile, 'utf8'), /^[0-9a-f]{64}\n$/);
    assert.equal(api.daemon.tokenCreated, true);

    const again = await cluster.startApi();
    assert.equal(again.daemon.tokenCreated, false);
    assert.equal(again.token, api.token);
    assert.deepEqual(await again.client.listVpools(), []);

    const loose = path.join(cluster.dir, 'loose-token');
    await fs.writeFile(loose, `${api.token}\n`, { mode: 0o644 });
    await fs.chmod(loose, 0o644);
    const refused = await rejectsCode(
      ApiDaemon.start({
        kv: cluster.kv,
        volumedrivers: ['127.0.0.1:1'],
        tokenFile: loose,
        port: 0,
      }),
      'API_TOKEN_FILE_INSECURE',
    );
    assert.match(refused.message, /mode 0644.*chmod 600/);
    const garbled = path.join(cluster.dir, 'garbled-token');
    await fs.writeFile(garbled, 'not a token\n', { mode: 0o600 });
    await rejectsCode(
      ApiDaemon.start({
        kv: cluster.kv,
        volumedrivers: ['127.0.0.1:1'],
        tokenFile: garbled,
        port: 0,
      }),
      'API_TOKEN_FILE_BAD',
    );
  });

  test('GET /health needs no token and reports the metadata store and each volumedriver', async () => {
    for (const token of [null, 'f'.repeat(64)]) {
      const response = await api.request('GET', '/health', { token });
      assert.equal(response.status, 200, response.text);
      const body = response.body as { status: string; components: { name: string; ok: boolean }[] };
      assert.equal(body.status, 'ok');
      assert.deepEqual(
        body.components.map((c) => [c.name, c.ok]),
        [
          ['kv', true],
          [`volumedriver ${cluster.volumedriverAddress}`, true],
        ],
      );
    }
  });

  test('every other route answers 401 with a Bearer challenge without the token or with a wrong one', async () => {
    const wrong = 'a'.repeat(64);
    for (const route of ROUTES.filter((r) => r.auth)) {
      const target = concretePath(route.path.template);
      const what = `${route.method} ${target}`;
      const missing = await api.request(route.method, target, { token: null });
      expectError(missing, 401, 'API_UNAUTHORIZED', /Bearer/);
      assert.equal(missing.headers.get('www-authenticate'), 'Bearer realm="shale-api"', what);
      const bad = await api.request(route.method, target, { token: wrong });
      expectError(bad, 401, 'API_UNAUTHORIZED');
      assert.equal(
        bad.headers.get('www-authenticate'),
        'Bearer realm="shale-api", error="invalid_token"',
        what,
      );
      const prefix = await api.request(route.method, target, { token: api.token.slice(0, 63) });
      expectError(prefix, 401, 'API_UNAUTHORIZED');
    }
    const basic = await api.request('GET', '/api/v1/vpools', {
      token: null,
      headers: { authorization: `Basic ${api.token}` },
    });
    expectError(basic, 401, 'API_UNAUTHORIZED');
    const lowercase = await api.request('GET', '/api/v1/vpools', {
      token: null,
      headers: { authorization: `bearer ${api.token}` },
    });
    assert.equal(lowercase.status, 200, 'the scheme is case-insensitive');
    // Without the token, an unknown path is a 401 too: routes are not revealed.
    expectError(
      await api.request('GET', '/api/v1/secret', { token: null }),
      401,
      'API_UNAUTHORIZED',
    );
    expectError(await api.request('GET', '/api/v1/secret'), 404, 'API_ROUTE_NOT_FOUND');
  });

  test('vPools: create, list, get; a bad field is 400 naming it; unknown backend or preset 404; a duplicate 409', async () => {
    const post = (json: unknown) => api.request('POST', '/api/v1/vpools', { json });
    const good = {
      name: 'pool',
      backend: BACKEND_ID,
      scoSizeBytes: 4 * MiB,
      writeBufferBytes: 8 * MiB,
    };
    expectError(
      await post({ ...good, name: 'bad/name' }),
      400,
      'API_BAD_REQUEST',
      /^body\.name: must match/,
    );
    expectError(await post({ ...good, name: '' }), 400, 'API_BAD_REQUEST', /body\.name/);
    expectError(
      await post({ ...good, colour: 'red' }),
      400,
      'API_BAD_REQUEST',
      /body\.colour: is not a known field/,
    );
    expectError(await post({ name: 'pool' }), 400, 'API_BAD_REQUEST', /body\.backend: is required/);
    expectError(
      await post({ ...good, clusterSizeBytes: -4096 }),
      400,
      'API_BAD_REQUEST',
      /body\.clusterSizeBytes: must be at least/,
    );
    expectError(
      await post({ ...good, scoSizeBytes: 4 * MiB + 0.5 }),
      400,
      'API_BAD_REQUEST',
      /body\.scoSizeBytes: must be an integer/,
    );
    expectError(
      await post({ ...good, writeBufferBytes: '8MiB' }),
      400,
      'API_BAD_REQUEST',
      /body\.writeBufferBytes: must be an integer, got a string/,
    );
    expectError(await post([good]), 400, 'API_BAD_REQUEST', /^body: must be an object/);
    expectError(
      await api.request('POST', '/api/v1/vpools', { raw: '{"name": "pool",' }),
      400,
      'API_BAD_JSON',
    );
    expectError(await post({ ...good, backend: 'nope' }), 404, 'PROXY_BACKEND_NOT_FOUND');
    expectError(await post({ ...good, preset: 'nope' }), 404, 'PROXY_PRESET_NOT_FOUND');
    // A domain refusal passes through with its own code.
    expectError(
      await post({ ...good, name: 'tiny', writeBufferBytes: 4 * MiB }),
      400,
      'VD_INVALID_ARGUMENT',
      /two SCOs/,
    );
    assert.deepEqual(await api.client.listVpools(), [], 'nothing was created by the refusals');

    const created = await post(good);
    assert.equal(created.status, 201, created.text);
    assert.equal(created.headers.get('location'), '/api/v1/vpools/pool');
    const vpool = created.body as {
      name: string;
      backend: string;
      preset: string;
      scoSizeBytes: number;
    };
    assert.equal(vpool.name, 'pool');
    assert.equal(vpool.backend, BACKEND_ID);
    assert.equal(vpool.preset, '');
    assert.equal(vpool.scoSizeBytes, 4 * MiB);
    expectError(await post(good), 409, 'VD_EXISTS');

    assert.deepEqual(await api.client.listVpools(), [vpool]);
    assert.deepEqual(await api.client.getVpool('pool'), vpool);
    expectError(await api.request('GET', '/api/v1/vpools/nope'), 404, 'VD_NOT_FOUND');
    expectError(
      await api.request('GET', '/api/v1/vpools/bad%2Fname'),
      400,
      'API_BAD_REQUEST',
      /^path\.name/,
    );
  });

  test('vDisks: create (the only vPool by default), get, list; bad sizes and names 400; unknown vPool 404; a duplicate 409', async () => {
    const post = (json: unknown) => api.request('POST', '/api/v1/vdisks', { json });
    expectError(
      await post({ name: 'd', sizeBytes: -MiB }),
      400,
      'API_BAD_REQUEST',
      /body\.sizeBytes: must be at least 1/,
    );
    expectError(await post({ name: 'd', sizeBytes: 0 }), 400, 'API_BAD_REQUEST', /body\.sizeBytes/);
    expectError(
      await post({ name: 'd', sizeBytes: 1.5 }),
      400,
      'API_BAD_REQUEST',
      /body\.sizeBytes: must be an integer/,
    );
    expectError(
      await post({ name: 'd', sizeBytes: 2 ** 60 }),
      400,
      'API_BAD_REQUEST',
      /body\.sizeBytes/,
    );
    expectError(await post({ name: 'd' }), 400, 'API_BAD_REQUEST', /body\.sizeBytes: is required/);
    expectError(await post({ name: '-d', sizeBytes: MiB }), 400, 'API_BAD_REQUEST', /body\.name/);
    expectError(
      await post({ name: 'x'.repeat(65), sizeBytes: MiB }),
      400,
      'API_BAD_REQUEST',
      /body\.name/,
    );
    expectError(
      await post({ name: 'd', sizeBytes: MiB, thin: true }),
      400,
      'API_BAD_REQUEST',
      /body\.thin/,
    );
    expectError(
      await post({ name: 'd', sizeBytes: 1000 }),
      400,
      'VD_INVALID_ARGUMENT',
      /cluster size/,
    );
    expectError(
      await post({ name: 'd', sizeBytes: MiB, vpool: 'nope' }),
      404,
      'VD_NOT_FOUND',
      /vPool/,
    );
    expectError(
      await api.request('POST', '/api/v1/vdisks', { raw: 'name=d' }),
      400,
      'API_BAD_JSON',
    );
    assert.deepEqual(await api.client.listVdisks(), []);

    const created = await post({ name: 'd', sizeBytes: MiB });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.headers.get('location'), '/api/v1/vdisks/d');
    const vdisk = created.body as {
      name: string;
      vpool: string;
      open: boolean;
      ownerNodeId: string;
    };
    assert.equal(vdisk.vpool, 'pool', 'the only vPool is the default');
    assert.equal(vdisk.open, true);
    assert.equal(vdisk.ownerNodeId, NODE_ID);
    expectError(await post({ name: 'd', sizeBytes: MiB }), 409, 'VD_EXISTS');

    const got = await api.client.getVdisk('d');
    assert.equal(got.sizeBytes, MiB);
    assert.equal(got.clusterSizeBytes, 4096);
    assert.deepEqual(got.snapshots, []);
    assert.ok(got.stats !== undefined, 'the owner answers with stats');
    assert.deepEqual(
      (await api.client.listVdisks()).map((v) => [v.name, v.open]),
      [['d', true]],
    );
    expectError(await api.request('GET', '/api/v1/vdisks/nope'), 404, 'VD_NOT_FOUND');
    expectError(
      await api.request('GET', '/api/v1/vdisks/.hidden'),
      400,
      'API_BAD_REQUEST',
      /path\.name/,
    );
  });

  test('snapshot, clone (operation polled), rollback, resize, sync and scrub, with the data read back', async () => {
    const io = cluster.manager.io('d');
    await io.write(0, pattern(0xa1));

    const postSnapshot = (vdisk: string, json: unknown) =>
      api.request('POST', `/api/v1/vdisks/${vdisk}/snapshots`, { json });
    expectError(await postSnapshot('d', { name: 'a b' }), 400, 'API_BAD_REQUEST', /body\.name/);
    expectError(await postSnapshot('d', {}), 400, 'API_BAD_REQUEST', /body\.name: is required/);
    expectError(await postSnapshot('nope', { name: 's1' }), 404, 'VD_NOT_FOUND');
    const snapshot = await postSnapshot('d', { name: 's1' });
    assert.equal(snapshot.status, 201, snapshot.text);
    assert.equal((snapshot.body as { name: string }).name, 's1');
    expectError(await postSnapshot('d', { name: 's1' }), 409, 'VD_EXISTS');
    assert.deepEqual(
      (await api.client.listSnapshots('d')).map((s) => s.name),
      ['s1'],
    );
    expectError(await api.request('GET', '/api/v1/vdisks/nope/snapshots'), 404, 'VD_NOT_FOUND');
    await io.write(0, pattern(0xb2));

    // Clone: refused at once for a missing snapshot, a taken name, a bad name, a missing parent.
    const clone = (vdisk: string, json: unknown) =>
      api.request('POST', `/api/v1/vdisks/${vdisk}/clone`, { json });
    expectError(await clone('d', { name: 'c', snapshot: 'nope' }), 404, 'VD_NOT_FOUND', /snapshot/);
    expectError(await clone('d', { name: 'd', snapshot: 's1' }), 409, 'VD_EXISTS');
    expectError(
      await clone('d', { name: 'c/1', snapshot: 's1' }),
      400,
      'API_BAD_REQUEST',
      /body\.name/,
    );
    expectError(
      await clone('d', { name: 'c' }),
      400,
      'API_BAD_REQUEST',
      /body\.snapshot: is required/,
    );
    expectError(await clone('nope', { name: 'c', snapshot: 's1' }), 404, 'VD_NOT_FOUND');
    const started = await clone('d', { name: 'c', snapshot: 's1' });
    assert.equal(started.status, 202, started.text);
    const operation = started.body as Operation;
    assert.equal(started.headers.get('location'), `/api/v1/operations/${operation.id}`);
    assert.equal(operation.kind, 'vdisk.clone');
    assert.equal(operation.target, 'd');
    const seen: string[] = [];
    const done = await api.client.waitForOperation(operation.id, {
      onProgress: (op) => seen.push(op.state),
      timeoutMs: 30_000,
    });
    assert.equal(done.state, 'succeeded');
    assert.ok(seen.length >= 1 && seen.at(-1) === 'succeeded');
    assert.ok(done.finishedAtMs !== undefined && done.finishedAtMs >= done.createdAtMs);
    assert.equal(validate(VdiskSchema, done.result), undefined);
    const cloned = done.result as { name: string; parent?: { vdisk: string; snapshot: string } };
    assert.equal(cloned.name, 'c');
    assert.deepEqual(
      { vdisk: cloned.parent?.vdisk, snapshot: cloned.parent?.snapshot },
      { vdisk: 'd', snapshot: 's1' },
    );
    assert.ok(
      (await cluster.manager.io('c').read(0, 4096)).equals(pattern(0xa1)),
      'the clone reads the snapshot',
    );

    // Clones pin their parent and its snapshot.
    expectError(await api.request('DELETE', '/api/v1/vdisks/d'), 409, 'VD_HAS_CLONES', /\bc\b/);
    expectError(await api.request('DELETE', '/api/v1/vdisks/d/snapshots/s1'), 409, 'VD_HAS_CLONES');
    assert.deepEqual(
      (await api.client.getVdisk('d')).snapshots.map((s) => [s.name, s.clones]),
      [['s1', ['c']]],
    );

    // Rollback.
    const rollback = (json: unknown) => api.request('POST', '/api/v1/vdisks/d/rollback', { json });
    expectError(await rollback({ snapshot: 'nope' }), 404, 'VD_NOT_FOUND');
    expectError(
      await rollback({ snapshot: 's1', force: true }),
      400,
      'API_BAD_REQUEST',
      /body\.force/,
    );
    expectError(
      await api.request('POST', '/api/v1/vdisks/nope/rollback', { json: { snapshot: 's1' } }),
      404,
      'VD_NOT_FOUND',
    );
    const rolled = await api.client.waitForOperation(
      (await api.client.rollbackVdisk('d', 's1')).id,
    );
    assert.equal(rolled.kind, 'vdisk.rollback');
    assert.equal((rolled.result as { name: string }).name, 'd');
    assert.ok((await cluster.manager.io('d').read(0, 4096)).equals(pattern(0xa1)), 'rolled back');

    // Resize.
    const resize = (vdisk: string, json: unknown) =>
      api.request('POST', `/api/v1/vdisks/${vdisk}/resize`, { json });
    expectError(await resize('d', { sizeBytes: -1 }), 400, 'API_BAD_REQUEST', /body\.sizeBytes/);
    expectError(
      await resize('d', { sizeBytes: 2.5 * MiB + 0.5 }),
      400,
      'API_BAD_REQUEST',
      /must be an integer/,
    );
    expectError(
      await resize('d', { sizeBytes: 2 * MiB, force: 'yes' }),
      400,
      'API_BAD_REQUEST',
      /body\.force: must be true or false/,
    );
    expectError(await resize('nope', { sizeBytes: 2 * MiB }), 404, 'VD_NOT_FOUND');
    assert.equal((await api.client.resizeVdisk('d', { sizeBytes: 2 * MiB })).sizeBytes, 2 * MiB);
    expectError(await resize('d', { sizeBytes: MiB }), 400, 'VD_INVALID_ARGUMENT', /force/);
    assert.equal(
      (await api.client.resizeVdisk('d', { sizeBytes: MiB, force: true })).sizeBytes,
      MiB,
    );
    assert.equal((await api.client.getVdisk('d')).sizeBytes, MiB);

    // Sync: an empty body is {} for a route whose fields are all optional.
    expectError(
      await api.request('POST', '/api/v1/vdisks/d/sync', { json: { now: true } }),
      400,
      'API_BAD_REQUEST',
      /body\.now/,
    );
    expectError(
      await api.request('POST', '/api/v1/vdisks/nope/sync', { json: {} }),
      404,
      'VD_NOT_FOUND',
    );
    const syncStarted = await api.request('POST', '/api/v1/vdisks/d/sync');
    assert.equal(syncStarted.status, 202, syncStarted.text);
    const synced = await api.client.waitForOperation((syncStarted.body as Operation).id);
    assert.equal(synced.result, undefined);
    assert.ok(
      (await api.client.listSnapshots('d')).every((s) => s.inBackend),
      'synced to the backend',
    );

    // Scrub.
    const scrub = (json: unknown) => api.request('POST', '/api/v1/vdisks/d/scrub', { json });
    expectError(
      await scrub({ liveFractionThreshold: 0 }),
      400,
      'API_BAD_REQUEST',
      /must be above 0/,
    );
    expectError(
      await scrub({ liveFractionThreshold: 1.5 }),
      400,
      'API_BAD_REQUEST',
      /must be at most 1/,
    );
    expectError(
      await scrub({ liveFractionThreshold: 'half' }),
      400,
      'API_BAD_REQUEST',
      /must be a number/,
    );
    const scrubbed = await api.client.waitForOperation(
      (await api.client.scrubVdisk('d', { liveFractionThreshold: 0.9 })).id,
    );
    assert.equal(
      validate(ScrubReportSchema, scrubbed.result),
      undefined,
      JSON.stringify(scrubbed.result),
    );

    // The operation list: newest first, each valid; unknown and malformed ids.
    const operations = await api.client.listOperations();
    assert.deepEqual(
      operations.slice(0, 4).map((op) => op.kind),
      ['vdisk.scrub', 'vdisk.sync', 'vdisk.rollback', 'vdisk.clone'],
    );
    for (const op of operations) assert.equal(validate(OperationSchema, op), undefined);
    assert.deepEqual(await api.client.getOperation(scrubbed.id), scrubbed);
    expectError(
      await api.request('GET', `/api/v1/operations/${'0'.repeat(32)}`),
      404,
      'API_OPERATION_NOT_FOUND',
    );
    expectError(
      await api.request('GET', '/api/v1/operations/xyz'),
      400,
      'API_BAD_REQUEST',
      /path\.id/,
    );
  });

  test('backends, presets, ASDs (unreachable ones are healthy: false), storage routers and stats', async () => {
    assert.deepEqual(
      (await api.client.listBackends()).map(({ createdAtMs: _, ...rest }) => rest),
      [
        {
          id: BACKEND_ID,
          name: 'local-backend',
          type: 'local',
          osdCount: 2,
          decommissionedOsdCount: 0,
          defaultPreset: 'default-single-node',
        },
      ],
    );
    assert.equal((await api.client.getBackend(BACKEND_ID)).osdCount, 2);
    expectError(await api.request('GET', '/api/v1/backends/nope'), 404, 'PROXY_BACKEND_NOT_FOUND');
    expectError(
      await api.request('GET', '/api/v1/backends/-x'),
      400,
      'API_BAD_REQUEST',
      /path\.id/,
    );

    const presets = await api.client.listPresets(BACKEND_ID);
    assert.deepEqual(
      presets.map((p) => [
        p.backend,
        p.name,
        p.isDefault,
        p.policies[0],
        p.compression,
        p.encryption,
      ]),
      [[BACKEND_ID, 'default-single-node', true, { k: 4, m: 2, c: 5, x: 6 }, 'none', 'none']],
    );
    assert.deepEqual(await api.client.listPresets(), presets);
    expectError(
      await api.request('GET', '/api/v1/presets?backend=nope'),
      404,
      'PROXY_BACKEND_NOT_FOUND',
    );
    expectError(
      await api.request('GET', '/api/v1/presets?colour=red'),
      400,
      'API_BAD_REQUEST',
      /query\.colour/,
    );
    expectError(
      await api.request('GET', '/api/v1/presets?backend=local&backend=local'),
      400,
      'API_BAD_REQUEST',
      /more than once/,
    );
    expectError(
      await api.request('GET', '/api/v1/presets?backend=a%20b'),
      400,
      'API_BAD_REQUEST',
      /query\.backend/,
    );

    const startedMs = Date.now();
    const asds = await api.client.listAsds();
    assert.ok(Date.now() - startedMs < 5_000, 'dead ASDs are probed with a short deadline');
    assert.deepEqual(
      asds.map((a) => [a.id, a.backend, a.address, a.state, a.healthy]),
      cluster.deadAsdAddresses.map((address, i) => [
        `asd-${i + 1}`,
        BACKEND_ID,
        address,
        'active',
        false,
      ]),
    );
    for (const asd of asds) {
      assert.match(asd.detail ?? '', /unreachable/);
      assert.equal(asd.capacityBytes, undefined);
    }

    assert.deepEqual(
      (await api.client.listStorageRouters()).map((r) => [
        r.nodeId,
        r.address,
        r.healthy,
        r.vdisksOpen,
      ]),
      [[NODE_ID, cluster.volumedriverAddress, true, 2]],
    );

    const vdisks = await api.client.listVdisks();
    assert.deepEqual(
      vdisks.map((v) => [v.name, v.open, v.parent?.vdisk]),
      [
        ['c', true, 'd'],
        ['d', true, undefined],
      ],
    );
    const stats = await api.client.stats();
    assert.deepEqual(
      stats.vdisks.map((v) => [v.name, v.open, v.sizeBytes]),
      [
        ['c', true, MiB],
        ['d', true, MiB],
      ],
    );
    const entries = stats.vdisks.map((v) => v.stats);
    assert.ok(entries.every((e) => e !== undefined));
    assert.deepEqual(stats.totals, {
      vdiskCount: 2,
      vdisksOpen: 2,
      provisionedBytes: 2 * MiB,
      writeBufferDirtyBytes: entries.reduce((a, e) => a + (e?.writeBufferDirtyBytes ?? 0), 0),
      uploadBacklogObjects: entries.reduce((a, e) => a + (e?.uploadBacklogObjects ?? 0), 0),
      dataAtRiskBytes: entries.reduce((a, e) => a + (e?.dataAtRiskBytes ?? 0), 0),
      dataAtRiskMaxAgeMs: Math.max(0, ...entries.map((e) => e?.dataAtRiskAgeMs ?? 0)),
      vdisksFailed: 0,
    });
    // Both ASDs are unreachable here: each is a degraded problem, named.
    assert.deepEqual(
      stats.problems.map((p) => [p.code, p.severity]),
      [
        ['ASD_UNHEALTHY', 'degraded'],
        ['ASD_UNHEALTHY', 'degraded'],
      ],
    );
    assert.deepEqual(stats.backend, {
      asdCount: 2,
      asdsReachable: 0,
      filesystemCount: 0,
      capacityBytes: 0,
      usedBytes: 0,
      freeBytes: 0,
    });
  });

  test('with two vPools a vDisk needs its vpool (400 API_VPOOL_REQUIRED)', async () => {
    await api.client.createVpool({
      name: 'pool2',
      backend: BACKEND_ID,
      preset: 'default-single-node',
      scoSizeBytes: 4 * MiB,
      writeBufferBytes: 8 * MiB,
    });
    expectError(
      await api.request('POST', '/api/v1/vdisks', { json: { name: 'e', sizeBytes: MiB } }),
      400,
      'API_VPOOL_REQUIRED',
      /pool, pool2/,
    );
    const e = await api.client.createVdisk({ name: 'e', sizeBytes: MiB, vpool: 'pool2' });
    assert.equal(e.vpool, 'pool2');
  });

  test('iSCSI targets: create, list, show, delete; secrets never answered; 400/404/409 change nothing; a vDisk delete is refused while exported', async () => {
    const chapSecret = 'chap-secret-0123';
    const mutualSecret = 'mutual-secret-0123';
    await api.client.createVdisk({ name: 'iscsi-disk', sizeBytes: MiB, vpool: 'pool' });
    await api.client.createVdisk({ name: 'iscsi-other', sizeBytes: MiB, vpool: 'pool' });
    const post = (json: unknown) => api.request('POST', '/api/v1/iscsi-targets', { json });
    const stored = async (): Promise<string[]> => {
      const page = await cluster.kv.range(
        { prefix: Buffer.from('/shale/iscsi/') },
        { limit: 1000 },
      );
      return page.items.map((i) => `${i.key.toString()}=${i.value.toString()}`);
    };
    assert.deepEqual(await api.client.listIscsiTargets(), []);

    const iqn = 'iqn.2026-12.io.shale:iscsi-disk';
    const made = await post({
      vdisk: 'iscsi-disk',
      initiators: ['127.0.0.1', 'iqn.1993-08.org.debian:01:host'],
      chap: { user: 'alice', secret: chapSecret },
      mutual: { user: 'target-alice', secret: mutualSecret },
    });
    assert.equal(made.status, 201, made.text);
    assert.equal(made.headers.get('location'), `/api/v1/iscsi-targets/${encodeURIComponent(iqn)}`);
    const view = made.body as Record<string, unknown>;
    assert.deepEqual(
      { ...view, createdAtMs: 0 },
      {
        iqn,
        vdisk: 'iscsi-disk',
        initiators: ['127.0.0.1', 'iqn.1993-08.org.debian:01:host'],
        chapUser: 'alice',
        mutualUser: 'target-alice',
        readOnly: false,
        createdAtMs: 0,
      },
    );
    // The IQN's ':' and '.' in the path, encoded or not.
    for (const p of [encodeURIComponent(iqn), iqn]) {
      const shown = await api.request('GET', `/api/v1/iscsi-targets/${p}`);
      assert.equal(shown.status, 200, shown.text);
      assert.deepEqual(shown.body, view);
    }
    assert.deepEqual(await api.client.listIscsiTargets(), [view]);
    const ro = await api.client.createIscsiTarget({
      vdisk: 'iscsi-other',
      iqn: 'iqn.2001-04.com.example:ro',
      readOnly: true,
    });
    assert.deepEqual(ro.initiators, [], 'no initiators: admits nobody');
    assert.equal(ro.readOnly, true);
    assert.equal(ro.chapUser, undefined);
    assert.deepEqual(
      (await api.client.listIscsiTargets()).map((t) => t.iqn),
      ['iqn.2001-04.com.example:ro', iqn],
    );

    // Sealed in the store under the daemon's key file (next to the token by default), the
    // same file shale iscsi serve is given: opened with it, the secrets come back.
    const record = await new IscsiTargetRecords(cluster.kv).require(iqn);
    assert.equal(api.daemon.iscsiKeyFile, path.join(cluster.dir, 'iscsi-secrets.key'));
    assert.equal((await fs.stat(api.daemon.iscsiKeyFile)).mode & 0o777, 0o600);
    const opened = openTarget(record, await SecretBox.open(api.daemon.iscsiKeyFile));
    assert.equal(opened.chap?.secret, chapSecret);
    assert.equal(opened.mutual?.secret, mutualSecret);
    const before = await stored();
    assert.ok(!before.join('\n').includes(chapSecret), 'never stored in the clear');

    const spaced = 'refused secret with spaces';
    const huge = 'h'.repeat(1025);
    const bad: [unknown, number, string][] = [
      [
        { vdisk: 'iscsi-third', chap: { user: 'bob', secret: spaced } },
        400,
        'ISCSI_CHAP_SECRET_BAD',
      ],
      [{ vdisk: 'iscsi-third', chap: { user: 'bob', secret: huge } }, 400, 'API_BAD_REQUEST'],
      [{ vdisk: 'iscsi-third', iqn: 'not-an-iqn' }, 400, 'ISCSI_BAD_IQN'],
      [{ vdisk: 'iscsi-third', iqn: 'IQN.2001-04.com.example:x' }, 400, 'ISCSI_BAD_IQN'],
      [
        { vdisk: 'iscsi-third', chap: { user: 'bob', secret: '01234567890' } },
        400,
        'ISCSI_CHAP_SECRET_SHORT',
      ],
      [
        { vdisk: 'iscsi-third', mutual: { user: 'bob', secret: '012345678901' } },
        400,
        'ISCSI_MUTUAL_WITHOUT_CHAP',
      ],
      [{ vdisk: 'iscsi-third', initiators: ['host.example'] }, 400, 'ISCSI_BAD_INITIATOR'],
      [{ vdisk: 'iscsi-third', snapshot: 's1' }, 400, 'API_BAD_REQUEST'],
      [{ vdisk: 'bad name' }, 400, 'API_BAD_REQUEST'],
      [{ vdisk: 'iscsi-third', initiators: ['127.0.0.1'] }, 404, 'VD_NOT_FOUND'],
      [{ vdisk: 'iscsi-other', iqn }, 409, 'ISCSI_TARGET_EXISTS'],
      [{ vdisk: 'iscsi-disk', iqn: 'iqn.2001-04.com.example:again' }, 409, 'ISCSI_VDISK_TAKEN'],
    ];
    for (const [json, status, code] of bad) {
      expectError(await post(json), status, code);
      assert.deepEqual(await stored(), before, `${code} changed nothing`);
    }
    expectError(
      await api.request(
        'GET',
        `/api/v1/iscsi-targets/${encodeURIComponent('iqn.2001-04.com.example:none')}`,
      ),
      404,
      'ISCSI_TARGET_NOT_FOUND',
    );
    expectError(await api.request('GET', '/api/v1/iscsi-targets/nope'), 400, 'ISCSI_BAD_IQN');
    expectError(
      await api.request(
        'DELETE',
        `/api/v1/iscsi-targets/${encodeURIComponent('iqn.2001-04.com.example:none')}`,
      ),
      404,
      'ISCSI_TARGET_NOT_FOUND',
    );

    // The exported vDisk cannot be deleted, and the refusal changes nothing.
    const refused = await api.request('DELETE', '/api/v1/vdisks/iscsi-disk');
    expectError(refused, 409, 'ISCSI_VDISK_EXPORTED', new RegExp(iqn.replace(/\./g, '\\.')));
    assert.equal((await api.client.getVdisk('iscsi-disk')).name, 'iscsi-disk');
    assert.deepEqual(await stored(), before);

    const gone = await api.request('DELETE', `/api/v1/iscsi-targets/${encodeURIComponent(iqn)}`);
    assert.equal(gone.status, 204, gone.text);
    expectError(
      await api.request('GET', `/api/v1/iscsi-targets/${iqn}`),
      404,
      'ISCSI_TARGET_NOT_FOUND',
    );
    await api.client.deleteIscsiTarget('iqn.2001-04.com.example:ro');
    assert.deepEqual(await api.client.listIscsiTargets(), []);
    assert.deepEqual(await stored(), [], 'the claims on the vDisk and the CHAP users went too');
    for (const name of ['iscsi-disk', 'iscsi-other']) {
      const op = await api.client.waitForOperation((await api.client.deleteVdisk(name)).id);
      assert.equal(op.state, 'succeeded', JSON.stringify(op));
    }

    const leaked = cluster.seen.filter((r) =>
      [chapSecret, mutualSecret, spaced, huge.slice(0, 40), '01234567890'].some((secret) =>
        r.text.includes(secret),
      ),
    );
    assert.deepEqual(leaked, [], 'no answer ever carries a secret');
  });

  test('deletes: the clone, then the snapshot it pinned (204), then the parent; all gone afterwards', async () => {
    expectError(await api.request('DELETE', '/api/v1/vdisks/nope'), 404, 'VD_NOT_FOUND');
    const cloneGone = await api.client.waitForOperation((await api.client.deleteVdisk('c')).id);
    assert.equal(cloneGone.kind, 'vdisk.delete');
    assert.equal(cloneGone.result, undefined);
    expectError(await api.request('GET', '/api/v1/vdisks/c'), 404, 'VD_NOT_FOUND');

    const removed = await api.request('DELETE', '/api/v1/vdisks/d/snapshots/s1');
    assert.equal(removed.status, 204, removed.text);
    assert.equal(removed.text, '');
    expectError(await api.request('DELETE', '/api/v1/vdisks/d/snapshots/s1'), 404, 'VD_NOT_FOUND');
    expectError(
      await api.request('DELETE', '/api/v1/vdisks/d/snapshots/bad%20name'),
      400,
      'API_BAD_REQUEST',
      /path\.snapshot/,
    );

    const started = await api.request('DELETE', '/api/v1/vdisks/d');
    assert.equal(started.status, 202, started.text);
    await api.client.waitForOperation((started.body as Operation).id);
    await api.client.waitForOperation((await api.client.deleteVdisk('e')).id);
    assert.deepEqual(await api.client.listVdisks(), []);
    expectError(await api.request('GET', '/api/v1/vdisks/d'), 404, 'VD_NOT_FOUND');
  });

  test('protocol errors: 404 route, 405 with Allow, 413 past 1 MiB, 415, a body where none is taken, bad encodings', async () => {
    const put = await api.request('PUT', '/api/v1/vdisks', { json: {} });
    expectError(put, 405, 'API_METHOD_NOT_ALLOWED');
    assert.equal(put.headers.get('allow'), 'GET, POST');
    expectError(await api.request('PATCH', '/api/v1/vdisks/d'), 405, 'API_METHOD_NOT_ALLOWED');
    expectError(await api.request('GET', '/api/v2/vdisks'), 404, 'API_ROUTE_NOT_FOUND');
    expectError(await api.request('GET', '/api/v1/vdisks/'), 404, 'API_ROUTE_NOT_FOUND');

    const padded = (total: number): string => {
      const json = '{"name":"-bad","sizeBytes":4096}';
      return json + ' '.repeat(total - json.length);
    };
    expectError(
      await api.request('POST', '/api/v1/vdisks', { raw: padded(API_BODY_MAX_BYTES + 1) }),
      413,
      'API_BODY_TOO_LARGE',
    );
    // Exactly the limit is read, parsed and validated.
    expectError(
      await api.request('POST', '/api/v1/vdisks', { raw: padded(API_BODY_MAX_BYTES) }),
      400,
      'API_BAD_REQUEST',
      /body\.name/,
    );
    expectError(
      await api.request('POST', '/api/v1/vdisks', { raw: '{}', contentType: 'text/plain' }),
      415,
      'API_UNSUPPORTED_MEDIA_TYPE',
    );
    expectError(
      await api.request('DELETE', '/api/v1/vdisks/d', { json: { force: true } }),
      400,
      'API_BAD_REQUEST',
      /takes no body/,
    );
    expectError(
      await api.request('POST', '/api/v1/vdisks', { raw: Buffer.from([0x7b, 0xff, 0x7d]) }),
      400,
      'API_BAD_JSON',
    );
    expectError(
      await api.request('GET', '/api/v1/vdisks/%E0%A4%A'),
      400,
      'API_BAD_REQUEST',
      /percent-encoding/,
    );
    // The connection survives refusals: one more request on the same client works.
    assert.deepEqual(await api.client.listVdisks(), []);
  });

  test('an unreachable volumedriver: control calls fail over, /health is 503 degraded, none reachable is 503 VD_UNAVAILABLE', async () => {
    const dead = `127.0.0.1:${await deadPort()}`;
    const failover = await cluster.startApi({ volumedrivers: [dead, cluster.volumedriverAddress] });
    assert.deepEqual(
      (await failover.client.listVpools()).map((v) => v.name),
      ['pool', 'pool2'],
    );
    const health = await failover.request('GET', '/health', { token: null });
    assert.equal(health.status, 503);
    const body = health.body as {
      status: string;
      components: { name: string; ok: boolean; detail: string }[];
    };
    assert.equal(body.status, 'degraded');
    assert.deepEqual(
      body.components.map((c) => [c.name, c.ok]),
      [
        ['kv', true],
        [`volumedriver ${dead}`, false],
        [`volumedriver ${cluster.volumedriverAddress}`, true],
      ],
    );
    assert.equal(
      (await failover.client.health()).status,
      'degraded',
      'the client returns a 503 health',
    );

    const alone = await cluster.startApi({ volumedrivers: [dead] });
    const refused = await rejectsCode(alone.client.listVpools(), 'VD_UNAVAILABLE');
    assert.equal(refused.details.httpStatus, '503');
    expectError(await alone.request('GET', '/api/v1/vdisks/d'), 503, 'VD_UNAVAILABLE');
  });

  test("a failed operation carries the volumedriver's code; waitForOperation throws it, or API_CLIENT_TIMEOUT", async () => {
    let releaseScrub: () => void = () => undefined;
    const scrubGate = new Promise<void>((resolve) => {
      releaseScrub = resolve;
    });
    // Faults injected at a named point: the volumedriver client's sync and scrub calls.
    const faulty = await cluster.startApi({
      volumeClientFactory: (address, deadlineMs): VolumeApi => {
        const real = new VolumeClient(address, deadlineMs);
        return Object.assign(Object.create(real) as VolumeClient, {
          syncToBackend: async () => {
            throw new ShaleError('VD_BACKEND_ERROR', 'injected: the proxy is down');
          },
          scrub: async (name: string) => {
            await scrubGate;
            return real.scrub(name);
          },
          close: () => real.close(),
        });
      },
    });
    await faulty.client.createVdisk({ name: 'f', sizeBytes: MiB, vpool: 'pool' });
    const sync = await faulty.client.syncVdisk('f');
    const thrown = await rejectsCode(faulty.client.waitForOperation(sync.id), 'VD_BACKEND_ERROR');
    assert.equal(thrown.details.operationId, sync.id);
    const failed = await faulty.client.getOperation(sync.id);
    assert.equal(failed.state, 'failed');
    assert.deepEqual(failed.error, {
      code: 'VD_BACKEND_ERROR',
      message: 'injected: the proxy is down',
    });
    assert.equal(failed.result, undefined);

    const scrub = await faulty.client.scrubVdisk('f');
    await rejectsCode(
      faulty.client.waitForOperation(scrub.id, { timeoutMs: 150 }),
      'API_CLIENT_TIMEOUT',
    );
    assert.equal((await faulty.client.getOperation(scrub.id)).state, 'running');
    releaseScrub();
    assert.equal((await faulty.client.waitForOperation(scrub.id)).state, 'succeeded');
    await faulty.client.waitForOperation((await faulty.client.deleteVdisk('f')).id);
  });

  test("per-vDisk calls go to the vDisk's owner, even one the API was not given; an unreachable owner is 503 and listed open: false", async () => {
    const nodeB = await cluster.startNode('node-b');
    const direct = new VolumeClient(nodeB.address, 10_000);
    try {
      await direct.createVdisk({ name: 'b-disk', vpoolName: 'pool', sizeBytes: MiB });
    } finally {
      direct.close();
    }
    await nodeB.manager.io('b-disk').write(0, pattern(0xc3));
    assert.throws(
      () => cluster.manager.io('b-disk'),
      (err: unknown) => isShaleError(err, 'VD_NOT_FOUND'),
      'the configured volumedriver does not serve it',
    );
    const info = await api.client.getVdisk('b-disk');
    assert.equal(info.ownerNodeId, 'node-b');
    assert.equal(info.open, true);
    assert.ok(info.stats !== undefined);

    await api.client.createSnapshot('b-disk', 'sb');
    assert.deepEqual(
      (await api.client.listSnapshots('b-disk')).map((s) => s.name),
      ['sb'],
    );
    const clone = await api.client.waitForOperation(
      (await api.client.cloneVdisk('b-disk', { name: 'b-clone', snapshot: 'sb' })).id,
    );
    assert.equal((clone.result as { ownerNodeId: string }).ownerNodeId, 'node-b');
    assert.ok((await nodeB.manager.io('b-clone').read(0, 4096)).equals(pattern(0xc3)));
    assert.equal(
      (await api.client.resizeVdisk('b-disk', { sizeBytes: 2 * MiB })).sizeBytes,
      2 * MiB,
    );
    assert.deepEqual(
      (await api.client.listVdisks()).map((v) => [
        v.name,
        v.ownerNodeId,
        v.open,
        v.snapshots.length,
      ]),
      [
        ['b-clone', 'node-b', true, 0],
        ['b-disk', 'node-b', true, 1],
      ],
    );
    assert.deepEqual(
      (await api.client.listStorageRouters()).map((r) => [r.nodeId, r.healthy, r.vdisksOpen]),
      [
        [NODE_ID, true, 0],
        ['node-b', true, 2],
      ],
    );

    await nodeB.stop();
    expectError(await api.request('GET', '/api/v1/vdisks/b-disk'), 503, 'VD_UNAVAILABLE');
    expectError(await api.request('POST', '/api/v1/vdisks/b-disk/sync'), 503, 'VD_UNAVAILABLE');
    assert.deepEqual(
      (await api.client.listVdisks()).map((v) => [v.name, v.open, v.snapshots.length, v.stats]),
      [
        ['b-clone', false, 0, undefined],
        ['b-disk', false, 0, undefined],
      ],
    );
    const routers = await api.client.listStorageRouters();
    assert.deepEqual(
      routers.map((r) => [r.nodeId, r.healthy]),
      [
        [NODE_ID, true],
        ['node-b', false],
      ],
    );
    assert.match(routers[1]?.detail ?? '', /VD_UNAVAILABLE/);
    const stats = await api.client.stats();
    assert.equal(stats.totals.vdiskCount, 2);
    assert.equal(stats.totals.vdisksOpen, 0);
    assert.equal(stats.totals.provisionedBytes, 3 * MiB);
  });

  test('/metrics counts requests by route and status, with a latency histogram', async () => {
    const count = (text: string, route: string, status: number): number => {
      const line = text
        .split('\n')
        .find((l) =>
          l.startsWith(
            `shale_api_http_requests_total{method="GET",route="${route}",status="${status}"}`,
          ),
        );
      return line === undefined ? 0 : Number(line.split(' ').at(-1));
    };
    const first = await api.client.metrics();
    for (let i = 0; i < 3; i++) await api.client.listVpools();
    await api.request('GET', '/api/v1/vpools', { token: null });
    await api.request('GET', '/api/v1/vpools/nope');
    const second = await api.client.metrics();
    assert.equal(count(second, '/api/v1/vpools', 200) - count(first, '/api/v1/vpools', 200), 3);
    assert.equal(count(second, '/api/v1/vpools', 401) - count(first, '/api/v1/vpools', 401), 1);
    assert.equal(
      count(second, '/api/v1/vpools/{name}', 404) - count(first, '/api/v1/vpools/{name}', 404),
      1,
    );
    const lines = second.split('\n');
    for (const line of [
      'shale_api_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/vpools"}',
      'shale_api_operations_finished_total{kind="vdisk.clone",state="succeeded"} 2',
      'shale_api_operations_running 0',
      'shale_api_response_schema_violations_total 0',
    ]) {
      assert.ok(
        lines.some((l) => l.startsWith(line)),
        `no metrics line starting with ${line}`,
      );
    }
    assert.equal(count(second, 'unmatched', 404) >= 1, true, 'unknown paths share one label');
  });

  test('the OpenAPI document lists exactly the route table with its schemas, and every answer received matches it', async () => {
    const response = await api.request('GET', '/openapi.json');
    assert.equal(response.status, 200);
    const doc = response.body as {
      openapi: string;
      paths: Record<string, Record<string, DocOperation>>;
      components: { schemas: Record<string, unknown> };
      'x-shale-error-codes': Record<string, number>;
    };
    assert.equal(validate(OpenApiDocumentSchema, doc), undefined);
    assert.equal(doc.openapi, '3.1.0');

    const documented = Object.entries(doc.paths)
      .flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();
    const tabled = ROUTES.map((r) => `${r.method} ${r.path.template}`).sort();
    assert.deepEqual(tabled, EXPECTED_ROUTES);
    assert.deepEqual(documented, EXPECTED_ROUTES);

    const resolve = (ref: string): unknown => {
      const name = /^#\/components\/schemas\/(\w+)$/.exec(ref)?.[1];
      assert.ok(name !== undefined && name in doc.components.schemas, `dangling ${ref}`);
      return doc.components.schemas[name];
    };
    for (const name of Object.keys(doc.components.schemas))
      parseSchema(doc.components.schemas[name], resolve);

    for (const route of ROUTES) {
      const op = doc.paths[route.path.template]?.[route.method.toLowerCase()];
      assert.ok(op !== undefined);
      const what = `${route.method} ${route.path.template}`;
      assert.deepEqual(op.security, route.auth ? [{ bearer: [] }] : [], what);
      assert.deepEqual(
        op.parameters
          .filter((p) => p.in === 'path')
          .map((p) => p.name)
          .sort(),
        Object.keys(route.params).sort(),
        what,
      );
      assert.equal(op.requestBody !== undefined, route.body !== undefined, what);
      if (route.body !== undefined) {
        const schema = op.requestBody?.content['application/json']?.schema;
        assert.ok(schema !== undefined, what);
        assert.deepEqual(
          parseSchema(schema, resolve),
          route.body,
          `${what}: the body schema is the validator's`,
        );
      }
      const success = op.responses[String(route.status)];
      assert.ok(success !== undefined, what);
      if (route.response === undefined) assert.equal(success.content, undefined, what);
      else {
        const schema = success.content?.[route.contentType]?.schema;
        assert.ok(schema !== undefined, what);
        assert.deepEqual(
          parseSchema(schema, resolve),
          route.response,
          `${what}: the answer schema is the validator's`,
        );
      }
      if (route.auth) assert.ok(op.responses['401'] !== undefined, what);
    }
    assert.equal(doc['x-shale-error-codes'].VD_NO_SPACE, 507);

    // Every answer any test received, against the schema the document states for it.
    const templates = Object.keys(doc.paths).map((template) => ({
      template,
      regexp: new RegExp(`^${template.replace(/\{\w+\}/g, '[^/]+').replace(/\./g, '\\.')}$`),
    }));
    const errorSchema = parseSchema(doc.components.schemas.Error, resolve);
    const covered = new Set<string>();
    const unauthorized = new Set<string>();
    let checked = 0;
    for (const seen of cluster.seen) {
      const what = `${seen.method} ${seen.path} -> ${seen.status}: ${seen.text.slice(0, 200)}`;
      const template = templates.find((t) => t.regexp.test(seen.path))?.template;
      const op =
        template === undefined ? undefined : doc.paths[template]?.[seen.method.toLowerCase()];
      checked++;
      if (op === undefined || template === undefined) {
        // No such route or method: the answer is an error.
        assert.ok(seen.status === 404 || seen.status === 405 || seen.status === 401, what);
        assert.equal(validate(errorSchema, JSON.parse(seen.text)), undefined, what);
        continue;
      }
      const key = `${seen.method} ${template}`;
      if (seen.status >= 200 && seen.status < 300) covered.add(key);
      if (seen.status === 401) unauthorized.add(key);
      const declared = op.responses[String(seen.status)] ?? op.responses.default;
      assert.ok(declared !== undefined, what);
      if (declared.content === undefined) {
        assert.equal(seen.text, '', what);
        continue;
      }
      const [type, media] = Object.entries(declared.content)[0] ?? [];
      assert.ok(
        type !== undefined && media !== undefined && seen.contentType.startsWith(type),
        what,
      );
      const value = type === 'application/json' ? (JSON.parse(seen.text) as unknown) : seen.text;
      const failure = validate(parseSchema(media.schema, resolve), value, 'response');
      assert.equal(failure, undefined, `${what}: ${JSON.stringify(failure)}`);
    }
    assert.ok(checked > 200, `only ${checked} answers were recorded`);
    assert.deepEqual(
      [...covered].sort(),
      EXPECTED_ROUTES,
      'every route answered with success at least once',
    );
    assert.deepEqual(
      [...unauthorized].sort(),
      EXPECTED_ROUTES.filter((r) => r !== 'GET /health'),
      'every authenticated route answered 401 at least once',
    );
    assert.deepEqual(
      cluster.logs.filter((l) => l.includes('response_schema_violation')),
      [],
    );
  });
});

interface DocOperation {
  security: unknown[];
  parameters: { name: string; in: string }[];
  requestBody?: { content: Record<string, { schema: unknown } | undefined> };
  responses: Record<string, { content?: Record<string, { schema: unknown }> } | undefined>;
}
