import { createCipheriv, createDecipheriv } from 'node:crypto';
import { assert } from '@shale/common';
import { GCM_NONCE_BYTES, GCM_TAG_BYTES, KEY_BYTES, NONCE_PREFIX_BYTES } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';

/**
 * AES-256-GCM per block.
 *
 * Nonce (12 bytes) = the chunk's 8 random bytes || u32 BE block index. A nonce must never
 * repeat under one key: the block index makes it unique inside a chunk, the random prefix
 * across chunks (rewrites of the same object included). With random 64-bit prefixes a key
 * should protect fewer than 2^32 chunks (NIST SP 800-38D's bound for random nonces): 64 PiB
 * of 16 MiB chunks. Rotate keys well before that.
 *
 * AAD = caller's object identity (namespace + object name) || u32 chunk index || u32 block
 * index || u32 storedLength-with-flag. A block is thus bound to its place: moving a block,
 * a fragment or a chunk elsewhere, or flipping the table's "compressed" flag or length,
 * fails the tag. The table's offsets are not in the AAD; a wrong offset reads other bytes,
 * which fail the tag too.
 */
export interface BlockCipherContext {
  readonly key: Buffer;
  readonly noncePrefix: Buffer;
  readonly aad: Buffer;
  readonly chunkIndex: number;
}

function nonceFor(ctx: BlockCipherContext, blockIndex: number): Buffer {
  assert(ctx.noncePrefix.length === NONCE_PREFIX_BYTES, 'nonce prefix must be 8 bytes');
  const nonce = Buffer.allocUnsafe(GCM_NONCE_BYTES);
  ctx.noncePrefix.copy(nonce, 0);
  nonce.writeUInt32BE(blockIndex, NONCE_PREFIX_BYTES);
  return nonce;
}

function aadFor(ctx: BlockCipherContext, blockIndex: number, storedLengthField: number): Buffer {
  const tail = Buffer.allocUnsafe(12);
  tail.writeUInt32BE(ctx.chunkIndex, 0);
  tail.writeUInt32BE(blockIndex, 4);
  tail.writeUInt32BE(storedLengthField, 8);
  return Buffer.concat([ctx.aad, tail]);
}

/** Encrypts one block payload; returns the ciphertext (same length) and the 16-byte tag. */
export function encryptBlock(
  ctx: BlockCipherContext,
  blockIndex: number,
  storedLengthField: number,
  payload: Buffer,
): { ciphertext: Buffer; tag: Buffer } {
  assert(ctx.key.length === KEY_BYTES, 'AES-256 needs a 32-byte key');
  const cipher = createCipheriv('aes-256-gcm', ctx.key, nonceFor(ctx, blockIndex), {
    authTagLength: GCM_TAG_BYTES,
  });
  cipher.setAAD(aadFor(ctx, blockIndex, storedLengthField));
  const first = cipher.update(payload);
  const last = cipher.final();
  const ciphertext = last.length === 0 ? first : Buffer.concat([first, last]);
  return { ciphertext, tag: cipher.getAuthTag() };
}

/** Decrypts and authenticates one block; a bad tag is PROXY_CORRUPT and no bytes come out. */
export function decryptBlock(
  ctx: BlockCipherContext,
  blockIndex: number,
  storedLengthField: number,
  ciphertext: Buffer,
  tag: Buffer,
  where: string,
): Buffer {
  assert(ctx.key.length === KEY_BYTES, 'AES-256 needs a 32-byte key');
  const decipher = createDecipheriv('aes-256-gcm', ctx.key, nonceFor(ctx, blockIndex), {
    authTagLength: GCM_TAG_BYTES,
  });
  decipher.setAAD(aadFor(ctx, blockIndex, storedLengthField));
  decipher.setAuthTag(tag);
  const first = decipher.update(ciphertext);
  try {
    const last = decipher.final();
    return last.length === 0 ? first : Buffer.concat([first, last]);
  } catch (err) {
    first.fill(0);
    throw proxyError(
      ProxyErrorCode.Corrupt,
      `${where}: AES-GCM tag mismatch (damaged or misplaced block)`,
      {
        cause: err,
      },
    );
  }
}
