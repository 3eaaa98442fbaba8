/**
 * tgtadm, the only way into a running tgtd: one method per command Shale sends, and what
 * `--op show --mode target` prints, parsed. tgtadm exits 22 for nearly every refusal and
 * says why in one line; that line is mapped to a code by one table (TGT_ERRORS).
 *
 * tgtd listens for tgtadm on /run/tgtd/socket.N for its control port N (`tgtd -C N`), so
 * several tgtd can run on one host; every call here names its control port.
 */
import path from 'node:path';
import { ShaleError } from '@shale/common';
import { findTool, runTool } from '../map/host-tools.js';
import { TGTADM_TIMEOUT_MS } from './constants.js';

export const TgtErrorCode = {
  /** No tgtd answers on this control port. */
  Unavailable: 'TGT_UNAVAILABLE',
  /** The target, LUN, account or binding is already there. */
  Exists: 'TGT_EXISTS',
  /** The target, LUN, account or binding is not there. */
  NotFound: 'TGT_NOT_FOUND',
  /** The target has sessions (delete it with force). */
  Busy: 'TGT_BUSY',
  /** Anything else tgtadm refused, with its words. */
  Failed: 'TGT_FAILED',
  /** tgtadm or tgtd is not installed. */
  Missing: 'TGT_MISSING',
} as const;
export type TgtErrorCode = (typeof TgtErrorCode)[keyof typeof TgtErrorCode];

/** tgtadm's own words (tgtadm_strerror in tgt's usr/tgtadm.c) -> our code. */
const TGT_ERRORS: readonly (readonly [RegExp, TgtErrorCode])[] = [
  [
    /can't (connect|send|receive)|failed to (connect|send|receive)|not connected|No such file or directory|Connection refused/i,
    TgtErrorCode.Unavailable,
  ],
  [/already exists|already has an outgoing account/i, TgtErrorCode.Exists],
  [/can't find|does not exist/i, TgtErrorCode.NotFound],
  [/still active|is busy/i, TgtErrorCode.Busy],
];

export interface TgtLun {
  readonly lun: number;
  readonly type: string;
  readonly backingType: string;
  readonly backingPath: string;
  readonly readOnly: boolean;
  readonly thinProvisioning: boolean;
}

export interface TgtAccountBinding {
  readonly user: string;
  readonly outgoing: boolean;
}

export interface TgtTarget {
  readonly tid: number;
  readonly iqn: string;
  readonly luns: readonly TgtLun[];
  readonly accounts: readonly TgtAccountBinding[];
  /** Bound initiator addresses (`-I`) and names (`-Q`), as tgtd lists them together. */
  readonly acl: readonly string[];
}

/** Parses `tgtadm --op show --mode target`. */
export function parseTargets(text: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let current:
    | { tid: number; iqn: string; luns: TgtLun[]; accounts: TgtAccountBinding[]; acl: string[] }
    | undefined;
  let section = '';
  let lun: Record<string, string> | undefined;
  const flushLun = () => {
    if (current !== undefined && lun !== undefined) {
      current.luns.push({
        lun: Number(lun.LUN),
        type: lun.Type ?? '',
        backingType: lun['Backing store type'] ?? '',
        backingPath: lun['Backing store path'] ?? '',
        readOnly: lun.Readonly === 'Yes',
        thinProvisioning: lun['Thin-provisioning'] === 'Yes',
      });
    }
    lun = undefined;
  };
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    const target = /^Target (\d+): (\S+)$/.exec(line);
    if (target !== null) {
      flushLun();
      current = {
        tid: Number(target[1]),
        iqn: target[2] as string,
        luns: [],
        accounts: [],
        acl: [],
      };
      targets.push(current);
      section = '';
      continue;
    }
    if (current === undefined) continue;
    const header = /^ {4}(\S.*):$/.exec(line);
    if (header !== null) {
      flushLun();
      section = header[1] as string;
      continue;
    }
    const value = line.trim();
    if (value === '') continue;
    if (section === 'LUN information') {
      const field = /^([^:]+): ?(.*)$/.exec(value);
      if (field === null) continue;
      if (field[1] === 'LUN') {
        flushLun();
        lun = {};
      }
      if (lun !== undefined) lun[field[1] as string] = field[2] as string;
      // "Size: 67 MB, Block size: 512" is one line: the fields that matter are on their own.
    } else if (section === 'Account information') {
      const outgoing = value.endsWith(' (outgoing)');
      current.accounts.push({
        user: outgoing ? value.slice(0, -' (outgoing)'.length) : value,
        outgoing,
      });
    } else if (section === 'ACL information') {
      current.acl.push(value);
    }
  }
  flushLun();
  return targets;
}

/** The names under "Backing stores:" in `tgtadm --op show --mode system`. */
export function parseBackingStores(text: string): string[] {
  const stores: string[] = [];
  let inside = false;
  for (const line of text.split('\n')) {
    if (/^\S/.test(line)) {
      inside = line.startsWith('Backing stores:');
      continue;
    }
    if (inside && line.trim() !== '') stores.push(line.trim().split(/\s+/)[0] as string);
  }
  return stores;
}

/** The portals of `tgtadm --lld iscsi --op show --mode portal` ("Portal: 127.0.0.1:3260,1"). */
export function parsePortals(text: string): string[] {
  return [...text.matchAll(/^Portal: (\S+),\d+$/gm)].map((m) => m[1] as string);
}

export interface LunOptions {
  readonly bstype: string;
  readonly backing: string;
  readonly readOnly: boolean;
  /** UNMAP and WRITE SAME with unmap reach the backing store only with this set. */
  readonly thinProvisioning: boolean;
}

