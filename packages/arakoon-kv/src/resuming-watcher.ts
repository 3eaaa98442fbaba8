import type { WatchBatch, Watcher, WatchHandler } from './kv-store.js';

/** What a watcher needs of its transport stream (a gRPC call: duplex or server-streaming). */
export interface WatchStream {
  pause(): void;
  resume(): void;
  cancel(): void;
}

export interface ResumingWatcherOptions {
  readonly fromRevision: number | undefined;
  readonly handler: WatchHandler;
  readonly onEnd: () => void;
  /** The first pause between streams, doubled up to maxMs (reset once a stream is created). */
  readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  /** The queue pauses the stream at this many batches, or at this many event bytes. */
  readonly maxQueuedBatches: number;
  readonly maxQueuedBytes: number;
}

interface QueuedBatch {
  readonly batch: WatchBatch;
  readonly bytes: number;
}

/**
 * The part of a watch that survives its connection, shared by the engines' watchers
 * (EtcdWatcher, RemoteWatcher); each says how to run one stream (runStream).
 *
 *   (open stream) --created--> streaming --batches--> queue --pump--> handler
 *         ^                        |
 *         +---- backoff <---- the stream broke (runStream resolved)
 *                                  |
 *                  runStream rejected, handler threw --> done rejects
 *
 * `nextRequest` is the revision after the last whole batch received: a new stream starts
 * there, so a break neither loses nor repeats an event. Received batches wait in a queue;
 * when it holds maxQueuedBatches or maxQueuedBytes the stream is paused, so a slow handler
 * pushes back on the server instead of on memory, and resumed at half of both.
 */
export abstract class ResumingWatcher implements Watcher {
  readonly ready: Promise<void>;
  readonly done: Promise<void>;
  private resolveReady!: () => void;
  private resolveDone!: () => void;
  private rejectDone!: (err: unknown) => void;
  /** The revision to ask for when (re)opening; undefined: "from now", until created. */
  protected nextRequest: number | undefined;
  private delivered: number;
  private readonly queue: QueuedBatch[] = [];
  private queuedBytes = 0;
  /** The stream being run, if any (runStream sets and clears it). */
  protected stream: WatchStream | undefined;
  private paused = false;
  protected closed = false;
  private failed: unknown;
  private wakePump: (() => void) | undefined;
  private wakeBackoff: (() => void) | undefined;

  constructor(private readonly base: ResumingWatcherOptions) {
    this.nextRequest = base.fromRevision;
    this.delivered = base.fromRevision === undefined ? 0 : base.fromRevision - 1;
    this.ready = new Promise<void>((resolve) => {
      this.resolveReady = resolve;
    });
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // A watch nobody awaits must not crash the process with an unhandled rejection.
    this.done.catch(() => undefined);
  }

  get deliveredRevision(): number {
    return this.delivered;
  }

  start(): void {
    Promise.all([
      this.connectLoop().catch((err: unknown) => this.fail(err)),
      this.pump().catch((err: unknown) => this.fail(err)),
    ]).then(
      () => {
        this.base.onEnd();
        this.resolveReady();
        if (this.failed === undefined) this.resolveDone();
        else this.rejectDone(this.failed);
      },
      (err: unknown) => this.rejectDone(err),
    );
  }

  async close(): Promise<void> {
    this.stop();
    await this.done.catch(() => undefined);
  }

  /**
   * Runs one stream until it breaks (resolves: true if it got as far as "created"), or
   * until the watch must end (rejects with why). It uses the helpers below.
   */
  protected abstract runStream(): Promise<boolean>;

  /** Called after a stream broke, before the backoff (EtcdKv moves to another endpoint). */
  protected streamBroke(): void {
    // Nothing by default.
  }

  /** The stream is open; `now` is the store's revision when it started "from now". */
  protected created(now: number | undefined): void {
    if (this.nextRequest === undefined && now !== undefined) {
      this.nextRequest = now + 1;
      this.delivered = now;
    }
    this.resolveReady();
  }

  /** A new stream: it starts unpaused. */
  protected attach(stream: WatchStream): void {
    this.stream = stream;
    this.paused = false;
  }

  /** A whole batch arrived on `stream`: queue it, pausing the stream when the queue is full. */
  protected received(stream: WatchStream, batch: WatchBatch, bytes: number): void {
    this.queue.push({ batch, bytes });
    this.queuedBytes += bytes;
    this.nextRequest = batch.revision + 1;
    this.wakePump?.();
    if (
      !this.paused &&
      (this.queue.length >= this.base.maxQueuedBatches ||
        this.queuedBytes >= this.base.maxQueuedBytes)
    ) {
      this.paused = true;
      stream.pause();
    }
  }

  private stop(): void {
    this.closed = true;
    this.stream?.cancel();
    this.wakePump?.();
    this.wakeBackoff?.();
  }

  private fail(err: unknown): void {
    if (this.failed === undefined && !this.closed) this.failed = err;
    this.stop();
  }

  private async connectLoop(): Promise<void> {
    const { initialMs, maxMs } = this.base.backoff;
    let backoffMs = initialMs;
    while (!this.closed) {
      const established = await this.runStream();
      if (this.closed) return;
      if (established) backoffMs = initialMs;
      this.streamBroke();
      await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, maxMs);
    }
  }

  /** A pause that close() cuts short. */
  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wakeBackoff = undefined;
        resolve();
      }, ms);
      this.wakeBackoff = () => {
        clearTimeout(timer);
        this.wakeBackoff = undefined;
        resolve();
      };
    });
  }

  private async pump(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const queued = this.queue.shift();
      if (queued === undefined) {
        await new Promise<void>((resolve) => {
          this.wakePump = resolve;
          if (this.closed || this.queue.length > 0) resolve();
        });
        this.wakePump = undefined;
        continue;
      }
      await this.base.handler(queued.batch);
      this.delivered = queued.batch.revision;
      this.queuedBytes -= queued.bytes;
      if (
        this.paused &&
        this.queue.length <= this.base.maxQueuedBatches / 2 &&
        this.queuedBytes <= this.base.maxQueuedBytes / 2
      ) {
        this.paused = false;
        this.stream?.resume();
      }
    }
  }
}
