/**
 * Keeps tgtd's targets in line with the iSCSI target records of the metadata store: on
 * start, on every change of a record (a watch), and every RECONCILE_INTERVAL_MS (tgtd
 * restarted, an nbdfuse died, a target removed by hand).
 *
 * One pass:
 *   records (secrets opened) vs tgtd's targets
 *   - a target of ours without a record      -> deleted (--force) with its accounts
 *   - a record whose target differs or broke -> deleted, made again
 *   - a record without a target              -> made: LUN, accounts, then the initiators
 *     (a target admits nobody before its CHAP accounts are in place)
 *   - a target that matches                  -> kept, sessions untouched; the first pass of
 *     a process sets its accounts again (tgtd never shows a secret), with the initiators
 *     unbound meanwhile so that no login slips in without CHAP
 * "Ours": the IQN has a record or Shale's prefix, or a LUN is backed by Shale. Targets of
 * an adopted tgtd that are none of these are never touched.
 */
import { createHash } from 'node:crypto';
import type { KvStore, Watcher } from '@shale/arakoon-kv';
import {
  ISCSI_IQN_PREFIX,
  ISCSI_TARGETS_PREFIX,
  type IscsiTargetRecords,
  type IscsiTargetSpec,
  initiatorKind,
  openTarget,
  type SecretBox,
} from '@shale/framework-api';
import { ISCSI_DATA_LUN, RECONCILE_INTERVAL_MS } from './constants.js';
import type { LunBacking } from './lun-backing.js';
import { type TgtAdmin, TgtErrorCode, type TgtTarget } from './tgt-admin.js';

export interface ReconcileSummary {
  readonly kept: number;
  readonly made: number;
  readonly removed: number;
  /** One sentence per target that could not be made this pass (retried next pass). */
  readonly failures: readonly string[];
}

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

