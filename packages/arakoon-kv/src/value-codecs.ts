import { errorMessage } from '@shale/common';
import { KvErrorCode, kvError } from './errors.js';

/**
 * Value helpers. The engines store bytes; these turn typed records into bytes and back,
 * and turn a value that does not decode into KV_BAD_VALUE instead of a raw SyntaxError.
 */
export interface ValueCodec<T> {
  encode(value: T): Buffer;
  decode(bytes: Uint8Array): T;
}

/**
 * JSON. `validate` checks the shape of what was read (return the typed value or throw);
 * without it decode trusts the stored JSON.
 */
export function jsonCodec<T>(validate?: (value: unknown) => T): ValueCodec<T> {
  return {
    encode: (value) => Buffer.from(JSON.stringify(value), 'utf8'),
    decode: (bytes) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.from(bytes).toString('utf8'));
      } catch (err) {
        throw kvError(KvErrorCode.BadValue, `value is not JSON: ${errorMessage(err)}`, {
          cause: err,
        });
      }
      if (validate === undefined) return parsed as T;
      try {
        return validate(parsed);
      } catch (err) {
        throw kvError(KvErrorCode.BadValue, `value has the wrong shape: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    },
  };
}

/** The part of a protobufjs message type (or generated static code) that the codec needs. */
export interface ProtobufType<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(bytes: Uint8Array): T;
}

/** Protobuf, for manifests and other records that must stay small. */
export function protobufCodec<T>(type: ProtobufType<T>): ValueCodec<T> {
  return {
    encode: (value) => {
      const bytes = type.encode(value).finish();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    decode: (bytes) => {
      try {
        return type.decode(bytes);
      } catch (err) {
        throw kvError(KvErrorCode.BadValue, `value is not a valid message: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    },
  };
}
