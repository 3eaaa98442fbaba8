import { ShaleError } from '@shale/common';

/** The proxy codec's stable error codes. */
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
} as const;

export type ProxyErrorCode = (typeof ProxyErrorCode)[keyof typeof ProxyErrorCode];

export function proxyError(
  code: ProxyErrorCode,
  message: string,
  options: { cause?: unknown; details?: Record<string, string> } = {},
): ShaleError {
  return new ShaleError(code, message, options);
}