function accountsHash(spec: IscsiTargetSpec): string {
  return createHash('sha256')
    .update(JSON.stringify([spec.chap ?? null, spec.mutual ?? null]))
    .digest('hex');
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

export interface ReconcilerOptions {
  readonly admin: TgtAdmin;
  readonly records: IscsiTargetRecords;
  readonly box: SecretBox;
  readonly backing: LunBacking;
  /** LUNs are thin provisioned: UNMAP and WRITE SAME with unmap reach the vDisk. */
  readonly thinProvisioning: boolean;
  readonly log: (line: string) => void;
}

export class IscsiReconciler {
  /** IQN -> hash of the accounts this process set on its target. */
  private readonly accountsSet = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private watcher: Watcher | undefined;
  private lastFailures = '';

  constructor(private readonly options: ReconcilerOptions) {}

  /** Reconciles now and then on every change and every interval, until stop(). */
  async start(kv: KvStore): Promise<ReconcileSummary> {
    const first = await this.reconcile();
    this.watcher = kv.watch({ prefix: Buffer.from(ISCSI_TARGETS_PREFIX) }, () => {
      void this.reconcile().catch((err) => this.options.log(`reconcile: ${errorText(err)}`));
    });
    void this.watcher.done.catch((err) =>
      this.options.log(`the watch of iSCSI targets ended: ${errorText(err)}`),
    );
    await this.watcher.ready;
    this.timer = setInterval(() => {
      void this.reconcile().catch((err) => this.options.log(`reconcile: ${errorText(err)}`));
    }, RECONCILE_INTERVAL_MS);
    return first;
  }

  /** One pass, after any pass already running. */
  reconcile(): Promise<ReconcileSummary> {
    const pass = this.queue.then(() => this.pass());
    this.queue = pass.catch(() => undefined);
    return pass;
  }

  /** Stops watching, then deletes every target of ours and ends their backings. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.watcher?.close().catch(() => undefined);
    await this.queue;
    const { admin, backing } = this.options;
    for (const target of await admin.targets().catch(() => [])) {
      if (this.isOurs(target, new Set()))
        await this.remove(target).catch((err) => this.options.log(`stop: ${errorText(err)}`));
    }
    await backing.releaseAll();
  }

  private isOurs(target: TgtTarget, recorded: ReadonlySet<string>): boolean {
    return (
      recorded.has(target.iqn) ||
      target.iqn.startsWith(`${ISCSI_IQN_PREFIX}:`) ||
      target.luns.some((lun) => this.options.backing.isOurs(lun))
    );
  }

  private async pass(): Promise<ReconcileSummary> {
    const { admin, records, box, log } = this.options;
    const failures: string[] = [];
    const wanted = new Map<string, IscsiTargetSpec>();
    const unreadable = new Set<string>();
    for (const record of await records.list()) {
      try {
        wanted.set(record.iqn, openTarget(record, box));
      } catch (err) {
        unreadable.add(record.iqn);
        failures.push(
          `${record.iqn}: its record cannot be opened (${errorText(err)}); the key file is not the one the API sealed with?`,
        );
      }
    }
    let kept = 0;
    let made = 0;
    let removed = 0;
    const present = await admin.targets();
    const recorded = new Set([...wanted.keys(), ...unreadable]);
    for (const target of present) {
      if (!this.isOurs(target, recorded)) continue;
      const spec = wanted.get(target.iqn);
      if (spec !== undefined && this.matches(target, spec)) {
        if (this.accountsSet.get(spec.iqn) !== accountsHash(spec)) {
          await this.refreshAccounts(target, spec).catch((err) =>
            failures.push(`${spec.iqn}: accounts: ${errorText(err)}`),
          );
        }
        kept++;
        wanted.delete(target.iqn);
        continue;
      }
      if (unreadable.has(target.iqn)) continue; // its record cannot be opened: left as it is
      try {
        await this.remove(target);
        if (spec === undefined) {
          removed++;
          log(`removed target ${target.iqn} (tid ${target.tid}): no record`);
        } else {
          log(
            `target ${target.iqn} (tid ${target.tid}) differs from its record or broke: made again`,
          );
        }
      } catch (err) {
        failures.push(`${target.iqn}: cannot remove tid ${target.tid}: ${errorText(err)}`);
        wanted.delete(target.iqn);
      }
    }
    const used = new Set((await admin.targets()).map((t) => t.tid));
    for (const spec of wanted.values()) {
      let tid = 1;
      while (used.has(tid)) tid++;
      try {
        await this.make(tid, spec);
        used.add(tid);
        made++;
        log(
          `target ${spec.iqn} (tid ${tid}) serves vDisk ${spec.vdisk}${spec.readOnly ? ' read-only' : ''}`,
        );
      } catch (err) {
        failures.push(`${spec.iqn}: ${errorText(err)}`);
      }
    }
    const text = failures.join('; ');
    if (text !== '' && text !== this.lastFailures) log(`reconcile: ${text}`);
    this.lastFailures = text;
    return { kept, made, removed, failures };
  }

  private matches(target: TgtTarget, spec: IscsiTargetSpec): boolean {
    const lun = target.luns.find((l) => l.lun === ISCSI_DATA_LUN);
    const source = this.options.backing.expected(spec);
    if (lun === undefined || source === undefined) return false;
    if (lun.backingType !== source.bstype || lun.backingPath !== source.path) return false;
    if (lun.readOnly !== spec.readOnly || lun.thinProvisioning !== this.options.thinProvisioning) {
      return false;
    }
    if (!sameSet(target.acl, spec.initiators)) return false;
    const accounts = target.accounts.map((a) => `${a.outgoing ? 'out' : 'in'} ${a.user}`);
    const wantedAccounts = [
      ...(spec.chap === undefined ? [] : [`in ${spec.chap.user}`]),
      ...(spec.mutual === undefined ? [] : [`out ${spec.mutual.user}`]),
    ];
    if (!sameSet(accounts, wantedAccounts)) return false;
    // Accounts this process set, with other secrets: the record was replaced.
    const set = this.accountsSet.get(spec.iqn);
    return set === undefined || set === accountsHash(spec);
  }

  private async make(tid: number, spec: IscsiTargetSpec): Promise<void> {
    const { admin, backing } = this.options;
    const source = await backing.acquire(spec);
    try {
      await admin.newTarget(tid, spec.iqn);
      await admin.newLun(tid, ISCSI_DATA_LUN, {
        bstype: source.bstype,
        backing: source.path,
        readOnly: spec.readOnly,
        thinProvisioning: this.options.thinProvisioning,
      });
      await this.setAccounts(tid, spec);
      for (const entry of spec.initiators)
        await admin.bindInitiator(tid, initiatorKind(entry), entry);
    } catch (err) {
      await admin.deleteTarget(tid, true).catch(() => undefined);
      await backing.release(spec.iqn);
      throw err;
    }
  }

  private async setAccounts(tid: number, spec: IscsiTargetSpec): Promise<void> {
    const { admin } = this.options;
    for (const [account, outgoing] of [
      [spec.chap, false],
      [spec.mutual, true],
    ] as const) {
      if (account === undefined) continue;
      await admin.unbindAccount(tid, account.user, outgoing).catch(ignoreNotFound);
      await admin.deleteAccount(account.user).catch(ignoreNotFound);
      await admin.newAccount(account.user, account.secret);
      await admin.bindAccount(tid, account.user, outgoing);
    }
    this.accountsSet.set(spec.iqn, accountsHash(spec));
  }

  /** Sets the accounts again with the initiators unbound meanwhile (no login without CHAP). */
  private async refreshAccounts(target: TgtTarget, spec: IscsiTargetSpec): Promise<void> {
    const { admin } = this.options;
    if (spec.chap === undefined && spec.mutual === undefined) {
      this.accountsSet.set(spec.iqn, accountsHash(spec));
      return;
    }
    for (const entry of target.acl)
      await admin.unbindInitiator(target.tid, initiatorKind(entry), entry);
    try {
      await this.setAccounts(target.tid, spec);
    } finally {
      for (const entry of spec.initiators) {
        await admin.bindInitiator(target.tid, initiatorKind(entry), entry).catch(ignoreExists);
      }
    }
  }

  private async remove(target: TgtTarget): Promise<void> {
    const { admin, backing } = this.options;
    await admin.deleteTarget(target.tid, true);
    const stillBound = new Set(
      (await admin.targets()).flatMap((t) => t.accounts.map((a) => a.user)),
    );
    for (const account of target.accounts) {
      if (!stillBound.has(account.user))
        await admin.deleteAccount(account.user).catch(ignoreNotFound);
    }
    this.accountsSet.delete(target.iqn);
    await backing.release(target.iqn);
  }
}

function ignoreNotFound(err: unknown): void {
  if ((err as { code?: unknown }).code !== TgtErrorCode.NotFound) throw err;
}

function ignoreExists(err: unknown): void {
  if ((err as { code?: unknown }).code !== TgtErrorCode.Exists) throw err;
}
