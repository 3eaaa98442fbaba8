import { describeKey, KvErrorCode, kvError } from './errors.js';
import type { Bytes, Compare, KeyValue, TxnResult } from './kv-store.js';

/** The key exists (version > 0). */
export function ifExists(key: Bytes): Compare {
  return { key, target: 'version', op: 'greater', number: 0 };
}

/** The key does not exist (version = 0). */
export function ifAbsent(key: Bytes): Compare {
  return { key, target: 'version', op: 'equal', number: 0 };
}

/** The key is unchanged since it was read (or still absent when `item` is undefined). */
export function ifUnchanged(key: Bytes, item: KeyValue | undefined): Compare {
  return { key, target: 'modRevision', op: 'equal', number: item?.modRevision ?? 0 };
}

export function ifValueEquals(key: Bytes, value: Bytes): Compare {
  return { key, target: 'value', op: 'equal', value };
}

/** Throws KV_TXN_FAILED unless the txn's compares held. */
export function requireSucceeded(result: TxnResult, what: string, key?: Bytes): TxnResult {
  if (!result.succeeded) {
    const where = key === undefined ? '' : ` on ${describeKey(key)}`;
    throw kvError(KvErrorCode.TxnFailed, `${what}${where}: the txn's compares did not hold`, {
      details: { revision: String(result.revision) },
    });
  }
  return result;
}
