/**
 * iSCSI targets in the metadata store. One key per target and two claims that keep the
 * rules in one txn (so two creates racing cannot both win):
 *
 *   /shale/iscsi/targets/IQN          the target (secrets sealed, see iscsi-secrets.ts)
 *   /shale/iscsi/vdisks/VDISK         IQN: a vDisk is exported by one target at most
 *   /shale/iscsi/chap-users/USER      IQN: tgt's accounts are global, a user names one secret
 *
 * The process that drives tgtd watches /shale/iscsi/targets/ and follows it.
 */
import type { KvStore } from '@shale/arakoon-kv';
import { ShaleError } from '@shale/common';
import type { SealedSecret, SecretBox } from './iscsi-secrets.js';
import { IscsiErrorCode, type IscsiTargetSpec } from './iscsi-target-spec.js';

const RECORD_VERSION = 1;
export const ISCSI_TARGETS_PREFIX = '/shale/iscsi/targets/';
const VDISKS = '/shale/iscsi/vdisks/';
const CHAP_USERS = '/shale/iscsi/chap-users/';
const LIST_PAGE_KEYS = 1000;

interface SealedAccount {
  readonly user: string;
  readonly secret: SealedSecret;
}

export interface IscsiTargetRecord {
  readonly version: number;
  readonly iqn: string;
  readonly vdisk: string;
  readonly initiators: readonly string[];
  readonly chap?: SealedAccount;
  readonly mutual?: SealedAccount;
  readonly readOnly: boolean;
  readonly createdAtMs: number;
}

/** What the API shows of a target: never a secret. */
export interface IscsiTargetView {
  readonly iqn: string;
  readonly vdisk: string;
  readonly initiators: readonly string[];
  readonly chapUser?: string;
  readonly mutualUser?: string;
  readonly readOnly: boolean;
  readonly createdAtMs: number;
}

export function targetView(record: IscsiTargetRecord): IscsiTargetView {
  return {
    iqn: record.iqn,
    vdisk: record.vdisk,
    initiators: [...record.initiators],
    ...(record.chap === undefined ? {} : { chapUser: record.chap.user }),
    ...(record.mutual === undefined ? {} : { mutualUser: record.mutual.user }),
    readOnly: record.readOnly,
    createdAtMs: record.createdAtMs,
  };
}

const key = (prefix: string, name: string) => Buffer.from(`${prefix}${name}`);
const absent = (k: Buffer) => ({
  key: k,
  target: 'version' as const,
  op: 'equal' as const,
  number: 0,
});
const context = (iqn: string, which: 'chap' | 'mutual') => `${iqn} ${which}`;

export function decodeTargetRecord(what: string, value: Buffer): IscsiTargetRecord {
  let parsed: IscsiTargetRecord;
  try {
    parsed = JSON.parse(value.toString('utf8')) as IscsiTargetRecord;
  } catch (err) {
    throw new ShaleError(IscsiErrorCode.BadRecord, `the record of ${what} is not JSON`, {
      cause: err,
    });
  }
  if (parsed.version !== RECORD_VERSION) {
    throw new ShaleError(
      IscsiErrorCode.BadRecord,
      `the record of ${what} has version ${parsed.version}; this build reads version ${RECORD_VERSION}`,
    );
  }
  return parsed;
}

/** The target with its secrets opened, for the process that configures tgtd. */
export function openTarget(record: IscsiTargetRecord, box: SecretBox): IscsiTargetSpec {
  const open = (which: 'chap' | 'mutual', account: SealedAccount | undefined) =>
    account === undefined
      ? undefined
      : { user: account.user, secret: box.unseal(account.secret, context(record.iqn, which)) };
  const chap = open('chap', record.chap);
  const mutual = open('mutual', record.mutual);
  return {
    vdisk: record.vdisk,
    iqn: record.iqn,
    initiators: record.initiators,
    ...(chap === undefined ? {} : { chap }),
    ...(mutual === undefined ? {} : { mutual }),
    readOnly: record.readOnly,
  };
}

export class IscsiTargetRecords {
  constructor(
    private readonly kv: KvStore,
    private readonly now: () => number = Date.now,
  ) {}

  async get(iqn: string): Promise<IscsiTargetRecord | undefined> {
    const item = await this.kv.get(key(ISCSI_TARGETS_PREFIX, iqn));
    return item === undefined ? undefined : decodeTargetRecord(iqn, item.value);
  }

  async require(iqn: string): Promise<IscsiTargetRecord> {
    const record = await this.get(iqn);
    if (record === undefined) {
      throw new ShaleError(IscsiErrorCode.TargetNotFound, `no iSCSI target ${iqn}`);
    }
    return record;
  }

  /** The IQN of the target exporting `vdisk`, if any. */
  async forVdisk(vdisk: string): Promise<string | undefined> {
    const item = await this.kv.get(key(VDISKS, vdisk));
    return item?.value.toString('utf8');
  }

