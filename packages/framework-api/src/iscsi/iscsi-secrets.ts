/**
 * CHAP secrets are never stored in the clear: each is sealed with AES-256-GCM under the
 * cluster's iSCSI key, a file of 32 random bytes (hex) that only root can read (mode 0600,
 * made on first use like the API's token). The API seals when a target is created; the
 * process that drives tgtd opens them when it configures an account. Both need the same
 * key file: `shale up` puts it at DATA/iscsi-secrets.key; a tgt host elsewhere gets a copy.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ShaleError } from '@shale/common';
import { loadOrCreateToken } from '../token-file.js';
import { IscsiErrorCode } from './iscsi-target-spec.js';

const ALGORITHM = 'aes-256-gcm';
const IV_BYTES = 12;

/** A sealed secret as stored: base64 of the nonce, the ciphertext and the GCM tag. */
export interface SealedSecret {
  readonly alg: typeof ALGORITHM;
  readonly iv: string;
  readonly data: string;
  readonly tag: string;
}

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** The key from `path`, created (0600, O_EXCL) when the file does not exist. */
  static async open(path: string): Promise<SecretBox> {
    const { token } = await loadOrCreateToken(path);
    return new SecretBox(Buffer.from(token, 'hex'));
  }

  /** For tests. */
  static fromKey(key: Buffer): SecretBox {
    return new SecretBox(Buffer.from(key));
  }

  /** `context` (the target's IQN and which account) is bound in: a sealed value moved elsewhere does not open. */
  seal(secret: string, context: string): SealedSecret {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv(ALGORITHM, this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const data = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
    return {
      alg: ALGORITHM,
      iv: iv.toString('base64'),
      data: data.toString('base64'),
      tag: cipher.getAuthTag().toString('base64'),
    };
  }

  unseal(sealed: SealedSecret, context: string): string {
    try {
      if (sealed.alg !== ALGORITHM) throw new Error(`unknown algorithm ${String(sealed.alg)}`);
      const decipher = createDecipheriv(ALGORITHM, this.key, Buffer.from(sealed.iv, 'base64'));
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
      return Buffer.concat([
        decipher.update(Buffer.from(sealed.data, 'base64')),
        decipher.final(),
      ]).toString('utf8');
    } catch (err) {
      throw new ShaleError(
        IscsiErrorCode.BadRecord,
        `the CHAP secret of ${context} does not open with this key file (another cluster's key, or a damaged record)`,
        { cause: err },
      );
    }
  }
}
