import type * as grpc from '@grpc/grpc-js';
import {
  ETCD_RETRY_BACKOFF_MAX_MS,
  ETCD_RETRY_BACKOFF_MS,
  WATCH_MAX_QUEUED_BATCHES,
} from './constants.js';
import { KvErrorCode, kvError } from './errors.js';
import type { WireWatchResponse } from './etcd-proto.js';
import { fromWire, toRevision } from './etcd-wire.js';
import type { WatchEvent, WatchHandler } from './kv-store.js';
import { ResumingWatcher } from './resuming-watcher.js';

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
 * One etcd watch that survives its connection (the loop, queue and pump: ResumingWatcher);
 * a stream breaks on error, end, or a cancel that is not compaction.
 *
 * It remembers the revision after the last event it received and re-creates the etcd
 * watch from there on any member, so a dropped connection, a dead member or a leader
 * change neither loses nor repeats an event (etcd never splits one revision across
 * responses unless asked to fragment, which we do not). Only compaction past that
 * revision ends it (KV_COMPACTED). Received batches wait in a bounded queue; when it is
 * full the stream is paused, so a slow handler pushes back on etcd instead of on memory.
 */
export class EtcdWatcher extends ResumingWatcher {
  constructor(private readonly options: EtcdWatcherOptions) {
    super({
      fromRevision: options.fromRevision,
      handler: options.handler,
      onEnd: options.onEnd,
      backoff: { initialMs: ETCD_RETRY_BACKOFF_MS, maxMs: ETCD_RETRY_BACKOFF_MAX_MS },
      maxQueuedBatches: WATCH_MAX_QUEUED_BATCHES,
      maxQueuedBytes: Number.POSITIVE_INFINITY,
    });
  }

  protected override streamBroke(): void {
    this.options.onStreamFailed();
  }

  /** One stream's life. Resolves (true if it got as far as "created") when it breaks. */
  protected async runStream(): Promise<boolean> {
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
    this.attach(stream);
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
          this.created(response.header === null ? undefined : toRevision(response.header.revision));
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
        // Batches are bounded by count only here (bytes: Infinity), as before.
        this.received(stream, { events, revision }, 0);
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
