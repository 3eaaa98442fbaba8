// Proves the iSCSI target model's checks on their own, as pure calls: a bad IQN, a CHAP secret of 11 bytes refused and 12 accepted, mutual CHAP without incoming CHAP or with the same secret refused, initiator entries checked and an empty list kept empty (admits nobody), each with its stable ISCSI_* code.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isShaleError } from '@shale/common';
import {
  defaultIqn,
  ISCSI_CHAP_SECRET_MIN_BYTES,
  ISCSI_INITIATORS_MAX,
  IscsiErrorCode,
  type IscsiTargetRequest,
  validateTargetRequest,
} from './iscsi-target-spec.js';

const refused = (request: IscsiTargetRequest, code: string): void => {
  assert.throws(
    () => validateTargetRequest(request),
    (err: unknown) => isShaleError(err, code),
    `${JSON.stringify(request)} should be ${code}`,
  );
};

test('an IQN is checked: the default one of a vDisk passes, malformed, upper-case or bad-month ones are ISCSI_BAD_IQN', () => {
  assert.equal(validateTargetRequest({ vdisk: 'Disk_1' }).iqn, 'iqn.2026-12.io.shale:disk-1');
  assert.equal(defaultIqn('Disk_1'), 'iqn.2026-12.io.shale:disk-1');
  assert.equal(
    validateTargetRequest({ vdisk: 'd', iqn: 'iqn.2001-04.com.example:storage.disk1' }).iqn,
    'iqn.2001-04.com.example:storage.disk1',
  );
  for (const iqn of [
    'disk1',
    'iqn.2001-04',
    'IQN.2001-04.com.example:x',
    'iqn.2001-13.com.example:x',
    'iqn.2001-04.com.example:has space',
    `iqn.2001-04.com.example:${'x'.repeat(224)}`,
  ])
    refused({ vdisk: 'd', iqn }, IscsiErrorCode.BadIqn);
});

test('a CHAP secret of 11 bytes is ISCSI_CHAP_SECRET_SHORT, 12 bytes pass; spaces, long secrets and bad users are refused', () => {
  assert.equal(ISCSI_CHAP_SECRET_MIN_BYTES, 12);
  refused(
    { vdisk: 'd', chap: { user: 'u', secret: 'a'.repeat(11) } },
    IscsiErrorCode.ChapSecretShort,
  );
  const spec = validateTargetRequest({ vdisk: 'd', chap: { user: 'u', secret: 'a'.repeat(12) } });
  assert.deepEqual(spec.chap, { user: 'u', secret: 'a'.repeat(12) });
  refused(
    { vdisk: 'd', chap: { user: 'u', secret: 'a'.repeat(256) } },
    IscsiErrorCode.ChapSecretLong,
  );
  refused(
    { vdisk: 'd', chap: { user: 'u', secret: 'twelve bytes' } },
    IscsiErrorCode.ChapSecretBad,
  );
  refused({ vdisk: 'd', chap: { user: '', secret: 'a'.repeat(12) } }, IscsiErrorCode.BadChapUser);
  refused(
    { vdisk: 'd', chap: { user: 'a b', secret: 'a'.repeat(12) } },
    IscsiErrorCode.BadChapUser,
  );
  // A short mutual secret is refused too.
  refused(
    {
      vdisk: 'd',
      chap: { user: 'u', secret: 'a'.repeat(12) },
      mutual: { user: 'm', secret: 'b'.repeat(11) },
    },
    IscsiErrorCode.ChapSecretShort,
  );
});

test('mutual CHAP needs incoming CHAP and another secret', () => {
  refused(
    { vdisk: 'd', mutual: { user: 'm', secret: 'b'.repeat(12) } },
    IscsiErrorCode.MutualWithoutChap,
  );
  refused(
    {
      vdisk: 'd',
      chap: { user: 'u', secret: 'a'.repeat(12) },
      mutual: { user: 'm', secret: 'a'.repeat(12) },
    },
    IscsiErrorCode.MutualSameSecret,
  );
  const spec = validateTargetRequest({
    vdisk: 'd',
    chap: { user: 'u', secret: 'a'.repeat(12) },
    mutual: { user: 'm', secret: 'b'.repeat(12) },
  });
  assert.equal(spec.mutual?.user, 'm');
});

test('initiators: none given is an empty list (nobody); addresses, networks, ALL and IQNs pass, deduplicated; others are refused', () => {
  assert.deepEqual(validateTargetRequest({ vdisk: 'd' }).initiators, []);
  assert.deepEqual(validateTargetRequest({ vdisk: 'd', initiators: [] }).initiators, []);
  assert.equal(validateTargetRequest({ vdisk: 'd' }).readOnly, false);
  assert.deepEqual(
    validateTargetRequest({
      vdisk: 'd',
      initiators: [
        '127.0.0.1',
        '10.0.0.0/8',
        '::1',
        'ALL',
        'iqn.1993-08.org.debian:01:abc',
        '127.0.0.1',
      ],
    }).initiators,
    ['127.0.0.1', '10.0.0.0/8', '::1', 'ALL', 'iqn.1993-08.org.debian:01:abc'],
  );
  for (const entry of ['host.example', '10.0.0.0/33', '1.2.3.4/8/9', 'iqn.bad', 'all'])
    refused({ vdisk: 'd', initiators: [entry] }, IscsiErrorCode.BadInitiator);
  const many = Array.from(
    { length: ISCSI_INITIATORS_MAX + 1 },
    (_, i) => `10.0.${i >> 8}.${i & 255}`,
  );
  refused({ vdisk: 'd', initiators: many }, IscsiErrorCode.TooManyInitiators);
});
