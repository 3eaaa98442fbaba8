import { randomBytes } from 'node:crypto';
import { AssertionFailure, assert, errorMessage, isShaleError } from '@shale/common';
import { API_OPERATIONS_KEPT_MAX, API_OPERATIONS_RUNNING_MAX } from './constants.js';
import { ApiErrorCode, apiError } from './errors.js';
import type { Operation, OperationKind } from './schemas.js';

type OperationResult = NonNullable<Operation['result']>;

export interface OperationStoreOptions {
  readonly keptMax?: number;
  readonly runningMax?: number;
  readonly now?: () => number;
  readonly log?: (line: string) => void;
  /** Told when an operation finishes (metrics). */
  readonly onFinished?: (operation: Operation) => void;
}

/**
 * Long operations (delete, clone, rollback, sync, scrub) run in the background; the API
 * answers 202 with the operation, which clients poll until it is finished:
 *
 *   running ──work resolved──> succeeded (result, when the kind has one)
 *      └─────work rejected───> failed (error: the same {code, message} a request gets)
 *
 * Bounded: at most `runningMax` run at once (one more is refused with API_BUSY), and at
 * most `keptMax` are kept; a new one evicts the oldest finished one. Memory only: the list
 * is gone when the daemon restarts (the work itself is in the volumedriver and goes on).
 */
export class OperationStore {
  /** Insertion order is creation order. */
  private readonly operations = new Map<string, Operation>();
  private readonly inFlight = new Set<Promise<void>>();
  private running = 0;
  private readonly keptMax: number;
  private readonly runningMax: number;
  private readonly now: () => number;
  private readonly log: (line: string) => void;
  private readonly onFinished: (operation: Operation) => void;

  constructor(options: OperationStoreOptions = {}) {
    this.keptMax = options.keptMax ?? API_OPERATIONS_KEPT_MAX;
    this.runningMax = options.runningMax ?? API_OPERATIONS_RUNNING_MAX;
    assert(this.runningMax < this.keptMax, 'running operations must fit in the kept list');
    this.now = options.now ?? Date.now;
    this.log = options.log ?? (() => undefined);
    this.onFinished = options.onFinished ?? (() => undefined);
  }

  get runningCount(): number {
    return this.running;
  }

  /** API_BUSY when runningMax operations run already (check before any side effect). */
  checkCapacity(): void {
    if (this.running >= this.runningMax) {
      throw apiError(
        ApiErrorCode.Busy,
        `${this.running} operations are running (at most ${this.runningMax}); retry later`,
      );
    }
  }

  /** Starts `work` in the background and returns the operation as it is now (running). */
  start(
    kind: OperationKind,
    target: string,
    work: () => Promise<OperationResult | undefined>,
  ): Operation {
    this.checkCapacity();
    const id = randomBytes(16).toString('hex');
    const operation: Operation = { id, kind, target, state: 'running', createdAtMs: this.now() };
    this.evict();
    this.operations.set(id, operation);
    this.running++;
    const done = Promise.resolve()
      .then(work)
      .then(
        (result) =>
          this.finish(id, { state: 'succeeded', ...(result === undefined ? {} : { result }) }),
        (err: unknown) => {
          if (err instanceof AssertionFailure) {
            // A programmer error: crash loudly, as everywhere in Shale.
            setImmediate(() => {
              throw err;
            });
          }
          const error = isShaleError(err)
            ? { code: err.code, message: err.message }
            : { code: ApiErrorCode.Internal, message: 'internal error; see the API log' };
          if (!isShaleError(err))
            this.log(`operation ${id} (${kind} ${target}): ${errorMessage(err)}`);
          this.finish(id, { state: 'failed', error });
        },
      )
      .finally(() => {
        this.inFlight.delete(done);
      });
    this.inFlight.add(done);
    return operation;
  }

  get(id: string): Operation {
    const operation = this.operations.get(id);
    if (operation === undefined) {
      throw apiError(
        ApiErrorCode.OperationNotFound,
        `no operation ${id} (never started, or dropped: the API keeps the last ${this.keptMax})`,
      );
    }
    return operation;
  }

  /** Newest first. */
  list(): Operation[] {
    return [...this.operations.values()].reverse();
  }

  /** Waits until the running operations finish, for at most `graceMs`. */
  async drain(graceMs: number): Promise<void> {
    if (this.inFlight.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inFlight]),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
  }

  private finish(id: string, outcome: Pick<Operation, 'state' | 'result' | 'error'>): void {
    this.running--;
    const current = this.operations.get(id);
    assert(current !== undefined, 'a running operation is never evicted');
    const finished: Operation = {
      ...current,
      state: outcome.state,
      finishedAtMs: this.now(),
      ...(outcome.result === undefined ? {} : { result: outcome.result }),
      ...(outcome.error === undefined ? {} : { error: outcome.error }),
    };
    this.operations.set(id, finished);
    this.onFinished(finished);
  }

  /** Makes room for one more: drops the oldest finished operations past keptMax - 1. */
  private evict(): void {
    if (this.operations.size < this.keptMax) return;
    for (const [id, operation] of this.operations) {
      if (this.operations.size < this.keptMax) return;
      if (operation.state !== 'running') this.operations.delete(id);
    }
  }
}
