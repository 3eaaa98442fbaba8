import { compress as zstdCompress, decompress as zstdDecompress } from '@mongodb-js/zstd';
import { unreachable } from '@shale/common';
import { compress as lz4Compress, uncompress as lz4Uncompress } from 'lz4-napi';
import { COMPRESSION_MIN_SAVING_DIVISOR, ZSTD_LEVEL } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';
import type { Compression } from './preset.js';

/**
 * Per-block compression. Both libraries are napi-rs addons with prebuilt binaries shipped
 * as npm packages (no install script) and run asynchronously on libuv's thread pool:
 * lz4-napi (lz4_flex block format, 4-byte size prefix) and @mongodb-js/zstd 1.x (zstd frames).
 *
 * Returns the compressed bytes only if they save at least 1/8 of the block; otherwise
 * undefined and the block is stored raw (random or already compressed data costs nothing
 * but the attempt, and a read of a raw block needs no decompression).
 */
export async function compressBlock(
  compression: Compression,
  block: Buffer,
): Promise<Buffer | undefined> {
  let out: Buffer;
  switch (compression) {
    case 'none':
      return undefined;
    case 'lz4':
      out = await lz4Compress(block);
      break;
    case 'zstd':
      out = await zstdCompress(block, ZSTD_LEVEL);
      break;
    default:
      return unreachable(compression, 'compression');
  }
  const limit = block.length - Math.floor(block.length / COMPRESSION_MIN_SAVING_DIVISOR);
  return out.length <= limit ? out : undefined;
}

/** Inverse of compressBlock; the output must be exactly plainSizeBytes or it is PROXY_CORRUPT. */
export async function decompressBlock(
  compression: Compression,
  payload: Buffer,
  plainSizeBytes: number,
  where: string,
): Promise<Buffer> {
  let out: Buffer;
  try {
    switch (compression) {
      case 'none':
        throw proxyError(
          ProxyErrorCode.Corrupt,
          `${where}: block marked compressed in a chunk without compression`,
        );
      case 'lz4':
        out = await lz4Uncompress(payload);
        break;
      case 'zstd':
        out = await zstdDecompress(payload);
        break;
      default:
        return unreachable(compression, 'compression');
    }
  } catch (err) {
    throw proxyError(ProxyErrorCode.Corrupt, `${where}: ${compression} block does not decompress`, {
      cause: err,
    });
  }
  if (out.length !== plainSizeBytes) {
    throw proxyError(
      ProxyErrorCode.Corrupt,
      `${where}: block decompressed to ${out.length} bytes, expected ${plainSizeBytes}`,
    );
  }
  return out;
}
