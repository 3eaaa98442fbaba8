import type * as grpc from '@grpc/grpc-js';
import { REMOTE_WATCH_MAX_QUEUED_BYTES, WATCH_MAX_QUEUED_BATCHES } from './constants.js';
import {
  eventBytes,
  eventFromWire,
  type WireWatchBatch,
  type WireWatchRequest,
  wireNumber,
} from './kv-grpc.js';
import type { WatchBatch, WatchEvent, Watcher, WatchHandler } from './kv-store.js';
import { watchStreamFailure } from './remote-errors.js';

/** How RemoteKv waits between attempts: the first pause, doubled up to the longest. */
export interface ReconnectPolicy {
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
}

export interface RemoteWatcherOptions {
  readonly prefix: Buffer;
  readonly fromRevision: number | undefined;
  readonly handler: WatchHandler;
  readonly openStream: (request: WireWatchRequest) => grpc.ClientReadableStream<WireWatchBatch>;
  readonly reconnect: ReconnectPolicy;
  /** For messages: "kv 127.0.0.1:7000". */
  readonly what: string;
  readonly onEnd: () => void;
}

interface QueuedBatch {
  readonly batch: WatchBatch;
  readonly bytes: number;
}

/**
 * One RemoteKv watch that survives its connection and server restarts.
 *
 *   (open stream) --created--> streaming --whole batches--> queue --pump--> handler
 *         ^                        |
 *         +---- backoff <---- transport error / KV_UNAVAILABLE / end
 *                                  |
 *                     KV_COMPACTED, other server codes, handler error --> done rejects
 *
 * It remembers the revision of the last whole batch it received and re-opens the stream
 * from the one after, so a dropped connection or a restarted server neither loses nor
 * repeats an event: a batch split over several messages (more = true) counts only once its
 * last message is in; a part received before a break is dropped and comes again. Received
 * batches wait in a queue bounded by WATCH_MAX_QUEUED_BATCHES and
 * REMOTE_WATCH_MAX_QUEUED_BYTES; past either the stream is paused, HTTP/2 flow control
 * stops the server's writes, and the server stops pulling from its store.
 */
export class RemoteWatcher implements Watcher {
  readonly ready: Promise<void>;
  readonly done: Promise<void>;
  private resolveReady!: () => void;
  private resolveDone!: () => void;
  private rejectDone!: (err: unknown) => void;
  /** The revision to ask for when (re)opening; undefined: "from now", until created. */
  private nextRequest: number | undefined;
  private delivered: number;
  private readonly queue: QueuedBatch[] = [];
  private queuedBytes = 0;
  private stream: grpc.ClientReadableStream<WireWatchBatch> | undefined;
  private paused = false;
  private closed = false;
  private failed: unknown;
  private wakePump: (() => void) | undefined;
  private wakeBackoff: (() => void) | undefined;
  /** Streams opened so far (the first, then one per resume). */
  streamsOpened = 0;

  constructor(private readonly options: RemoteWatcherOptions) {
    this.nextRequest = options.fromRevision;
    this.delivered = options.fromRevision === undefined ? 0 : options.fromRevision - 1;
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
        this.options.onEnd();
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
    const { initialBackoffMs, maxBackoffMs } = this.options.reconnect;
    let backoffMs = initialBackoffMs;
    while (!this.closed) {
      const established = await this.runStream();
      if (this.closed) return;
      if (established) backoffMs = initialBackoffMs;
      await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
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

  /** One stream's life. Resolves (true if it got as far as "created") when it breaks. */
  private runStream(): Promise<boolean> {
    const stream = this.options.openStream({
      prefix: this.options.prefix,
      fromRevision: this.nextRequest ?? 0,
    });
    this.streamsOpened++;
    this.stream = stream;
    this.paused = false;
    let established = false;
    let partial: WatchEvent[] = [];
    let partialBytes = 0;
    return new Promise<boolean>((resolve, reject) => {
      let finished = false;
      const finish = (err?: unknown): void => {
        if (finished) return;
        finished = true;
        if (this.stream === stream) this.stream = undefined;
        stream.cancel();
        if (err === undefined) resolve(established);
        else reject(err);
      };
      stream.on('data', (message: WireWatchBatch) => {
        if (finished) return;
        try {
          if (message.created) {
            established = true;
            if (this.nextRequest === undefined) {
              const now = wireNumber(message.revision, 'watch start revision');
              this.nextRequest = now + 1;
              this.delivered = now;
            }
            this.resolveReady();
            return;
          }
          for (const wire of message.events) {
            const event = eventFromWire(wire);
            partial.push(event);
            partialBytes += eventBytes(event);
          }
          if (message.more) return;
          const revision = wireNumber(message.revision, 'watch batch revision');
          this.queue.push({ batch: { events: partial, revision }, bytes: partialBytes });
          this.queuedBytes += partialBytes;
          this.nextRequest = revision + 1;
          partial = [];
          partialBytes = 0;
          this.wakePump?.();
          if (
            !this.paused &&
            (this.queue.length >= WATCH_MAX_QUEUED_BATCHES ||
              this.queuedBytes >= REMOTE_WATCH_MAX_QUEUED_BYTES)
          ) {
            this.paused = true;
            stream.pause();
          }
        } catch (err) {
          finish(err);
        }
      });
      stream.on('error', (err: Error) => {
        finish(watchStreamFailure(err, `${this.options.what}: watch`));
      });
      // Not expected (the server ends a watch only with an error): open it again.
      stream.on('end', () => finish());
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
      await this.options.handler(queued.batch);
      this.delivered = queued.batch.revision;
      this.queuedBytes -= queued.bytes;
      if (
        this.paused &&
        this.queue.length <= WATCH_MAX_QUEUED_BATCHES / 2 &&
        this.queuedBytes <= REMOTE_WATCH_MAX_QUEUED_BYTES / 2
      ) {
        this.paused = false;
        this.stream?.resume();
      }
    }
  }
}
