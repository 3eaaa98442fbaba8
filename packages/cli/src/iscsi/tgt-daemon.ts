/**
 * The tgtd that `shale iscsi serve` drives: one it starts (`tgtd -f -C N --iscsi
 * portal=HOST:PORT`, its pid in STATE/tgtd.pid) or one it adopts (`--tgt-control N`).
 *
 *   start: port free? -> spawn -> answers tgtadm? -> portals exactly [ours]? -> serving
 *          (a tgtd whose portal cannot be bound falls back to 0.0.0.0:3260 and [::]:3260:
 *           that is refused and the tgtd stopped, never left listening everywhere)
 *   a tgtd of ours left by a killed serve (its pid file names it): taken over
 *   stop:  our targets deleted (by the reconciler) -> `--op delete --mode system` (tgtd
 *          ignores SIGTERM) -> SIGKILL after TGTD_EXIT_TIMEOUT_MS. An adopted tgtd keeps running.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShaleError } from '@shale/common';
import { findTool } from '../map/host-tools.js';
import { ISCSI_POLL_MS, TGTD_EXIT_TIMEOUT_MS, TGTD_READY_TIMEOUT_MS } from './constants.js';
import { TgtAdmin, TgtErrorCode } from './tgt-admin.js';

export interface Portal {
  readonly host: string;
  readonly port: number;
}

/** "HOST:PORT" or "[V6]:PORT"; ISCSI_BAD_PORTAL otherwise. */
export function parsePortal(text: string): Portal {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (match === null || host === undefined || net.isIP(host) === 0 || port < 1 || port > 65535) {
    throw new ShaleError(
      'ISCSI_BAD_PORTAL',
      `the portal must be ADDRESS:PORT (an IP address), not ${JSON.stringify(text)}`,
    );
  }
  return { host, port };
}

export function portalText(portal: Portal): string {
  return net.isIPv6(portal.host)
    ? `[${portal.host}]:${portal.port}`
    : `${portal.host}:${portal.port}`;
}

/** Whether nothing listens on the portal's address and port yet. */
export async function portFree(portal: Portal): Promise<boolean> {
  return await new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: portal.host, port: portal.port, exclusive: true }, () => {
      server.close(() => resolve(true));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether `pid` is a tgtd with control port `control` (read from /proc). */
function isOurTgtd(pid: number, control: number): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return path.basename(argv[0] ?? '') === 'tgtd' && argv.join(' ').includes(`-C ${control}`);
  } catch {
    return false;
  }
}

export interface TgtDaemonOptions {
  readonly control: number;
  readonly portal: Portal;
  readonly stateDir: string;
  readonly log: (line: string) => void;
}

export class TgtDaemon {
  private child: ChildProcess | undefined;

  private constructor(
    readonly admin: TgtAdmin,
    /** This serve started the tgtd (or took over the one a killed serve started). */
    readonly owned: boolean,
    private readonly pid: number | undefined,
    private readonly pidFile: string | undefined,
    private readonly log: (line: string) => void,
  ) {}

  /** Adopts a running tgtd (`--tgt-control N`): TGT_UNAVAILABLE unless it answers. */
  static async adopt(control: number, log: (line: string) => void): Promise<TgtDaemon> {
    const admin = TgtAdmin.open(control);
    if (!(await admin.alive())) {
      throw new ShaleError(
        TgtErrorCode.Unavailable,
        `no tgtd answers on control port ${control} (/run/tgtd/socket.${control}); start it, or leave out --tgt-control and shale starts one`,
      );
    }
    log(`adopted tgtd on control port ${control}, portals ${(await admin.portals()).join(', ')}`);
    return new TgtDaemon(admin, false, undefined, undefined, log);
  }

