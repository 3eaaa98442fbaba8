/**
 * Option haggling: decoding option payloads (export names, info requests, meta-context
 * queries) and encoding option replies. Decoders return a typed value or a reason string;
 * they never throw on client bytes.
 */
import { NBD_META_QUERIES_MAX, NBD_STRING_MAX_BYTES } from './constants.js';
import {
  NBD_INFO_BLOCK_SIZE,
  type NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  type NBD_INFO_NAME,
  NBD_OPTION_REPLY_HEADER_BYTES,
  NBD_OPTION_REPLY_MAGIC,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from './nbd-protocol.js';

/** Decoded payload of NBD_OPT_INFO / NBD_OPT_GO. */
export interface InfoRequest {
  readonly name: string;
  readonly infoTypes: readonly number[];
}

/** Decoded payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: string };

const fail = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

/** A protocol string: valid UTF-8, no NUL, at most NBD_STRING_MAX_BYTES. */
function decodeString(bytes: Buffer, what: string): Decoded<string> {
  if (bytes.length > NBD_STRING_MAX_BYTES) {
    return fail(`${what} of ${bytes.length} bytes: at most ${NBD_STRING_MAX_BYTES}`);
  }
  const text = bytes.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(bytes)) return fail(`${what} is not valid UTF-8`);
  if (text.includes('\0')) return fail(`${what} contains NUL`);
  return { ok: true, value: text };
}

export function decodeExportName(data: Buffer): Decoded<string> {
  return decodeString(data, 'export name');
}

export function decodeInfoRequest(data: Buffer): Decoded<InfoRequest> {
  if (data.length < 6) return fail(`${data.length} bytes: an info request has at least 6`);
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return fail(`name length ${nameLength} overruns the option`);
  const name = decodeString(data.subarray(4, 4 + nameLength), 'export name');
  if (!name.ok) return name;
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) {
    return fail(`${count} info requests do not fill the ${data.length}-byte option exactly`);
  }
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i += 1) infoTypes.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { ok: true, value: { name: name.value, infoTypes } };
}

export function decodeMetaContextRequest(data: Buffer): Decoded<MetaContextRequest> {
  if (data.length < 8) return fail(`${data.length} bytes: a meta-context option has at least 8`);
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) return fail(`name length ${nameLength} overruns the option`);
  const name = decodeString(data.subarray(4, 4 + nameLength), 'export name');
  if (!name.ok) return name;
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  if (count > NBD_META_QUERIES_MAX)
    return fail(`${count} queries: at most ${NBD_META_QUERIES_MAX}`);
  const queries: string[] = [];
  for (let i = 0; i < count; i += 1) {
    if (at + 4 > data.length) return fail(`query ${i} overruns the option`);
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.length - at) return fail(`query ${i} of ${length} bytes overruns the option`);
    const query = decodeString(data.subarray(at, at + length), `query ${i}`);
    if (!query.ok) return query;
    queries.push(query.value);
    at += length;
  }
  if (at !== data.length) return fail(`${data.length - at} bytes after the last query`);
  return { ok: true, value: { name: name.value, queries } };
}

/** One option reply: magic, the option, the reply type, the payload length, the payload. */
export function optionReply(option: number, replyType: number, payload?: Buffer): Buffer {
  const length = payload?.length ?? 0;
  const out = Buffer.allocUnsafe(NBD_OPTION_REPLY_HEADER_BYTES + length);
  out.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(replyType >>> 0, 12);
  out.writeUInt32BE(length, 16);
  payload?.copy(out, NBD_OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** An error reply with a message for humans (truncated to the protocol's string limit). */
export function optionError(option: number, replyType: number, message: string): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > NBD_STRING_MAX_BYTES) text = text.subarray(0, NBD_STRING_MAX_BYTES);
  return optionReply(option, replyType, text);
}

/** NBD_REP_SERVER: u32 name length, name, then a description for humans. */
export function serverReply(option: number, name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const descriptionBytes = Buffer.from(description, 'utf8');
  const payload = Buffer.allocUnsafe(4 + nameBytes.length + descriptionBytes.length);
  payload.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(payload, 4);
  descriptionBytes.copy(payload, 4 + nameBytes.length);
  return optionReply(option, NBD_REP_SERVER, payload);
}

export function infoExportReply(option: number, sizeBytes: number, flags: number): Buffer {
  const payload = Buffer.allocUnsafe(12);
  payload.writeUInt16BE(NBD_INFO_EXPORT, 0);
  payload.writeBigUInt64BE(BigInt(sizeBytes), 2);
  payload.writeUInt16BE(flags, 10);
  return optionReply(option, NBD_REP_INFO, payload);
}

export function infoTextReply(
  option: number,
  infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION,
  text: string,
): Buffer {
  let bytes = Buffer.from(text, 'utf8');
  if (bytes.length > NBD_STRING_MAX_BYTES) bytes = bytes.subarray(0, NBD_STRING_MAX_BYTES);
  const payload = Buffer.allocUnsafe(2 + bytes.length);
  payload.writeUInt16BE(infoType, 0);
  bytes.copy(payload, 2);
  return optionReply(option, NBD_REP_INFO, payload);
}

export function infoBlockSizeReply(
  option: number,
  minimumBytes: number,
  preferredBytes: number,
  maximumBytes: number,
): Buffer {
  const payload = Buffer.allocUnsafe(14);
  payload.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  payload.writeUInt32BE(minimumBytes, 2);
  payload.writeUInt32BE(preferredBytes, 6);
  payload.writeUInt32BE(maximumBytes, 10);
  return optionReply(option, NBD_REP_INFO, payload);
}

export function metaContextReply(option: number, contextId: number, name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  const payload = Buffer.allocUnsafe(4 + bytes.length);
  payload.writeUInt32BE(contextId, 0);
  bytes.copy(payload, 4);
  return optionReply(option, NBD_REP_META_CONTEXT, payload);
}
