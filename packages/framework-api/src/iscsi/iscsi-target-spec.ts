/**
 * What an iSCSI target is, and the checks on one before anything is stored: its IQN
 * (RFC 3720 section 3.2.6.3.1), the initiators it admits (addresses, networks, IQNs;
 * none until one is named), and its CHAP accounts (RFC 1994 as iSCSI uses it: incoming,
 * the initiator proves itself; mutual, the target proves itself back).
 */
import net from 'node:net';
import { ShaleError } from '@shale/common';

/** The prefix of a generated target IQN: `iqn.2026-12.io.shale:<vdisk>`. */
export const ISCSI_IQN_PREFIX = 'iqn.2026-12.io.shale';
/** RFC 3720 caps an iSCSI name at 223 bytes. */
export const ISCSI_NAME_MAX_BYTES = 223;
/** Windows' and VMware's initiators refuse CHAP secrets shorter than this, bytes. */
export const ISCSI_CHAP_SECRET_MIN_BYTES = 12;
/** tgt's account password field, bytes (Windows' initiator itself stops at 16). */
export const ISCSI_CHAP_SECRET_MAX_BYTES = 255;
/** A CHAP user name, bytes. */
export const ISCSI_CHAP_USER_MAX_BYTES = 255;
/** Initiator entries per target. */
export const ISCSI_INITIATORS_MAX = 64;
/** The initiator entry that admits every address (tgt's `ALL`). */
export const ISCSI_ANY_ADDRESS = 'ALL';

export const IscsiErrorCode = {
  BadIqn: 'ISCSI_BAD_IQN',
  BadInitiator: 'ISCSI_BAD_INITIATOR',
  TooManyInitiators: 'ISCSI_TOO_MANY_INITIATORS',
  BadChapUser: 'ISCSI_BAD_CHAP_USER',
  ChapSecretShort: 'ISCSI_CHAP_SECRET_SHORT',
  ChapSecretLong: 'ISCSI_CHAP_SECRET_LONG',
  ChapSecretBad: 'ISCSI_CHAP_SECRET_BAD',
  MutualWithoutChap: 'ISCSI_MUTUAL_WITHOUT_CHAP',
  MutualSameSecret: 'ISCSI_MUTUAL_SAME_SECRET',
  TargetExists: 'ISCSI_TARGET_EXISTS',
  VdiskTaken: 'ISCSI_VDISK_TAKEN',
  ChapUserTaken: 'ISCSI_CHAP_USER_TAKEN',
  TargetNotFound: 'ISCSI_TARGET_NOT_FOUND',
  /** A vDisk delete while an iSCSI target exports it: delete the target first. */
  VdiskExported: 'ISCSI_VDISK_EXPORTED',
  BadRecord: 'ISCSI_BAD_RECORD',
} as const;
export type IscsiErrorCode = (typeof IscsiErrorCode)[keyof typeof IscsiErrorCode];

/** One CHAP account: a user and its secret (plain here; sealed in the store). */
export interface ChapAccount {
  readonly user: string;
  readonly secret: string;
}

/** A target as asked for, before checks. */
export interface IscsiTargetRequest {
  readonly vdisk: string;
  readonly iqn?: string;
  readonly initiators?: readonly string[];
  readonly chap?: ChapAccount;
  readonly mutual?: ChapAccount;
  /** The LUN refuses writes (a snapshot's clone, or a disk shared for reading). */
  readonly readOnly?: boolean;
}

/** A target that passed every check. */
export interface IscsiTargetSpec {
  readonly vdisk: string;
  readonly iqn: string;
  readonly initiators: readonly string[];
  readonly chap?: ChapAccount;
  readonly mutual?: ChapAccount;
  readonly readOnly: boolean;
}

const iscsiError = (code: IscsiErrorCode, message: string) => new ShaleError(code, message);

/**
 * RFC 3720: `iqn.` + the year and month a naming authority owned its domain + `.` + that
 * domain reversed + optionally `:` and a unique string. After RFC 3722's stringprep an
 * IQN is lower case; the characters allowed are letters, digits, `-`, `.` and `:`.
 */
const IQN_PATTERN =
  /^iqn\.(\d{4})-(\d{2})\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:-]+)?$/;
/** EUI-64 names (RFC 3720 section 3.2.6.3.2), which some initiators use. */
const EUI_PATTERN = /^eui\.[0-9a-f]{16}$/;

/** Why `name` is not an IQN, or undefined when it is one. */
export function iqnProblem(name: string): string | undefined {
  if (Buffer.byteLength(name) > ISCSI_NAME_MAX_BYTES) {
    return `longer than ${ISCSI_NAME_MAX_BYTES} bytes`;
  }
  if (name !== name.toLowerCase()) return 'not lower case (RFC 3722 folds iSCSI names)';
  const m = IQN_PATTERN.exec(name);
  if (m === null) {
    return 'not of the form iqn.YYYY-MM.reversed.domain[:unique] (letters, digits, - . : only)';
  }
  const month = Number(m[2]);
  if (month < 1 || month > 12) return `month ${m[2]} is not 01..12`;
  return undefined;
}

