import { OBJECT_NAME_MAX_BYTES } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';

/**
 * Names and keys of namespaces and objects: in the KV (arakoon-kv's project key layout) and
 * on the OSDs.
 *
 *   KV   /shale/namespaces/<ns>           namespace record (JSON)
 *        /shale/ns/<ns>/epoch             writer epoch, decimal ASCII
 *        /shale/ns/<ns>/m/<object-name>   manifest (manifest.ts)
 *        /shale/ns/<ns>/seq/version       object version counter (kv.allocate)
 *   OSD  <ns>/<version: 16 lowercase hex>/<chunk index>/<fragment index>     (ASCII)
 *
 * Every put of an object allocates a new version, so fragment keys are never reused while
 * the namespace lives: a fragment's bytes never change (the fragment cache relies on it).
 */

const NAMESPACE_ID = /^[0-9a-f]{32}$/;

/** A namespace id is 32 lowercase hex characters (a uuid without dashes): PROXY_BAD_NAMESPACE. */
export function checkNamespaceId(nsId: string): void {
  if (!NAMESPACE_ID.test(nsId)) {
    throw proxyError(
      ProxyErrorCode.BadNamespace,
      `namespace id ${JSON.stringify(nsId.slice(0, 80))} must be 32 lowercase hex characters`,
    );
  }
}

/**
 * An object name is 1..512 bytes of printable ASCII (0x20..0x7e), not starting with '/'.
 * No control bytes, no bytes >= 0x80 (so a name is its own key, byte for byte, and sorts the
 * same everywhere). '/' inside a name is fine: `sco/0000000000000123`. PROXY_BAD_OBJECT_NAME.
 */
export function checkObjectName(name: string): void {
  let ok = name.length >= 1 && name.length <= OBJECT_NAME_MAX_BYTES && name[0] !== '/';
  for (let i = 0; ok && i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (code < 0x20 || code > 0x7e) ok = false;
  }
  if (!ok) {
    throw proxyError(
      ProxyErrorCode.BadObjectName,
      `object name ${JSON.stringify(name.slice(0, 80))} must be 1..${OBJECT_NAME_MAX_BYTES} bytes of printable ASCII not starting with '/'`,
    );
  }
}

export const nsKeys = {
  record: (nsId: string) => Buffer.from(`/shale/namespaces/${nsId}`),
  recordsPrefix: () => Buffer.from('/shale/namespaces/'),
  /** Everything of the namespace in the shard: epoch, owner, manifests, sequences. */
  prefix: (nsId: string) => Buffer.from(`/shale/ns/${nsId}/`),
  epoch: (nsId: string) => Buffer.from(`/shale/ns/${nsId}/epoch`),
  manifest: (nsId: string, name: string) => Buffer.from(`/shale/ns/${nsId}/m/${name}`, 'latin1'),
  manifestsPrefix: (nsId: string) => Buffer.from(`/shale/ns/${nsId}/m/`),
  versionSeq: (nsId: string) => Buffer.from(`/shale/ns/${nsId}/seq/version`),
};

export function versionHex(version: number): string {
  return version.toString(16).padStart(16, '0');
}

/** The OSD key of one fragment. */
export function fragmentKey(
  nsId: string,
  version: number,
  chunkIndex: number,
  fragmentIndex: number,
): Buffer {
  return Buffer.from(`${nsId}/${versionHex(version)}/${chunkIndex}/${fragmentIndex}`, 'latin1');
}

/** The OSD key prefix of every fragment of a namespace. */
export function namespaceFragmentPrefix(nsId: string): Buffer {
  return Buffer.from(`${nsId}/`, 'latin1');
}

export function encodeEpoch(epoch: number): Buffer {
  return Buffer.from(String(epoch), 'latin1');
}

/** Parses a stored epoch (decimal ASCII); undefined when it is not one. */
export function decodeEpoch(bytes: Uint8Array): number | undefined {
  const text = Buffer.from(bytes).toString('latin1');
  if (!/^[1-9][0-9]{0,15}$/.test(text)) return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
}
