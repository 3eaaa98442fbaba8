// Proves preset validation: the defaults are valid, JSON round-trips, and every bad field is refused with PROXY_BAD_PRESET naming that field.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { throwsWith } from '@shale/testing';
import {
  DEFAULT_PRESET_MULTI_NODE,
  DEFAULT_PRESET_SINGLE_NODE,
  parsePreset,
  presetToJson,
} from './preset.js';

const good = {
  name: 'p',
  policies: [[4, 2, 5, 2]],
  fragmentSizeMaxBytes: 4 * 1024 * 1024,
  compression: 'lz4',
  encryption: 'aes-256-gcm',
  checksum: 'crc32c',
};

function badField(patch: Record<string, unknown>, field: string): void {
  const err = throwsWith(() => parsePreset({ ...good, ...patch }), 'PROXY_BAD_PRESET');
  assert.equal(err.details.field, field, err.message);
  assert.ok(err.message.includes(field), `message names ${field}: ${err.message}`);
}

describe('presets', () => {
  test('the defaults are valid and JSON round-trips', () => {
    for (const preset of [DEFAULT_PRESET_SINGLE_NODE, DEFAULT_PRESET_MULTI_NODE]) {
      assert.deepEqual(parsePreset(JSON.parse(JSON.stringify(presetToJson(preset)))), preset);
    }
    assert.deepEqual(parsePreset(good).policies, [{ k: 4, m: 2, c: 5, x: 2 }]);
  });

  test('the multi-node default survives a node: x <= m in every policy', () => {
    for (const p of DEFAULT_PRESET_MULTI_NODE.policies) assert.ok(p.x <= p.m);
  });

  test('each bad field is named', () => {
    badField({ name: '' }, 'name');
    badField({ policies: [] }, 'policies');
    badField({ policies: 'x' }, 'policies');
    badField({ policies: [[4, 2, 5]] }, 'policies[0]');
    badField({ policies: [[0, 2, 2, 1]] }, 'policies[0].k');
    badField({ policies: [[25, 2, 25, 1]] }, 'policies[0].k');
    badField({ policies: [[4, -1, 4, 1]] }, 'policies[0].m');
    badField({ policies: [[4, 7, 4, 1]] }, 'policies[0].m');
    badField(
      {
        policies: [
          [4, 2, 5, 2],
          [4, 2, 3, 2],
        ],
      },
      'policies[1].c',
    );
    badField({ policies: [[4, 2, 7, 2]] }, 'policies[0].c');
    badField({ policies: [[4, 2, 5, 0]] }, 'policies[0].x');
    badField({ policies: [[4.5, 2, 5, 1]] }, 'policies[0].k');
    badField({ fragmentSizeMaxBytes: 1000 }, 'fragmentSizeMaxBytes');
    badField({ fragmentSizeMaxBytes: 32 * 1024 }, 'fragmentSizeMaxBytes');
    badField({ fragmentSizeMaxBytes: 128 * 1024 * 1024 }, 'fragmentSizeMaxBytes');
    badField({ fragmentSizeMaxBytes: '4MiB' }, 'fragmentSizeMaxBytes');
    badField({ compression: 'gzip' }, 'compression');
    badField({ encryption: 'aes-128-cbc' }, 'encryption');
    badField({ checksum: 'md5' }, 'checksum');
    badField({ fragmentSizeMax: 4 }, 'fragmentSizeMax');
  });

  test('64 MiB fragments are allowed plain, refused with a block table (over the ASD value limit)', () => {
    const max = 64 * 1024 * 1024;
    parsePreset({ ...good, compression: 'none', encryption: 'none', fragmentSizeMaxBytes: max });
    badField({ fragmentSizeMaxBytes: max }, 'fragmentSizeMaxBytes');
    parsePreset({ ...good, fragmentSizeMaxBytes: max - 64 * 1024 });
  });

  test('m = 0 (no parity) is a valid policy with c = k', () => {
    assert.deepEqual(parsePreset({ ...good, policies: [[3, 0, 3, 3]] }).policies[0], {
      k: 3,
      m: 0,
      c: 3,
      x: 3,
    });
  });
});
