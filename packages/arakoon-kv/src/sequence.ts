import { isShaleError } from '@shale/common';
import { SEQUENCE_MAX_ATTEMPTS } from './constants.js';
import { describeKey, KvErrorCode, kvError } from './errors.js';
import type { Bytes, CallOptions, KvStore, SequenceRange } from './kv-store.js';
import { ifUnchanged } from './txn-helpers.js';

/** A counter's value: the last number handed out, as decimal ASCII (readable with etcdctl). */
export function decodeCounter(key: Bytes, value: Buffer): number {
  const text = value.toString('latin1');
  const last = Number(text);
  if (!/^[0-9]{1,16}$/.test(text) || !Number.isSafeInteger(last)) {
    throw kvError(
      KvErrorCode.BadValue,
      `sequence ${describeKey(key)} holds ${JSON.stringify(text)}, not a counter`,
    );
  }
  return last;
}

/**
 * Sequence allocation by compare-and-swap on the counter's mod revision, the same on every
 * engine. Contention retries; an unknown outcome also retries, which may skip numbers (the
 * lost write, if it lands later, only advanced the counter) but never hands one out twice.
 */
export async function allocateSequence(
  kv: KvStore,
  key: Bytes,
  count: number,
  options: CallOptions,
): Promise<SequenceRange> {
  if (!Number.isSafeInteger(count) || count < 1) {
    throw kvError(
      KvErrorCode.BadRequest,
      `allocate count must be a whole number >= 1, got ${count}`,
    );
  }
  let lastError: unknown;
  for (let attempt = 0; attempt < SEQUENCE_MAX_ATTEMPTS; attempt++) {
    const current = await kv.get(key, options);
    const last = current === undefined ? 0 : decodeCounter(key, current.value);
    const next = last + count;
    if (!Number.isSafeInteger(next)) {
      throw kvError(KvErrorCode.BadRequest, `sequence ${describeKey(key)} would pass 2^53`);
    }
    try {
      const result = await kv.txn(
        {
          compares: [ifUnchanged(key, current)],
          success: [{ type: 'put', key, value: Buffer.from(String(next), 'latin1') }],
        },
        options,
      );
      if (result.succeeded) return { first: last + 1, count };
    } catch (err) {
      if (!isShaleError(err, KvErrorCode.OutcomeUnknown)) throw err;
      lastError = err;
    }
  }
  throw kvError(
    KvErrorCode.TxnFailed,
    `sequence ${describeKey(key)}: no allocation after ${SEQUENCE_MAX_ATTEMPTS} contended attempts`,
    { cause: lastError },
  );
}
