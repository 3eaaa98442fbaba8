import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';

/**
 * A real Linux guest under QEMU for the tests: Debian's kernel (unpacked by
 * scripts/fetch-guest-kernel.sh, never installed), a busybox initramfs built on the fly,
 * and a runner that kills QEMU when it overstays. The guest reports on ttyS0 with one
 * verdict line (`GUEST_VERDICT_PREFIX PASS ...` or `... FAIL ...`) and powers off.
 */

export const GUEST_KERNEL_DIR_DEFAULT = '/var/cache/shale/guest-kernel';
/** What the guest prints before its verdict; the host takes the first such line. */
export const GUEST_VERDICT_PREFIX = 'SHALE-GUEST-RESULT:';
/** Most serial output kept from one boot (its tail); a chatty guest cannot eat memory. */
const SERIAL_MAX_BYTES = 1024 * 1024;
/** Most stdout or stderr kept from one host tool run (its tail). */
const TOOL_OUTPUT_MAX_BYTES = 1024 * 1024;

export type GuestAccel = 'tcg' | 'kvm';

export interface GuestKernel {
  /** The unpacked package root (holds boot/ and lib/modules/). */
  readonly rootDir: string;
  readonly version: string;
  readonly vmlinuzPath: string;
}

export function guestKernelDir(): string {
  return process.env.SHALE_GUEST_KERNEL_DIR ?? GUEST_KERNEL_DIR_DEFAULT;
}

/**
 * The accelerator from SHALE_GUEST_ACCEL: TCG unless KVM is asked for. On the CI machine
 * /dev/kvm is a PVM stub (kvm_pvm) that stock kernels cannot boot on: QEMU either aborts
 * setting MSR 0x10a or the guest never prints a line (/work/shared/testbed/README.md §3).
 */
export function guestAccel(): GuestAccel {
  const value = process.env.SHALE_GUEST_ACCEL ?? 'tcg';
  if (value !== 'tcg' && value !== 'kvm') {
    throw new Error(`SHALE_GUEST_ACCEL must be tcg or kvm, not ${JSON.stringify(value)}`);
  }
  return value;
}

function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/**
 * The newest complete kernel (boot/vmlinuz-V with lib/modules/V/modules.dep) under
 * `dir`/root. Throws, naming what is missing and how to get it, when there is none.
 */
export async function findGuestKernel(dir = guestKernelDir()): Promise<GuestKernel> {
  const rootDir = path.join(dir, 'root');
  const bootDir = path.join(rootDir, 'boot');
  const names = await fsp.readdir(bootDir).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  });
  const versions = names
    .filter((name) => name.startsWith('vmlinuz-'))
    .map((name) => name.slice('vmlinuz-'.length))
    .sort(compareVersions)
    .reverse();
  for (const version of versions) {
    const modulesDep = path.join(rootDir, 'lib', 'modules', version, 'modules.dep');
    if (fs.existsSync(modulesDep)) {
      return { rootDir, version, vmlinuzPath: path.join(bootDir, `vmlinuz-${version}`) };
    }
  }
  throw new Error(
    `no guest kernel in ${rootDir} (want boot/vmlinuz-V and lib/modules/V/modules.dep` +
      `${versions.length > 0 ? `; found vmlinuz ${versions.join(', ')} without modules.dep` : ''}): ` +
      'run scripts/fetch-guest-kernel.sh (Debian linux-image-amd64 via apt-get download + dpkg -x + depmod), ' +
      'which scripts/test.sh does, or set SHALE_GUEST_KERNEL_DIR to a directory holding one',
  );
}

const SEARCH_PATH = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The absolute path of `command` on PATH (plus the sbin directories), or undefined. */
export function whichTool(command: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d !== ''), ...SEARCH_PATH];
  for (const dir of dirs) {
    const full = path.join(dir, command);
    const stat = fs.statSync(full, { throwIfNoEntry: false });
    if (stat?.isFile() === true && (stat.mode & 0o111) !== 0) return full;
  }
  return undefined;
}

/** Throws one error naming every missing command and its Debian package. */
export function requireTools(tools: Readonly<Record<string, string>>): void {
  const missing = Object.entries(tools)
    .filter(([command]) => whichTool(command) === undefined)
    .map(([command, pkg]) => `${command} (Debian package ${pkg})`);
  if (missing.length > 0) {
    throw new Error(
      `missing host tools: ${missing.join(', ')}; scripts/test.sh installs them with apt-get`,
    );
  }
}

