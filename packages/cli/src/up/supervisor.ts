/**
 * Runs daemons as child processes: starts them in order (each waits until the one before is
 * ready), restarts one that dies, and stops them in reverse order.
 *
 *   starting --ready line--> running --exit--> restarting (backoff) --> starting
 *                               |
 *                               +--stop()--> stopping --exit (or SIGKILL after the grace)--> stopped
 *
 * A child is ready when it prints a JSON line whose "event" is one of `readyEvents` on
 * stdout. Its stderr is passed through, each line prefixed with its name.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import readline from 'node:readline';
import { errorMessage } from '@shale/common';

export interface ChildSpec {
  readonly name: string;
  /** Program and arguments. */
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  readonly readyEvents: readonly string[];
  /** How long a start may take before the child is killed and the start fails. */
  readonly readyTimeoutMs: number;
  /** How long stop() waits after SIGTERM before SIGKILL. */
  readonly stopGraceMs: number;
}

export interface SupervisorEvents {
  /** Human lines (a child's stderr, restarts, failures). */
  log(line: string): void;
  /** A child became ready (the first time, or after a restart). */
  ready?(name: string, event: Record<string, unknown>, restarts: number): void;
}

/** Restart backoff: 500 ms doubling to 30 s; reset after a child ran this long. */
const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;
const HEALTHY_RUN_MS = 60_000;

class Supervised {
  child: ChildProcess | undefined;
  restarts = 0;
  stopping = false;
  private backoffMs = RESTART_MIN_MS;
  private restartTimer: NodeJS.Timeout | undefined;
  private exited: Promise<void> = Promise.resolve();
  lastReady: Record<string, unknown> | undefined;

  constructor(
    readonly spec: ChildSpec,
    private readonly events: SupervisorEvents,
  ) {}

  /** Starts the child and resolves once it is ready; rejects if it exits or times out first. */
  start(): Promise<Record<string, unknown>> {
    const { spec } = this;
    // stdin: a pipe nobody writes to; it closes when we die, and the child then stops
    // itself (SHALE_STOP_WITH_PARENT, see main.ts): a SIGKILLed shale up leaves no orphans.
    const child = spawn(spec.command, [...spec.args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...(spec.env ?? process.env), SHALE_STOP_WITH_PARENT: '1' },
    });
    this.child = child;
    const startedAt = Date.now();
    this.exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    readline
      .createInterface({ input: child.stderr as NodeJS.ReadableStream })
      .on('line', (line) => {
        this.events.log(`[${spec.name}] ${line}`);
      });
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${spec.name} was not ready within ${spec.readyTimeoutMs} ms`));
        child.kill('SIGKILL');
      }, spec.readyTimeoutMs);
      readline
        .createInterface({ input: child.stdout as NodeJS.ReadableStream })
        .on('line', (line) => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(line);
          } catch {
            this.events.log(`[${spec.name}] ${line}`);
            return;
          }
          const event = (parsed as { event?: unknown }).event;
          if (typeof event === 'string' && spec.readyEvents.includes(event)) {
            clearTimeout(timer);
            this.lastReady = parsed as Record<string, unknown>;
            resolve(this.lastReady);
          }
        });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${spec.name} exited (${signal ?? `code ${code}`}) before it was ready`));
      });
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    child.once('exit', (code, signal) => {
      if (this.stopping || this.child !== child) return;
      const ranMs = Date.now() - startedAt;
      if (ranMs > HEALTHY_RUN_MS) this.backoffMs = RESTART_MIN_MS;
      this.events.log(
        `shale up: ${spec.name} exited (${signal ?? `code ${code}`}) after ${Math.round(ranMs / 1000)} s; restarting in ${this.backoffMs} ms`,
      );
      this.scheduleRestart();
    });
    return ready;
  }

  private scheduleRestart(): void {
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, RESTART_MAX_MS);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopping) return;
      this.restarts += 1;
      this.start().then(
        (event) => {
          this.events.log(`shale up: ${this.spec.name} is back (restart ${this.restarts})`);
          this.events.ready?.(this.spec.name, event, this.restarts);
        },
        (err: unknown) => {
          if (this.stopping) return;
          this.events.log(`shale up: ${this.spec.name} failed to restart: ${errorMessage(err)}`);
          // Its exit handler schedules the next attempt; a start that timed out was killed.
        },
      );
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer !== undefined) clearTimeout(this.restartTimer);
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      this.events.log(
        `shale up: ${this.spec.name} still running ${this.spec.stopGraceMs} ms after SIGTERM; SIGKILL`,
      );
      child.kill('SIGKILL');
    }, this.spec.stopGraceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export class Supervisor {
  private readonly children: Supervised[] = [];

  constructor(private readonly events: SupervisorEvents) {}

  /** Starts one more child (after every earlier one) and waits until it is ready. */
  async start(spec: ChildSpec): Promise<Record<string, unknown>> {
    const supervised = new Supervised(spec, this.events);
    this.children.push(supervised);
    const event = await supervised.start();
    this.events.ready?.(spec.name, event, 0);
    return event;
  }

  /** The pid of a running child, for tests and status. */
  pid(name: string): number | undefined {
    return this.children.find((c) => c.spec.name === name)?.child?.pid;
  }

  restarts(name: string): number {
    return this.children.find((c) => c.spec.name === name)?.restarts ?? 0;
  }

  /** Stops every child, newest first, each after the one started after it has exited. */
  async stop(): Promise<void> {
    for (const child of this.children) child.stopping = true;
    for (const child of [...this.children].reverse()) await child.stop();
  }
}
