/**
 * The seam between `shale vdisk map` and the host: running its tools (nbdfuse, losetup,
 * fusermount3, umount) with a timeout, finding them, and the checks made before touching
 * anything (root, the tools, /dev/fuse, the kernel's nbd module).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ShaleError } from '@shale/common';
import { HOST_COMMAND_TIMEOUT_MS, TOOL_PACKAGES } from './constants.js';

export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** PATH as given, then the sbin directories (losetup is in /usr/sbin, not on every PATH). */
export function toolPath(): string[] {
  const given = (process.env.PATH ?? '').split(':').filter((dir) => dir.length > 0);
  return [...given, ...['/usr/sbin', '/sbin'].filter((dir) => !given.includes(dir))];
}

/** The absolute path of a tool, or undefined. */
export function findTool(tool: string): string | undefined {
  for (const dir of toolPath()) {
    const candidate = path.join(dir, tool);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory: try the next.
    }
  }
  return undefined;
}

/** MAP_TOOL_MISSING (naming the Debian package) unless every tool is there. */
export function requireTools(tools: readonly string[]): Map<string, string> {
  const found = new Map<string, string>();
  for (const tool of tools) {
    const at = findTool(tool);
    if (at === undefined) {
      const pkg = TOOL_PACKAGES[tool] ?? tool;
      throw new ShaleError(
        'MAP_TOOL_MISSING',
        `${tool} is not installed: apt-get install -y ${pkg} (Debian package ${pkg})`,
        { details: { tool, package: pkg } },
      );
    }
    found.set(tool, at);
  }
  return found;
}

/** Mapping makes FUSE mounts and loop devices: root only (MAP_NOT_ROOT). */
export function requireRoot(verb: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new ShaleError(
      'MAP_NOT_ROOT',
      `shale vdisk ${verb} must run as root (it makes FUSE mounts and loop devices); try sudo`,
    );
  }
}

/** The kernel's FUSE device, without which nbdfuse cannot serve (MAP_NO_FUSE). */
export function requireFuseDevice(): void {
  if (!fs.existsSync('/dev/fuse')) {
    throw new ShaleError(
      'MAP_NO_FUSE',
      '/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container --device /dev/fuse',
    );
  }
}

/**
 * Whether this kernel has the nbd module (loaded: /sys/module/nbd; loadable: modprobe -n).
 * Only reported: map always attaches through nbdfuse and a loop device (README: limitations).
 */
export async function kernelNbdAvailable(): Promise<boolean> {
  if (fs.existsSync('/sys/module/nbd')) return true;
  const modprobe = findTool('modprobe');
  if (modprobe === undefined) return false;
  const result = await runTool(modprobe, ['-n', 'nbd']);
  return result.code === 0;
}

/** Runs a host tool to completion; SIGKILL after the timeout (then code is null). */
export function runTool(
  command: string,
  args: readonly string[],
  timeoutMs = HOST_COMMAND_TIMEOUT_MS,
): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new ShaleError('MAP_TOOL_FAILED', `cannot run ${command}`, { cause: err }));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** runTool, and MAP_TOOL_FAILED (with its stderr) unless it exited 0. */
export async function mustRunTool(command: string, args: readonly string[]): Promise<string> {
  const result = await runTool(command, args);
  if (result.code !== 0) {
    throw new ShaleError(
      'MAP_TOOL_FAILED',
      `${path.basename(command)} ${args.join(' ')} failed (${result.code === null ? 'timed out' : `exit ${result.code}`}): ${result.stderr.trim()}`,
    );
  }
  return result.stdout;
}