/** The host tools a guest boot needs (command -> Debian package). */
export const GUEST_TOOLS: Readonly<Record<string, string>> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  busybox: 'busybox-static',
  cpio: 'cpio',
  modprobe: 'kmod',
  ldd: 'libc-bin',
  mke2fs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
};

export interface ToolResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Keeps the last `maxBytes` of a growing text. */
function appendTail(text: string, chunk: string, maxBytes: number): string {
  const joined = text + chunk;
  return joined.length > maxBytes ? joined.slice(joined.length - maxBytes) : joined;
}

/**
 * Runs a host tool to completion (SIGKILL after timeoutMs). `stdoutTo` receives stdout
 * instead of it being collected (e.g. a hash for `debugfs -R cat`).
 */
export async function runTool(
  command: string,
  args: readonly string[],
  options: {
    timeoutMs: number;
    cwd?: string;
    stdin?: string;
    stdoutTo?: (chunk: Buffer) => void;
  },
): Promise<ToolResult> {
  // By full path: modprobe, e2fsck and debugfs live in /usr/sbin, which PATH may lack.
  const child = spawn(whichTool(command) ?? command, args, {
    cwd: options.cwd,
    stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    if (options.stdoutTo !== undefined) options.stdoutTo(chunk);
    else stdout = appendTail(stdout, chunk.toString('utf8'), TOOL_OUTPUT_MAX_BYTES);
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = appendTail(stderr, chunk.toString('utf8'), TOOL_OUTPUT_MAX_BYTES);
  });
  if (options.stdin !== undefined) child.stdin?.end(options.stdin);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  try {
    const [code, signal] = await exitOf(child);
    if (timedOut) stderr += `\n[killed after ${options.timeoutMs} ms]`;
    return { code, signal, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the exit code and signal; rejects if the command cannot be started. */
function exitOf(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve([code, signal]));
  });
}

/** Runs a host tool and throws (with its output) unless it exits 0. */
export async function runToolOk(
  command: string,
  args: readonly string[],
  options: { timeoutMs: number; cwd?: string; stdin?: string; stdoutTo?: (chunk: Buffer) => void },
): Promise<ToolResult> {
  const result = await runTool(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} exited with ${result.code ?? result.signal}:\n${result.stdout}${result.stderr}`,
    );
  }
  return result;
}

/**
 * The shell the initramfs's /init starts with: busybox applets, /proc /sys /dev, the
 * modules in load order, /dev/vda present. It defines `say` (a progress line), `verdict`
 * (prints the verdict line, syncs, powers off), `fail` and `arg NAME` (a `NAME=value`
 * word from the kernel command line). The test's own body follows it.
 */
const INIT_PRELUDE = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "guest: $*"; }
verdict() {
  echo "${GUEST_VERDICT_PREFIX} $*"
  sync
  poweroff -f
  echo o >/proc/sysrq-trigger
  sleep 10
  # Never run on: whatever follows a verdict must not print another.
  while :; do sleep 1; done
}
fail() { verdict "FAIL $*"; }
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "\${w#*=}" ;; esac; done; }
say "init started, kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s"
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m" || fail "insmod $m"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || fail "no /dev/vda after 20 s"
`;

export interface InitramfsOptions {
  readonly kernel: GuestKernel;
  /** Scratch directory; the tree goes to `dir`/initramfs, the archive to `dir`/initrd.gz. */
  readonly dir: string;
  /** Modules to load, by name; their dependencies come first (modprobe --show-depends). */
  readonly modules: readonly string[];
  /**
   * Dynamically linked host programs copied to /sbin with their libraries (via ldd). Call
   * them by full path (/sbin/mke2fs): busybox's shell prefers its own applet of that name.
   */
  readonly programs: readonly string[];
  /** Host files copied to the same path (e.g. /etc/mke2fs.conf). */
  readonly files?: readonly string[];
  /** Shell run by /init after the prelude (modules loaded, /dev/vda present). */
  readonly initBody: string;
}

export interface Initramfs {
  readonly path: string;
  readonly sizeBytes: number;
  /** The .ko files in the order /init loads them. */
  readonly moduleFiles: readonly string[];
}

/** The .ko files `modules` need, dependencies first, each once. */
async function resolveModules(kernel: GuestKernel, modules: readonly string[]): Promise<string[]> {
  const ordered: string[] = [];
  for (const name of modules) {
    const result = await runToolOk(
      'modprobe',
      ['-d', kernel.rootDir, '-S', kernel.version, '--show-depends', name],
      { timeoutMs: 30_000 },
    );
    for (const line of result.stdout.split('\n')) {
      const words = line.trim().split(/\s+/);
      // "insmod /path/x.ko [params]"; "builtin x" lines need nothing.
      if (words[0] === 'insmod' && words[1] !== undefined && !ordered.includes(words[1])) {
        ordered.push(words[1]);
      }
    }
  }
  return ordered;
}

/** The shared libraries (and the loader) `ldd` lists for a program. */
async function sharedLibraries(program: string): Promise<string[]> {
  const result = await runToolOk('ldd', [program], { timeoutMs: 30_000 });
  const libs: string[] = [];
  for (const line of result.stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const match = /(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (match?.[1] !== undefined) libs.push(match[1]);
  }
  return libs;
}

/** Copies a host file (following symlinks) to the same path under `root`. */
async function copyInto(root: string, hostPath: string, asPath = hostPath): Promise<void> {
  const target = path.join(root, asPath);
  await fsp.mkdir(path.dirname(target), { recursive: true });
  await fsp.copyFile(hostPath, target);
  await fsp.chmod(target, (await fsp.stat(hostPath)).mode & 0o777);
}

/** Every path under `root`, relative, parents before children (the order cpio wants). */
async function listTree(root: string, rel = '.'): Promise<string[]> {
  const out = [rel];
  const entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const entry of entries) {
    const child = rel === '.' ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) out.push(...(await listTree(root, child)));
    else out.push(child);
  }
  return out;
}