export class TgtAdmin {
  private constructor(
    private readonly tgtadm: string,
    readonly control: number,
  ) {}

  /** TGT_MISSING (naming the Debian package) unless tgtadm is installed. */
  static open(control: number): TgtAdmin {
    const tgtadm = findTool('tgtadm');
    if (tgtadm === undefined) {
      throw new ShaleError(TgtErrorCode.Missing, 'tgtadm is not installed: apt-get install -y tgt');
    }
    return new TgtAdmin(tgtadm, control);
  }

  /** Runs tgtadm for the iSCSI driver of this control port; its stdout, or the mapped error. */
  async run(args: readonly string[]): Promise<string> {
    const full = ['-C', String(this.control), '--lld', 'iscsi', ...args];
    const result = await runTool(this.tgtadm, full, TGTADM_TIMEOUT_MS);
    if (result.code === 0) return result.stdout;
    const said = (result.stderr.trim() || result.stdout.trim()).replace(/^tgtadm: /, '');
    const code =
      result.code === null
        ? TgtErrorCode.Unavailable
        : (TGT_ERRORS.find(([pattern]) => pattern.test(said))?.[1] ?? TgtErrorCode.Failed);
    // Secrets travel on tgtadm's command line: never repeat the arguments of an account call.
    const shown = args.includes('--password')
      ? `${args.slice(0, 4).join(' ')} ...`
      : args.join(' ');
    throw new ShaleError(
      code,
      `${path.basename(this.tgtadm)} -C ${this.control} ${shown}: ${result.code === null ? `no answer within ${TGTADM_TIMEOUT_MS} ms` : said}`,
      { details: { control: String(this.control) } },
    );
  }

  async alive(): Promise<boolean> {
    try {
      await this.run(['--op', 'show', '--mode', 'system']);
      return true;
    } catch (err) {
      if (err instanceof ShaleError && err.code === TgtErrorCode.Unavailable) return false;
      throw err;
    }
  }

  async backingStores(): Promise<string[]> {
    return parseBackingStores(await this.run(['--op', 'show', '--mode', 'system']));
  }

  async portals(): Promise<string[]> {
    return parsePortals(await this.run(['--op', 'show', '--mode', 'portal']));
  }

  async targets(): Promise<TgtTarget[]> {
    return parseTargets(await this.run(['--op', 'show', '--mode', 'target']));
  }

  /** Every account tgtd knows (accounts are global; targets bind them). */
  async accounts(): Promise<string[]> {
    const text = await this.run(['--op', 'show', '--mode', 'account']);
    return text
      .split('\n')
      .filter((line) => /^\s+\S/.test(line))
      .map((line) => line.trim());
  }

  async newTarget(tid: number, iqn: string): Promise<void> {
    await this.run(['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn]);
  }

  /** Removes a target; with force even while initiators are logged in (they are dropped). */
  async deleteTarget(tid: number, force: boolean): Promise<void> {
    await this.run([
      '--op',
      'delete',
      '--mode',
      'target',
      '--tid',
      String(tid),
      ...(force ? ['--force'] : []),
    ]);
  }

  async newLun(tid: number, lun: number, options: LunOptions): Promise<void> {
    await this.run([
      '--op',
      'new',
      '--mode',
      'logicalunit',
      '--tid',
      String(tid),
      '--lun',
      String(lun),
      '--bstype',
      options.bstype,
      '-b',
      options.backing,
    ]);
    // tgtadm takes parameters only on update, not on new.
    await this.run([
      '--op',
      'update',
      '--mode',
      'logicalunit',
      '--tid',
      String(tid),
      '--lun',
      String(lun),
      '--params',
      `readonly=${options.readOnly ? 1 : 0},thin_provisioning=${options.thinProvisioning ? 1 : 0}`,
    ]);
  }

  async bindInitiator(tid: number, kind: 'address' | 'name', entry: string): Promise<void> {
    await this.run([
      '--op',
      'bind',
      '--mode',
      'target',
      '--tid',
      String(tid),
      kind === 'address' ? '-I' : '-Q',
      entry,
    ]);
  }

  async unbindInitiator(tid: number, kind: 'address' | 'name', entry: string): Promise<void> {
    await this.run([
      '--op',
      'unbind',
      '--mode',
      'target',
      '--tid',
      String(tid),
      kind === 'address' ? '-I' : '-Q',
      entry,
    ]);
  }

  /** A global account; the secret is on tgtadm's command line for the call (README: limitations). */
  async newAccount(user: string, secret: string): Promise<void> {
    await this.run(['--op', 'new', '--mode', 'account', '--user', user, '--password', secret]);
  }

  async deleteAccount(user: string): Promise<void> {
    await this.run(['--op', 'delete', '--mode', 'account', '--user', user]);
  }

  async bindAccount(tid: number, user: string, outgoing: boolean): Promise<void> {
    await this.run([
      '--op',
      'bind',
      '--mode',
      'account',
      '--tid',
      String(tid),
      '--user',
      user,
      ...(outgoing ? ['--outgoing'] : []),
    ]);
  }

  async unbindAccount(tid: number, user: string, outgoing: boolean): Promise<void> {
    await this.run([
      '--op',
      'unbind',
      '--mode',
      'account',
      '--tid',
      String(tid),
      '--user',
      user,
      ...(outgoing ? ['--outgoing'] : []),
    ]);
  }

  /** Asks tgtd to exit (it ignores SIGTERM); refused while targets exist. */
  async deleteSystem(): Promise<void> {
    await this.run(['--op', 'delete', '--mode', 'system']);
  }
}
