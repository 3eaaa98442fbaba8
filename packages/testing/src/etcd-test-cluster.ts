// Real etcd members on 127.0.0.1 with free ports, in temporary data dirs (the TCP relay
// whose connections a test can cut or freeze is in tcp-relay.ts).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.js';

export const ETCD_BINARY = process.env.SHALE_ETCD_BINARY ?? '/usr/bin/etcd';

/** Fails the test with the name of the Debian package when etcd is missing. */
export function requireEtcd(): void {
  if (!existsSync(ETCD_BINARY)) {
    assert.fail(
      `etcd is not installed (${ETCD_BINARY} missing): apt-get install -y etcd-server (Debian package etcd-server provides /usr/bin/etcd)`,
    );
  }
}

/** The part of etcd's Status answer the cluster needs: who a member is, whom it follows. */
interface MemberStatus {
  readonly memberId: string;
  /** '0' while the member follows no leader. */
  readonly leaderId: string;
}

/**
 * Asks one member for its status through etcd's JSON gateway on the client port (the same
 * Maintenance.Status call a gRPC client makes), so that this package needs no etcd client.
 */
async function memberStatus(endpoint: string, timeoutMs: number): Promise<MemberStatus> {
  const response = await fetch(`http://${endpoint}/v3/maintenance/status`, {
    method: 'POST',
    body: '{}',
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) throw new Error(`status from ${endpoint}: HTTP ${response.status}`);
  const body = (await response.json()) as { header?: { member_id?: string }; leader?: string };
  return { memberId: body.header?.member_id ?? '0', leaderId: body.leader ?? '0' };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

interface Member {
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  process: ChildProcess | undefined;
  log: string;
}

export class EtcdTestCluster {
  private constructor(
    private readonly workDir: string,
    private readonly members: Member[],
  ) {}

  static async start(size: number): Promise<EtcdTestCluster> {
    requireEtcd();
    const workDir = await mkdtemp(path.join(os.tmpdir(), 'shale-etcd-'));
    const members: Member[] = [];
    for (let i = 0; i < size; i++) {
      members.push({
        name: `m${i}`,
        clientPort: await freePort(),
        peerPort: await freePort(),
        process: undefined,
        log: '',
      });
    }
    const cluster = new EtcdTestCluster(workDir, members);
    try {
      for (let i = 0; i < size; i++) cluster.spawnMember(i);
      await cluster.waitHealthy([...members.keys()]);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get endpoints(): string[] {
    return this.members.map((member) => `127.0.0.1:${member.clientPort}`);
  }

  endpoint(index: number): string {
    return this.endpoints[index] as string;
  }

  pid(index: number): number | undefined {
    return this.members[index]?.process?.pid;
  }

  private spawnMember(index: number): void {
    const member = this.members[index];
    assert.ok(member);
    const initialCluster = this.members
      .map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`)
      .join(',');
    const child = spawn(
      ETCD_BINARY,
      [
        '--name',
        member.name,
        '--data-dir',
        path.join(this.workDir, `${member.name}.etcd`),
        '--listen-client-urls',
        `http://127.0.0.1:${member.clientPort}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${member.clientPort}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${member.peerPort}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${member.peerPort}`,
        '--initial-cluster',
        initialCluster,
        '--initial-cluster-token',
        `shale-test-${path.basename(this.workDir)}`,
        '--initial-cluster-state',
        'new',
        '--logger',
        'zap',
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.on('data', (chunk: Buffer) => {
      member.log = (member.log + chunk.toString('utf8')).slice(-8000);
    });
    member.process = child;
  }

  /** Waits until each listed member answers and follows a leader. */
  async waitHealthy(indexes: number[], timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (const index of indexes) {
      for (;;) {
        try {
          const status = await memberStatus(this.endpoint(index), 1000);
          if (status.leaderId !== '0') break;
        } catch (err) {
          if (Date.now() > deadline) {
            throw new Error(
              `etcd member ${index} not healthy: ${errorMessage(err)}\n${this.members[index]?.log ?? ''}`,
            );
          }
        }
        if (Date.now() > deadline)
          throw new Error(`etcd member ${index} has no leader\n${this.members[index]?.log ?? ''}`);
        await sleep(100);
      }
    }
  }

  /** The index of the member every member agrees is the leader. */
  async leaderIndex(): Promise<number> {
    const ids: string[] = [];
    let leader = '0';
    for (let i = 0; i < this.members.length; i++) {
      const status = await memberStatus(this.endpoint(i), 2000);
      ids.push(status.memberId);
      leader = status.leaderId;
    }
    const index = ids.indexOf(leader);
    assert.ok(index >= 0, `leader ${leader} is not one of ${ids.join(', ')}`);
    return index;
  }

  signal(index: number, signal: NodeJS.Signals): void {
    const child = this.members[index]?.process;
    assert.ok(child?.pid !== undefined, `member ${index} is not running`);
    process.kill(child.pid, signal);
  }

  async kill(index: number): Promise<void> {
    const member = this.members[index];
    const child = member?.process;
    if (member === undefined || child === undefined) return;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await exited;
    }
    member.process = undefined;
  }

  async restart(index: number): Promise<void> {
    await this.kill(index);
    this.spawnMember(index);
    await this.waitHealthy([index]);
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.members.length; i++) {
      const child = this.members[i]?.process;
      if (child !== undefined && child.signalCode === null && child.exitCode === null) {
        // A SIGSTOPped member must be continued to die promptly on SIGKILL's exit handling.
        child.kill('SIGCONT');
      }
      await this.kill(i);
    }
    await rm(this.workDir, { recursive: true, force: true });
  }
}