/**
 * Builds a gzipped newc initramfs: busybox-static as /bin/busybox, `programs` with their
 * libraries, the kernel's own modules, and /init = the prelude + `initBody`.
 */
export async function buildInitramfs(options: InitramfsOptions): Promise<Initramfs> {
  requireTools(GUEST_TOOLS);
  const root = path.join(options.dir, 'initramfs');
  for (const sub of ['bin', 'sbin', 'etc', 'proc', 'sys', 'dev', 'mnt', 'tmp', 'lib/modules']) {
    await fsp.mkdir(path.join(root, sub), { recursive: true });
  }
  const busybox = whichTool('busybox') as string;
  const lddBusybox = await runTool('ldd', [busybox], { timeoutMs: 30_000 });
  if (!/not a dynamic executable|statically linked/.test(lddBusybox.stdout + lddBusybox.stderr)) {
    throw new Error(
      `${busybox} is dynamically linked; the initramfs needs the static one (Debian package busybox-static)`,
    );
  }
  await copyInto(root, busybox, '/bin/busybox');

  const moduleFiles = await resolveModules(options.kernel, options.modules);
  for (const ko of moduleFiles) await copyInto(root, ko, `/lib/modules/${path.basename(ko)}`);
  await fsp.writeFile(
    path.join(root, 'lib/modules/load-order'),
    `${moduleFiles.map((ko) => path.basename(ko)).join('\n')}\n`,
  );

  for (const program of options.programs) {
    const hostPath = whichTool(program);
    if (hostPath === undefined) throw new Error(`${program} is not on the host`);
    await copyInto(root, hostPath, `/sbin/${program}`);
    for (const lib of await sharedLibraries(hostPath)) await copyInto(root, lib);
  }
  for (const file of options.files ?? []) await copyInto(root, file);

  await fsp.writeFile(path.join(root, 'init'), `${INIT_PRELUDE}${options.initBody}`, {
    mode: 0o755,
  });

  const archive = path.join(options.dir, 'initrd.gz');
  const cpio = spawn(whichTool('cpio') ?? 'cpio', ['-o', '-H', 'newc', '--quiet'], {
    cwd: root,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let cpioStderr = '';
  cpio.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    cpioStderr = appendTail(cpioStderr, chunk, TOOL_OUTPUT_MAX_BYTES);
  });
  cpio.stdin.end(`${(await listTree(root)).join('\n')}\n`);
  const [, [code, signal]] = await Promise.all([
    pipeline(cpio.stdout, zlib.createGzip({ level: 1 }), fs.createWriteStream(archive)),
    exitOf(cpio),
  ]);
  if (code !== 0) throw new Error(`cpio exited with ${code ?? signal}: ${cpioStderr}`);
  return { path: archive, sizeBytes: (await fsp.stat(archive)).size, moduleFiles };
}

