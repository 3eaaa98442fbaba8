import { readFileSync } from 'node:fs';
import os from 'node:os';
import { round } from './latency-recorder.js';

/**
 * CPU accounting around one case, from /proc: where Shale's time goes (CPU per operation
 * in the client and in the ASD), and how busy the shared host was with everything else.
 * On a noisy 2-core machine the second number says how much to trust the first.
 */

/** Linux reports /proc times in clock ticks; USER_HZ is 100 on every mainstream kernel. */
const TICK_US = 10_000;

export interface CpuUsage {
  /** Busy share of all cores over the case, every process included. */
  readonly hostBusyCpuPercent: number | null;
  /** Busy share of all cores not spent by the measured processes: the noise. */
  readonly otherCpuPercent: number | null;
  /** CPU of the measured processes per operation, user and kernel (I/O syscalls count). */
  readonly cpuUsPerOp: number | null;
  /** Shale only: the benchmark process (the client side) and the ASD process. */
  readonly clientCpuUsPerOp: number | null;
  readonly asdCpuUsPerOp: number | null;
}

interface Snapshot {
  readonly atNs: bigint;
  readonly host: { busyTicks: number; totalTicks: number } | undefined;
  readonly clientUs: number;
  readonly asdTicks: number | undefined;
}

function hostTicks(): { busyTicks: number; totalTicks: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const fields = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest times are inside user).
    const total = fields.slice(0, 8).reduce((sum, value) => sum + value, 0);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
    return { busyTicks: total - idle, totalTicks: total };
  } catch {
    return undefined;
  }
}

function processTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

export class CpuMeter {
  private start: Snapshot | undefined;

  constructor(private readonly asdPid: number | undefined) {}

  private snapshot(): Snapshot {
    const usage = process.cpuUsage();
    return {
      atNs: process.hrtime.bigint(),
      host: hostTicks(),
      clientUs: usage.user + usage.system,
      asdTicks: this.asdPid === undefined ? undefined : processTicks(this.asdPid),
    };
  }

  begin(): void {
    this.start = this.snapshot();
  }

  /**
   * `ops`: operations done since begin(). With an ASD pid, the client (this process) and
   * the ASD are the measured processes; without one, `childUs` is (fio's CPU, reaped).
   */
  end(ops: number, childUs?: number): CpuUsage {
    const start = this.start;
    const end = this.snapshot();
    if (start === undefined) throw new Error('CpuMeter.end() without begin()');
    const wallUs = Number(end.atNs - start.atNs) / 1000;
    const cores = os.cpus().length;
    const hostBusy =
      start.host === undefined || end.host === undefined
        ? undefined
        : (end.host.busyTicks - start.host.busyTicks) /
          Math.max(1, end.host.totalTicks - start.host.totalTicks);
    const clientUs = end.clientUs - start.clientUs;
    const asdUs =
      start.asdTicks === undefined || end.asdTicks === undefined
        ? undefined
        : (end.asdTicks - start.asdTicks) * TICK_US;
    const ownUs =
      this.asdPid === undefined ? childUs : asdUs === undefined ? undefined : clientUs + asdUs;
    const perOp = (us: number | undefined): number | null =>
      us === undefined || ops === 0 ? null : round(us / ops, 1);
    return {
      hostBusyCpuPercent: hostBusy === undefined ? null : round(hostBusy * 100, 1),
      otherCpuPercent:
        hostBusy === undefined || ownUs === undefined
          ? null
          : round(Math.max(0, hostBusy - ownUs / (wallUs * cores)) * 100, 1),
      cpuUsPerOp: perOp(ownUs),
      clientCpuUsPerOp: this.asdPid === undefined ? null : perOp(clientUs),
      asdCpuUsPerOp: perOp(asdUs),
    };
  }
}
