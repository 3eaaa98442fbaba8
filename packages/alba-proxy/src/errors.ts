import { ShaleError } from '@shale/common';

/** The proxy's stable error codes (codec, registry, namespaces, engine). */
export const ProxyErrorCode = {
  /** A preset (JSON) is malformed or out of bounds; the message names the field. */
  BadPreset: 'PROXY_BAD_PRESET',
  /** No policy of the preset can be satisfied by the live OSDs now. */
  NoPolicy: 'PROXY_NO_POLICY',
  /** Bad arguments to the codec (range past the end, wrong fragment count, ...). */
  BadArgument: 'PROXY_BAD_ARGUMENT',
  /** Fewer than k usable fragments of a chunk: the data cannot be rebuilt now. */
  NotEnoughFragments: 'PROXY_NOT_ENOUGH_FRAGMENTS',
  /** Stored bytes fail their check (GCM tag, CRC32C, block table, decompression); never returned. */
  Corrupt: 'PROXY_CORRUPT',
  /** Key provider: the key id is unknown. */
  KeyNotFound: 'PROXY_KEY_NOT_FOUND',
  /** Key provider: the key file can be read by others than its owner. */
  KeyFileInsecure: 'PROXY_KEY_FILE_INSECURE',
  /** Key provider: the key file is missing (and creation was not asked) or malformed. */
  KeyFileMissing: 'PROXY_KEY_FILE_MISSING',
  KeyFileBad: 'PROXY_KEY_FILE_BAD',
  /** A stored manifest does not decode (version byte, CRC32C, truncation, bad field). */
  CorruptManifest: 'PROXY_CORRUPT_MANIFEST',
  /** A namespace id is not 32 lowercase hex characters. */
  BadNamespace: 'PROXY_BAD_NAMESPACE',
  /** An object name breaks the naming rule (1..512 printable ASCII bytes, no leading '/'). */
  BadObjectName: 'PROXY_BAD_OBJECT_NAME',
  /** A backend, OSD or preset id/name/argument of the registry is malformed. */
  BadId: 'PROXY_BAD_ID',
  NamespaceExists: 'PROXY_NAMESPACE_EXISTS',
  NamespaceNotFound: 'PROXY_NAMESPACE_NOT_FOUND',
  /** The namespace is being deleted: no writes, no epoch bumps. */
  NamespaceDeleting: 'PROXY_NAMESPACE_DELETING',
  /** The namespace belongs to another backend than this proxy engine's. */
  WrongBackend: 'PROXY_WRONG_BACKEND',
  ObjectNotFound: 'PROXY_OBJECT_NOT_FOUND',
  /** The caller's writer epoch is not the namespace's epoch: a newer owner fenced it. */
  Fenced: 'PROXY_FENCED',
  /** Fewer than c fragments of some chunk could be stored: nothing was acknowledged. */
  NotEnoughOsds: 'PROXY_NOT_ENOUGH_OSDS',
  /** A slice outside the object, or too many slices or bytes in one call. */
  BadRange: 'PROXY_BAD_RANGE',
  BackendExists: 'PROXY_BACKEND_EXISTS',
  BackendNotFound: 'PROXY_BACKEND_NOT_FOUND',
  OsdExists: 'PROXY_OSD_EXISTS',
  OsdNotFound: 'PROXY_OSD_NOT_FOUND',
  PresetExists: 'PROXY_PRESET_EXISTS',
  PresetNotFound: 'PROXY_PRESET_NOT_FOUND',
  /** An OSD needed for the operation (namespace deletion) did not answer; retry later. */
  OsdUnavailable: 'PROXY_OSD_UNAVAILABLE',
  /** Too many operations queued in this engine: back off and retry. */
  Busy: 'PROXY_BUSY',
  /** A manifest commit's outcome stayed unknown after re-reading and retrying. */
  CommitUnknown: 'PROXY_COMMIT_UNKNOWN',
  /** The engine was closed. */
  Closed: 'PROXY_CLOSED',
} as const;

export type ProxyErrorCode = (typeof ProxyErrorCode)[keyof typeof ProxyErrorCode];

export function proxyError(
  code: ProxyErrorCode,
  message: string,
  options: { cause?: unknown; details?: Record<string, string> } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}
