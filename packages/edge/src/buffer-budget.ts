/**
 * The memory budget of one NBD server: the bytes every connection holds together, that is
 * payload bytes in flight (write payloads being received or written, reads being answered)
 * plus reply bytes queued in a socket and not yet taken by the kernel. Per-connection limits
 * (constants.ts) bound one client; this bounds their sum, so a crowd of clients that send
 * large READs and never read the replies cannot take the edge's memory.
 *
 * A connection asks before it reads each request (admit(), with the request's payload
 * size); refused, it stops reading its socket until bytes are released somewhere. Nothing
 * already accepted is dropped or failed. The rules, in order:
 *
 *   1. Nothing is held at all: admitted, whatever its size (one request larger than the
 *      budget runs alone; there is no deadlock).
 *   2. A payload that would take the total above the limit: wait ('full').
 *   3. A connection holding nothing: admitted (a client between requests always gets in
 *      while there is room).
 *   4. A connection holding bytes stays within its share, limit / (holders + 1), and the
 *      total it may raise stays one share below the limit ('share'). The share kept free is
 *      for connections that hold nothing: a slow reader stops at its share, before the
 *      budget is full, and a client that reads its replies finds room.
 *
 * The total never exceeds max(limit, the one request of rule 1), plus the reply headers of
 * requests in flight (16-28 B each; a read's payload is counted when it is admitted). A
 * crowd of slow readers each holding one request can still fill the budget (rule 3 cannot
 * tell a new slow reader from a new good client); then new requests wait, none fails, until
 * the slow readers read or leave. NBD_MAX_CONNECTIONS bounds that crowd.
 */
import { assert } from '@shale/common';

/** Why a connection waits: the budget is full, or the connection holds its share. */
export type BudgetWaitReason = 'full' | 'share';

export interface BufferBudgetStats {
  readonly limitBytes: number;
  /** Held now by every connection together. */
  readonly bufferedBytes: number;
  /** The most ever held at once. */
  readonly peakBytes: number;
  /** Connections holding any bytes. */
  readonly holders: number;
  /** Connections waiting for the budget now. */
  readonly waiting: number;
  /** Times a connection stopped reading for the budget, by reason. */
  readonly pauses: Readonly<Record<BudgetWaitReason, number>>;
}

/** One connection's part of the budget. */
export class BudgetAccount {
  heldBytes = 0;
  /** Set while the connection waits for the budget. */
  waiting: BudgetWaitReason | undefined;

  constructor(
    readonly budget: BufferBudget,
    /** Called when bytes were released and the connection may try again. */
    readonly wake: () => void,
  ) {}

  /** May a request carrying costBytes of payload be read now? If not, wake() comes later. */
  admit(costBytes: number): boolean {
    return this.budget.admit(this, costBytes);
  }

  acquire(bytes: number): void {
    this.budget.change(this, bytes);
  }

  release(bytes: number): void {
    this.budget.change(this, -bytes);
  }

  /** The connection is closed: it waits no more (what it holds is released as it settles). */
  stopWaiting(): void {
    this.budget.forget(this);
  }
}

export class BufferBudget {
  private usedBytes = 0;
  private peak = 0;
  private holders = 0;
  private readonly waiters = new Set<BudgetAccount>();
  private wakeScheduled = false;
  private readonly pauses: Record<BudgetWaitReason, number> = { full: 0, share: 0 };

  constructor(
    readonly limitBytes: number,
    private readonly onPause: (reason: BudgetWaitReason) => void = () => undefined,
  ) {
    assert(
      Number.isSafeInteger(limitBytes) && limitBytes > 0,
      `a buffer budget of ${limitBytes} bytes`,
    );
  }

  account(wake: () => void): BudgetAccount {
    return new BudgetAccount(this, wake);
  }

  get bufferedBytes(): number {
    return this.usedBytes;
  }

  stats(): BufferBudgetStats {
    return {
      limitBytes: this.limitBytes,
      bufferedBytes: this.usedBytes,
      peakBytes: this.peak,
      holders: this.holders,
      waiting: this.waiters.size,
      pauses: { ...this.pauses },
    };
  }

  admit(account: BudgetAccount, costBytes: number): boolean {
    const reason = this.refusal(account, costBytes);
    if (reason === undefined) {
      if (account.waiting !== undefined) this.forget(account);
      return true;
    }
    if (account.waiting === undefined) {
      this.pauses[reason] += 1;
      this.onPause(reason);
    }
    account.waiting = reason;
    this.waiters.add(account);
    return false;
  }

  private refusal(account: BudgetAccount, costBytes: number): BudgetWaitReason | undefined {
    const used = this.usedBytes;
    if (used === 0) return undefined;
    if (used + costBytes > this.limitBytes) return 'full';
    if (account.heldBytes === 0) return undefined;
    const shareBytes = this.limitBytes / (this.holders + 1);
    if (account.heldBytes + costBytes > shareBytes) return 'share';
    if (used + costBytes > this.limitBytes - shareBytes) return 'share';
    return undefined;
  }

  change(account: BudgetAccount, deltaBytes: number): void {
    if (deltaBytes === 0) return;
    const before = account.heldBytes;
    const after = before + deltaBytes;
    assert(after >= 0, `a connection would hold ${after} bytes`);
    account.heldBytes = after;
    this.usedBytes += deltaBytes;
    if (before === 0) this.holders += 1;
    if (after === 0) this.holders -= 1;
    if (this.usedBytes > this.peak) this.peak = this.usedBytes;
    if (deltaBytes < 0 && this.waiters.size > 0) this.scheduleWake();
  }

  forget(account: BudgetAccount): void {
    account.waiting = undefined;
    this.waiters.delete(account);
  }

  /**
   * Lets every waiting connection try again, oldest first, once per event-loop turn however
   * many releases happened in it (releases are per reply; waking is per turn).
   */
  private scheduleWake(): void {
    if (this.wakeScheduled) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      for (const account of [...this.waiters]) {
        if (this.waiters.has(account)) account.wake();
      }
    });
  }
}
