import type * as grpc from '@grpc/grpc-js';
import { REMOTE_WATCH_MAX_QUEUED_BYTES, WATCH_MAX_QUEUED_BATCHES } from './constants.js';
import {
  eventBytes,
  eventFromWire,
  type WireWatchBatch,
  type WireWatchRequest,
  wireNumber,
} from './kv-grpc.js';
import type { WatchEvent, WatchHandler } from './kv-store.js';
import { watchStreamFailure } from './remote-errors.js';
import { ResumingWatcher } from './resuming-watcher.js';

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
export class RemoteWatcher extends ResumingWatcher {
  /** Streams opened so far (the first, then one per resume). */
  streamsOpened = 0;

  constructor(private readonly options: RemoteWatcherOptions) {
    super({
      fromRevision: options.fromRevision,
      handler: options.handler,
      onEnd: options.onEnd,
      backoff: {
        initialMs: options.reconnect.initialBackoffMs,
        maxMs: options.reconnect.maxBackoffMs,
      },
      maxQueuedBatches: WATCH_MAX_QUEUED_BATCHES,
      maxQueuedBytes: REMOTE_WATCH_MAX_QUEUED_BYTES,
    });
  }

  /** One stream's life. Resolves (true if it got as far as "created") when it breaks. */
  protected runStream(): Promise<boolean> {
    const stream = this.options.openStream({
      prefix: this.options.prefix,
      fromRevision: this.nextRequest ?? 0,
    });
    this.streamsOpened++;
    this.attach(stream);
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
            this.created(
              this.nextRequest === undefined
                ? wireNumber(message.revision, 'watch start revision')
                : undefined,
            );
            return;
          }
          for (const wire of message.events) {
            const event = eventFromWire(wire);
            partial.push(event);
            partialBytes += eventBytes(event);
          }
          if (message.more) return;
          const revision = wireNumber(message.revision, 'watch batch revision');
          this.received(stream, { events: partial, revision }, partialBytes);
          partial = [];
          partialBytes = 0;
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
}