export interface GuestBootOptions {
  readonly kernel: GuestKernel;
  readonly initramfsPath: string;
  /** The virtio disk, e.g. nbd://127.0.0.1:PORT/NAME. */
  readonly driveFile: string;
  /** Appended to `console=ttyS0 panic=-1 loglevel=4`. */
  readonly kernelArgs: readonly string[];
  /** QEMU is SIGKILLed when the guest has not powered off by then. */
  readonly timeoutMs: number;
  readonly accel?: GuestAccel;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  /** Each serial line as it arrives (without the CR). */
  readonly onSerialLine?: (line: string) => void;
}

export interface GuestBoot {
  readonly accel: GuestAccel;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly durationMs: number;
  /** The serial console (its last SERIAL_MAX_BYTES), CRs removed. */
  readonly serial: string;
  readonly qemuStderr: string;
  /** The (first) verdict line without its prefix, e.g. "PASS mode=write ...", if any. */
  readonly verdict: string | undefined;
}

/** `name=value` words of a verdict line, e.g. {mode: 'write', 'big.sha256': '...'}. */
export function verdictFields(verdict: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const word of verdict.split(/\s+/)) {
    const at = word.indexOf('=');
    if (at > 0) fields[word.slice(0, at)] = word.slice(at + 1);
  }
  return fields;
}

/** What to show when a boot went wrong: how it ended and the serial tail. */
export function describeBoot(boot: GuestBoot, tailLines = 40): string {
  const how = boot.timedOut
    ? `killed after ${boot.durationMs} ms (timeout)`
    : `qemu exited with ${boot.exitCode ?? boot.signal} after ${boot.durationMs} ms`;
  const tail = boot.serial.split('\n').slice(-tailLines).join('\n');
  const kvmHint =
    boot.accel === 'kvm'
      ? ' (SHALE_GUEST_ACCEL=kvm; where /dev/kvm is kvm_pvm stock kernels do not boot: unset it for TCG)'
      : '';
  return `guest (${boot.accel})${kvmHint} ${how}; verdict ${boot.verdict ?? '<none>'}\n--- qemu stderr ---\n${boot.qemuStderr}\n--- serial (last ${tailLines} lines) ---\n${tail}`;
}

/**
 * Boots the guest once and waits until QEMU exits (the guest powers off) or timeoutMs
 * passes (QEMU is SIGKILLed). Never leaves QEMU running: it resolves only after QEMU's
 * exit, and a test process that exits meanwhile kills it first.
 */
export async function bootGuest(options: GuestBootOptions): Promise<GuestBoot> {
  const accel = options.accel ?? guestAccel();
  const accelArgs =
    accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max'];
  const args = [
    ...accelArgs,
    '-m',
    String(options.memoryMiB ?? 512),
    '-smp',
    String(options.cpus ?? 2),
    '-nodefaults',
    '-no-reboot',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-kernel',
    options.kernel.vmlinuzPath,
    '-initrd',
    options.initramfsPath,
    '-append',
    ['console=ttyS0', 'panic=-1', 'loglevel=4', ...options.kernelArgs].join(' '),
    '-drive',
    `file=${options.driveFile},format=raw,if=virtio,cache=none`,
  ];
  const t0 = Date.now();
  const qemu = spawn(whichTool('qemu-system-x86_64') ?? 'qemu-system-x86_64', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = (): void => {
    qemu.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  let serial = '';
  let partial = '';
  let qemuStderr = '';
  qemu.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const text = chunk.replace(/\r/g, '');
    serial = appendTail(serial, text, SERIAL_MAX_BYTES);
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) options.onSerialLine?.(line);
  });
  qemu.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    qemuStderr = appendTail(qemuStderr, chunk, TOOL_OUTPUT_MAX_BYTES);
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    qemu.kill('SIGKILL');
  }, options.timeoutMs);
  try {
    const [exitCode, signal] = await exitOf(qemu);
    if (partial !== '') options.onSerialLine?.(partial);
    const verdictLine = serial.split('\n').find((line) => line.includes(GUEST_VERDICT_PREFIX));
    const verdict = verdictLine
      ?.slice(verdictLine.indexOf(GUEST_VERDICT_PREFIX) + GUEST_VERDICT_PREFIX.length)
      .trim();
    return {
      accel,
      exitCode,
      signal,
      timedOut,
      durationMs: Date.now() - t0,
      serial,
      qemuStderr,
      verdict,
    };
  } finally {
    clearTimeout(timer);
    process.removeListener('exit', killOnExit);
  }
}
