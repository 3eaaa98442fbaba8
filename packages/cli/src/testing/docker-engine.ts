/**
 * A private dockerd for tests (as ../shared/testbed/docker-engine.sh): its own data root,
 * exec root and API socket under a test directory, no bridge and no iptables rules, a
 * busybox image imported from the host's busybox-static; stop() leaves nothing running.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { mustRun, type RunResult, run } from './map-harness.js';

export const BUSYBOX_IMAGE = 'local/busybox:shale-test';
const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const DOCKERD = fs.existsSync('/usr/sbin/dockerd') ? '/usr/sbin/dockerd' : 'dockerd';

export class DockerEngine {
  private constructor(
    readonly dir: string,
    private readonly child: ChildProcess,
    private readonly env: Record<string, string>,
  ) {}

  static async start(dir: string): Promise<DockerEngine> {
    await fsp.mkdir(dir, { recursive: true });
    const host = `unix://${path.join(dir, 'docker.sock')}`;
    const log = fs.openSync(path.join(dir, 'dockerd.log'), 'a');
    const child = spawn(
      DOCKERD,
      [
        '--data-root',
        path.join(dir, 'data'),
        '--exec-root',
        path.join(dir, 'exec'),
        '--pidfile',
        path.join(dir, 'dockerd.pid'),
        '-H',
        host,
        '--storage-driver=overlay2',
        '--bridge=none',
        '--iptables=false',
        '--ip-masq=false',
      ],
      { stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
    const engine = new DockerEngine(dir, child, { DOCKER_HOST: host });
    for (let i = 0; i < 150; i += 1) {
      if ((await engine.docker(['version'])).code === 0) break;
      if (child.exitCode !== null) break;
      await sleep(200);
    }
    if ((await engine.docker(['version'])).code !== 0) {
      const text = await fsp.readFile(path.join(dir, 'dockerd.log'), 'utf8').catch(() => '');
      await engine.stop();
      throw new Error(`dockerd did not start:\n${text.slice(-2000)}`);
    }
    await engine.importBusybox();
    return engine;
  }

  docker(args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
    return run(DOCKER, args, { env: this.env, timeoutMs });
  }

  async mustDocker(args: readonly string[]): Promise<string> {
    const result = await this.docker(args);
    if (result.code !== 0) {
      throw new Error(`docker ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
    }
    return result.stdout;
  }

  private async importBusybox(): Promise<void> {
    const rootfs = path.join(this.dir, 'rootfs');
    for (const sub of ['bin', 'tmp', 'proc', 'sys', 'dev', 'etc', 'data']) {
      await fsp.mkdir(path.join(rootfs, sub), { recursive: true });
    }
    await fsp.copyFile('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
    await fsp.chmod(path.join(rootfs, 'bin', 'busybox'), 0o755);
    for (const applet of ['sh', 'cat', 'echo', 'md5sum', 'dd', 'sync', 'sleep', 'ls', 'test']) {
      await fsp.symlink('busybox', path.join(rootfs, 'bin', applet));
    }
    const tarball = path.join(this.dir, 'rootfs.tar');
    await mustRun('tar', ['-C', rootfs, '-cf', tarball, '.']);
    await this.mustDocker(['import', '-c', 'ENV PATH=/bin', tarball, BUSYBOX_IMAGE]);
  }

  /** Removes every container, then stops dockerd (SIGKILL after 15 s). */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const ids = (await this.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean);
      if (ids.length > 0) await this.docker(['rm', '-f', ...ids]);
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      if ((await Promise.race([exited, sleep(15_000, 'timeout')])) === 'timeout') {
        this.child.kill('SIGKILL');
        await exited;
      }
    }
    // overlay2 leaves mounts under the data root when a container was still up.
    const mounts = (await fsp.readFile('/proc/self/mounts', 'utf8'))
      .split('\n')
      .map((line) => line.split(' ')[1] ?? '')
      .filter((mountpoint) => mountpoint.startsWith(this.dir))
      .sort()
      .reverse();
    for (const mountpoint of mounts) await run('umount', ['-l', mountpoint]);
  }
}