  /** Every target, by IQN. */
  async list(): Promise<IscsiTargetRecord[]> {
    const out: IscsiTargetRecord[] = [];
    let continuation: Buffer | undefined;
    do {
      const page = await this.kv.range(
        { prefix: Buffer.from(ISCSI_TARGETS_PREFIX) },
        { limit: LIST_PAGE_KEYS, ...(continuation === undefined ? {} : { continuation }) },
      );
      for (const item of page.items) {
        out.push(decodeTargetRecord(item.key.toString('utf8'), item.value));
      }
      continuation = page.continuation;
    } while (continuation !== undefined);
    return out;
  }

  /**
   * Stores a checked target with its claims in one txn: the IQN, the vDisk and the CHAP
   * users must all be free (ISCSI_TARGET_EXISTS, ISCSI_VDISK_TAKEN, ISCSI_CHAP_USER_TAKEN).
   */
  async create(spec: IscsiTargetSpec, box: SecretBox): Promise<IscsiTargetRecord> {
    const seal = (which: 'chap' | 'mutual') => {
      const account = spec[which];
      return account === undefined
        ? undefined
        : { user: account.user, secret: box.seal(account.secret, context(spec.iqn, which)) };
    };
    const chap = seal('chap');
    const mutual = seal('mutual');
    const record: IscsiTargetRecord = {
      version: RECORD_VERSION,
      iqn: spec.iqn,
      vdisk: spec.vdisk,
      initiators: [...spec.initiators],
      ...(chap === undefined ? {} : { chap }),
      ...(mutual === undefined ? {} : { mutual }),
      readOnly: spec.readOnly,
      createdAtMs: this.now(),
    };
    const users = [spec.chap?.user, spec.mutual?.user].filter((u) => u !== undefined);
    const claims = [
      key(ISCSI_TARGETS_PREFIX, spec.iqn),
      key(VDISKS, spec.vdisk),
      ...users.map((u) => key(CHAP_USERS, u)),
    ];
    const result = await this.kv.txn({
      compares: claims.map(absent),
      success: [
        { type: 'put', key: claims[0] as Buffer, value: Buffer.from(JSON.stringify(record)) },
        ...claims
          .slice(1)
          .map((k) => ({ type: 'put' as const, key: k, value: Buffer.from(spec.iqn) })),
      ],
    });
    if (!result.succeeded) throw await this.whyTaken(spec, users);
    return record;
  }

  private async whyTaken(spec: IscsiTargetSpec, users: readonly string[]): Promise<ShaleError> {
    if ((await this.get(spec.iqn)) !== undefined) {
      return new ShaleError(IscsiErrorCode.TargetExists, `iSCSI target ${spec.iqn} exists already`);
    }
    const holder = await this.forVdisk(spec.vdisk);
    if (holder !== undefined) {
      return new ShaleError(
        IscsiErrorCode.VdiskTaken,
        `vDisk ${spec.vdisk} is exported by iSCSI target ${holder} already; one target per vDisk`,
      );
    }
    if (
      spec.chap !== undefined &&
      spec.mutual !== undefined &&
      spec.chap.user === spec.mutual.user
    ) {
      return new ShaleError(
        IscsiErrorCode.ChapUserTaken,
        `the mutual CHAP user must differ from the incoming one (${spec.chap.user}): tgt keeps one secret per user`,
      );
    }
    for (const user of users) {
      const item = await this.kv.get(key(CHAP_USERS, user));
      if (item !== undefined) {
        return new ShaleError(
          IscsiErrorCode.ChapUserTaken,
          `CHAP user ${user} belongs to iSCSI target ${item.value.toString('utf8')}; tgt keeps one secret per user, pick another name`,
        );
      }
    }
    // Taken and released between the txn and these reads: the caller may simply retry.
    return new ShaleError(
      IscsiErrorCode.TargetExists,
      `iSCSI target ${spec.iqn} changed during the create; retry`,
    );
  }

  /** Removes the target and its claims in one txn; ISCSI_TARGET_NOT_FOUND if it is not there. */
  async delete(iqn: string): Promise<IscsiTargetRecord> {
    const targetKey = key(ISCSI_TARGETS_PREFIX, iqn);
    const item = await this.kv.get(targetKey);
    if (item === undefined) {
      throw new ShaleError(IscsiErrorCode.TargetNotFound, `no iSCSI target ${iqn}`);
    }
    const record = decodeTargetRecord(iqn, item.value);
    const users = [record.chap?.user, record.mutual?.user].filter((u) => u !== undefined);
    const result = await this.kv.txn({
      compares: [{ key: targetKey, target: 'modRevision', op: 'equal', number: item.modRevision }],
      success: [
        { type: 'delete', key: targetKey },
        { type: 'delete', key: key(VDISKS, record.vdisk) },
        ...users.map((u) => ({ type: 'delete' as const, key: key(CHAP_USERS, u) })),
      ],
    });
    if (!result.succeeded) {
      throw new ShaleError(
        IscsiErrorCode.TargetNotFound,
        `iSCSI target ${iqn} changed during the delete; retry`,
      );
    }
    return record;
  }
}