/** The IQN a target of `vdisk` gets when none is given (lower case, `_` as `-`). */
export function defaultIqn(vdisk: string): string {
  return `${ISCSI_IQN_PREFIX}:${vdisk.toLowerCase().replaceAll('_', '-')}`;
}

function checkIqn(iqn: string): string {
  const problem = iqnProblem(iqn);
  if (problem !== undefined) {
    throw iscsiError(
      IscsiErrorCode.BadIqn,
      `${JSON.stringify(iqn)} is not a valid IQN: ${problem}`,
    );
  }
  return iqn;
}

/** What an initiator entry is: tgt binds addresses with `-I` and names with `-Q`. */
export type InitiatorKind = 'address' | 'name';

export function initiatorKind(entry: string): InitiatorKind {
  return entry.startsWith('iqn.') || entry.startsWith('eui.') ? 'name' : 'address';
}

function checkInitiator(entry: string): string {
  const bad = (why: string) =>
    iscsiError(
      IscsiErrorCode.BadInitiator,
      `initiator ${JSON.stringify(entry)} ${why}; give an IPv4 or IPv6 address, a network (ADDR/PREFIX), ${ISCSI_ANY_ADDRESS}, or an initiator IQN`,
    );
  if (entry === ISCSI_ANY_ADDRESS) return entry;
  if (initiatorKind(entry) === 'name') {
    if (EUI_PATTERN.test(entry)) return entry;
    const problem = iqnProblem(entry);
    if (problem !== undefined) throw bad(`is not a valid IQN (${problem})`);
    return entry;
  }
  const [address, prefix, ...rest] = entry.split('/');
  const family = net.isIP(address ?? '');
  if (family === 0 || rest.length > 0) throw bad('is not an address');
  if (prefix !== undefined) {
    const bits = family === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > bits) {
      throw bad(`has a prefix length that is not 0..${bits}`);
    }
  }
  return entry;
}

function checkAccount(which: 'chap' | 'mutual', account: ChapAccount): ChapAccount {
  const label = which === 'chap' ? 'CHAP' : 'mutual CHAP';
  const userBytes = Buffer.byteLength(account.user);
  if (
    userBytes === 0 ||
    userBytes > ISCSI_CHAP_USER_MAX_BYTES ||
    !/^[\x21-\x7e]+$/.test(account.user)
  ) {
    throw iscsiError(
      IscsiErrorCode.BadChapUser,
      `the ${label} user must be 1..${ISCSI_CHAP_USER_MAX_BYTES} printable ASCII characters without spaces`,
    );
  }
  const secretBytes = Buffer.byteLength(account.secret);
  if (secretBytes < ISCSI_CHAP_SECRET_MIN_BYTES) {
    throw iscsiError(
      IscsiErrorCode.ChapSecretShort,
      `the ${label} secret has ${secretBytes} bytes; at least ${ISCSI_CHAP_SECRET_MIN_BYTES} are needed (Windows and VMware initiators refuse shorter ones)`,
    );
  }
  if (secretBytes > ISCSI_CHAP_SECRET_MAX_BYTES) {
    throw iscsiError(
      IscsiErrorCode.ChapSecretLong,
      `the ${label} secret has ${secretBytes} bytes; at most ${ISCSI_CHAP_SECRET_MAX_BYTES} are allowed`,
    );
  }
  // tgtadm takes the secret on its command line: no spaces or control characters.
  if (!/^[\x21-\x7e]+$/.test(account.secret)) {
    throw iscsiError(
      IscsiErrorCode.ChapSecretBad,
      `the ${label} secret must be printable ASCII without spaces`,
    );
  }
  return { user: account.user, secret: account.secret };
}

/** Checks a request; throws the first problem found (ISCSI_*), changes nothing. */
export function validateTargetRequest(request: IscsiTargetRequest): IscsiTargetSpec {
  const iqn = checkIqn(request.iqn ?? defaultIqn(request.vdisk));
  const initiators = [...new Set((request.initiators ?? []).map(checkInitiator))];
  if (initiators.length > ISCSI_INITIATORS_MAX) {
    throw iscsiError(
      IscsiErrorCode.TooManyInitiators,
      `${initiators.length} initiators; at most ${ISCSI_INITIATORS_MAX} per target`,
    );
  }
  const chap = request.chap === undefined ? undefined : checkAccount('chap', request.chap);
  const mutual = request.mutual === undefined ? undefined : checkAccount('mutual', request.mutual);
  if (mutual !== undefined && chap === undefined) {
    throw iscsiError(
      IscsiErrorCode.MutualWithoutChap,
      'mutual CHAP needs incoming CHAP too: the target proves itself only to an initiator that proved itself',
    );
  }
  if (mutual !== undefined && chap !== undefined && mutual.secret === chap.secret) {
    throw iscsiError(
      IscsiErrorCode.MutualSameSecret,
      'the mutual CHAP secret must differ from the incoming one (RFC 3720 section 8.2.1)',
    );
  }
  return {
    vdisk: request.vdisk,
    iqn,
    initiators,
    ...(chap === undefined ? {} : { chap }),
    ...(mutual === undefined ? {} : { mutual }),
    readOnly: request.readOnly ?? false,
  };
}