  /** Starts tgtd on the portal (or takes over the one a killed serve left running). */
  static async start(options: TgtDaemonOptions): Promise<TgtDaemon> {
    const admin = TgtAdmin.open(options.control);
    const tgtd = findTool('tgtd');
    if (tgtd === undefined)
      throw new ShaleError(TgtErrorCode.Missing, 'tgtd is not installed: apt-get install -y tgt');
    await fsp.mkdir(options.stateDir, { recursive: true });
    const pidFile = path.join(options.stateDir, 'tgtd.pid');
    const wanted = portalText(options.portal);
    if (await admin.alive()) {
      const left = Number((await fsp.readFile(pidFile, 'utf8').catch(() => '')).trim());
      const portals = await admin.portals();
      if (
        left > 0 &&
        isOurTgtd(left, options.control) &&
        portals.length === 1 &&
        portals[0] === wanted
      ) {
        options.log(`took over tgtd pid ${left} (left by an earlier serve) on ${wanted}`);
        return new TgtDaemon(admin, true, left, pidFile, options.log);
      }
      throw new ShaleError(
        'ISCSI_TGT_RUNNING',
        `a tgtd not started by shale already answers on control port ${options.control} (portals ${portals.join(', ')}): adopt it with --tgt-control ${options.control}, or give another --portal`,
      );
    }
    if (!(await portFree(options.portal))) {
      throw new ShaleError(
        'ISCSI_PORTAL_IN_USE',
        `${wanted} is in use: another iSCSI target (systemctl status tgt) or program listens there; give another --portal`,
      );
    }
    const child = spawn(
      tgtd,
      ['-f', '-C', String(options.control), '--iscsi', `portal=${wanted}`],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-4096);
    });
    const exited = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ?? `exit ${code}`));
      child.once('error', (err) => resolve(err.message));
    });
    let exitedWith: string | undefined;
    void exited.then((why) => {
      exitedWith = why;
    });
    const daemon = new TgtDaemon(admin, true, child.pid, pidFile, options.log);
    daemon.child = child;
    const deadline = Date.now() + TGTD_READY_TIMEOUT_MS;
    while (!(await admin.alive())) {
      if (exitedWith !== undefined)
        throw new ShaleError('ISCSI_TGT_FAILED', `tgtd stopped (${exitedWith}): ${stderr.trim()}`);
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new ShaleError(
          'ISCSI_TGT_FAILED',
          `tgtd did not answer within ${TGTD_READY_TIMEOUT_MS} ms: ${stderr.trim()}`,
        );
      }
      await sleep(ISCSI_POLL_MS);
    }
    const portals = await admin.portals();
    if (portals.length !== 1 || portals[0] !== wanted) {
      await daemon.stop();
      throw new ShaleError(
        'ISCSI_PORTAL_IN_USE',
        `tgtd could not listen on ${wanted} (it listed ${portals.join(', ')}): ${stderr.trim()}`,
      );
    }
    await fsp.writeFile(pidFile, `${child.pid}\n`);
    options.log(`tgtd pid ${child.pid} on ${wanted}, control port ${options.control}`);
    return daemon;
  }

  /** Whether tgtd still answers (a tgtd that died is restarted by the supervisor of serve). */
  async answering(): Promise<boolean> {
    return await this.admin.alive();
  }

  /** Ends an owned tgtd (targets must be gone); an adopted one keeps running. */
  async stop(): Promise<void> {
    if (!this.owned || this.pid === undefined) return;
    try {
      await this.admin.deleteSystem();
    } catch (err) {
      this.log(`tgtd: delete system: ${err instanceof Error ? err.message : String(err)}`);
    }
    const deadline = Date.now() + TGTD_EXIT_TIMEOUT_MS;
    while (alive(this.pid) && !this.reaped() && Date.now() < deadline) await sleep(ISCSI_POLL_MS);
    if (alive(this.pid) && !this.reaped()) {
      this.log(`tgtd pid ${this.pid} did not exit within ${TGTD_EXIT_TIMEOUT_MS} ms: SIGKILL`);
      process.kill(this.pid, 'SIGKILL');
    }
    if (this.pidFile !== undefined) await fsp.rm(this.pidFile, { force: true });
  }

  private reaped(): boolean {
    return (
      this.child !== undefined && (this.child.exitCode !== null || this.child.signalCode !== null)
    );
  }
}
