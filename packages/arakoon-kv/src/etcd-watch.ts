import { setTimeout as sleep } from 'node:timers/promises';
import type * as grpc from '@grpc/grpc-js';
import {
  ETCD_RETRY_BACKOFF_MAX_MS,
  ETCD_RETRY_BACKOFF_MS,
  WATCH_MAX_QUEUED_BATCHES,
} from './constants.js';
import { KvErrorCode, kvError } from './errors.js';
import type { WireWatchResponse } from './etcd-proto.js';
import { fromWire, toRevision } from './etcd-wire.js';
import type { WatchBatch, WatchEvent, Watcher, WatchHandler } from './kv-store.js';

export interface EtcdWatcherOptions {
  readonly start: Buffer;
  readonly end: Buffer;
  readonly fromRevision: number | undefined;
  readonly handler: WatchHandler;
  readonly openStream: () => Promise<grpc.ClientDuplexStream<object, WireWatchResponse>>;
  /** The stream broke: the owner moves to its next endpoint. */
  readonly onStreamFailed: () => void;
  readonly onEnd: () => void;
}

/**
 * One etcd watch that survives its connection.
 *
 *   (connect) --created--> streaming --events--> queue --pump--> handler
 *       ^                      |
 *       +--- backoff <--- error / end / canceled (not compacted)
 *
 * It remembers the revision after the last event it received and re-creates the etcd
 * watch from there on any member, so a dropped connection, a dead member or a leader
 * change neither loses nor repeats an event (etcd never splits one revision across
 * responses unless asked to fragment, which we do not). Only compaction past that
 * revision ends it (KV_COMPACTED). Received batches wait in a bounded queue; when it is
 * full the stream is paused, so a slow handler pushes back on etcd instead of on memory.
 */
export class EtcdWatcher implements Watcher {
  readonly ready: Promise<void>;
  readonly done: Promise<void>;
  private resolveReady!: () => void;
  private resolveDone!: () => void;
  private rejectDone!: (err: unknown) => void;
  /** The revision to ask for when (re)connecting; undefined: "from now". */
  private nextRequest: number | undefined;
  private delivered: number;
  private readonly queue: WatchBatch[] = [];
  private stream: grpc.ClientDuplexStream<object, WireWatchResponse> | undefined;
  private paused = false;
  private closed = false;
  private failed: unknown;
  private wakePump: (() => void) | undefined;

  constructor(private readonly options: EtcdWatcherOptions) {
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
  }

  private fail(err: unknown): void {
    if (this.failed === undefined && !this.closed) this.failed = err;
    this.stop();
  }

  private async connectLoop(): Promise<void> {
    let backoffMs = ETCD_RETRY_BACKOFF_MS;
    while (!this.closed) {
      const established = await this.runStream();
      if (this.closed) return;
      if (established) backoffMs = ETCD_RETRY_BACKOFF_MS;
      this.options.onStreamFailed();
      await sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, ETCD_RETRY_BACKOFF_MAX_MS);
    }
  }

  /** One stream's life. Resolves (true if it got as far as "created") when it breaks. */
  private async runStream(): Promise<boolean> {
    let stream: grpc.ClientDuplexStream<object, WireWatchResponse>;
    try {
      stream = await this.options.openStream();
    } catch (err) {
      // Authentication may fail while etcd is down: treat like a broken stream, unless fatal.
      if (
        typeof err === 'object' &&
        err !== null &&
        'code' in err &&
        (err as { code: unknown }).code === KvErrorCode.Unavailable
      ) {
        return false;
      }
      throw err;
    }
    this.stream = stream;
    this.paused = false;
    if (this.closed) {
      stream.cancel();
      return false;
    }
    let established = false;
    await new Promise<void>((resolve, reject) => {
      let finished = false;
      const finish = (err?: unknown): void => {
        if (finished) return;
        finished = true;
        if (this.stream === stream) this.stream = undefined;
        stream.cancel();
        if (err === undefined) resolve();
        else reject(err);
      };
      stream.on('data', (response: WireWatchResponse) => {
        if (finished) return;
        if (response.created) {
          established = true;
          if (this.nextRequest === undefined && response.header !== null) {
            const now = toRevision(response.header.revision);
            this.nextRequest = now + 1;
            this.delivered = now;
          }
          this.resolveReady();
        }
        if (response.canceled) {
          if (response.compactRevision !== '0' && response.compactRevision !== '') {
            finish(
              kvError(
                KvErrorCode.Compacted,
                `watch from revision ${this.nextRequest}: etcd compacted history up to ${response.compactRevision}; read the current state and watch from its revision + 1`,
              ),
            );
          } else {
            finish();
          }
          return;
        }
        if (response.events.length === 0) return;
        const events: WatchEvent[] = response.events.map((event) => {
          const kv = fromWire(event.kv ?? emptyWireKv());
          return {
            type: event.type === 'DELETE' || event.type === 1 ? 'delete' : 'put',
            key: kv.key,
            value: kv.value,
            modRevision: kv.modRevision,
            createRevision: kv.createRevision,
            version: kv.version,
          };
        });
        const revision = Math.max(...events.map((event) => event.modRevision));
        this.nextRequest = revision + 1;
        this.queue.push({ events, revision });
        this.wakePump?.();
        if (this.queue.length >= WATCH_MAX_QUEUED_BATCHES && !this.paused) {
          this.paused = true;
          stream.pause();
        }
      });
      stream.on('error', () => finish());
      stream.on('end', () => finish());
      stream.write({
        createRequest: {
          key: this.options.start,
          rangeEnd: this.options.end,
          startRevision: String(this.nextRequest ?? 0),
          progressNotify: true,
        },
      });
    });
    return established;
  }

  private async pump(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const batch = this.queue.shift();
      if (batch === undefined) {
        await new Promise<void>((resolve) => {
          this.wakePump = resolve;
          if (this.closed || this.queue.length > 0) resolve();
        });
        this.wakePump = undefined;
        continue;
      }
      await this.options.handler(batch);
      this.delivered = batch.revision;
      if (this.paused && this.queue.length <= WATCH_MAX_QUEUED_BATCHES / 2) {
        this.paused = false;
        this.stream?.resume();
      }
    }
  }
}

function emptyWireKv() {
  return {
    key: Buffer.alloc(0),
    createRevision: '0',
    modRevision: '0',
    version: '0',
    value: Buffer.alloc(0),
    lease: '0',
  };
}
