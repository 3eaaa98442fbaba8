/**
 * A raw NBD client for the edge's own tests (not exported from index.ts): it speaks the
 * handshake one message at a time and can send any bytes at all, so a test can walk the
 * server into every state, break the protocol on purpose, and see exactly which bytes
 * come back. It trusts nothing: every read has a timeout, and a server that closes the
 * connection turns every pending read into a ConnectionClosedError.
 */
import net from 'node:net';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_REPLY_MAGIC,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from '../nbd-protocol.js';

/** How long any single read waits by default before it fails the test. */
export const RAW_CLIENT_READ_TIMEOUT_MS = 5_000;

export class ConnectionClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

export class ReadTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReadTimeoutError';
  }
}

export interface Greeting {
  readonly magic: bigint;
  readonly ihaveopt: bigint;
  readonly flags: number;
}

export interface OptionReply {
  readonly magic: bigint;
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

export interface StructuredChunk {
  readonly flags: number;
  readonly type: number;
  readonly payload: Buffer;
}

export interface BlockStatusDescriptor {
  readonly lengthBytes: number;
  readonly flags: number;
}

/** One complete reply: a simple reply, or every structured chunk up to the DONE one. */
export interface NbdReply {
  readonly handle: bigint;
  readonly structured: boolean;
  /** 0 on success; the NBD error value otherwise (of the first error chunk). */
  readonly error: number;
  readonly errorMessage: string;
  /** A read's data (reassembled from OFFSET_DATA chunks); empty for other commands. */
  readonly data: Buffer;
  readonly chunks: readonly StructuredChunk[];
  readonly contextId: number | undefined;
  readonly extents: readonly BlockStatusDescriptor[];
}

export interface RequestFields {
  readonly command: number;
  readonly flags?: number;
  readonly handle?: bigint;
  readonly offsetBytes?: number | bigint;
  /** Defaults to the data's length, else 0. */
  readonly lengthBytes?: number;
  /** Sent right after the header (a write's payload, or anything a test wants). */
  readonly data?: Buffer;
}

export interface HandshakeOptions {
  readonly name: string;
  readonly structured?: boolean;
  /** Selected with NBD_OPT_SET_META_CONTEXT (needs structured). */
  readonly metaContexts?: readonly string[];
  readonly clientFlags?: number;
}

export interface HandshakeResult {
  readonly sizeBytes: number;
  readonly transmissionFlags: number;
  readonly replies: readonly OptionReply[];
}

interface Pending {
  readonly command: number;
  readonly offsetBytes: bigint;
  readonly lengthBytes: number;
}

interface Waiter {
  readonly bytes: number;
  readonly resolve: (data: Buffer) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class RawNbdClient {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private waiter: Waiter | undefined;
  private closedReason: string | undefined;
  private readonly closedPromise: Promise<void>;
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private readonly partial = new Map<bigint, StructuredChunk[]>();
  /** Structured replies were negotiated (set by handshake(); tests may set it by hand). */
  structured = false;
  /** Total bytes received from the server (also counted when discarding). */
  receivedBytes = 0;

  private constructor(
    readonly socket: net.Socket,
    private readonly discard: boolean,
  ) {
    this.closedPromise = new Promise<void>((resolve) => {
      socket.on('close', () => {
        this.closedReason ??= 'the server closed the connection';
        this.failWaiter(new ConnectionClosedError(this.closedReason));
        resolve();
      });
    });
    socket.on('data', (chunk: Buffer) => {
      this.receivedBytes += chunk.length;
      if (this.discard) return;
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
      this.serveWaiter();
    });
    // Errors (ECONNRESET when the server destroys the socket) end in 'close' anyway.
    socket.on('error', (err) => {
      this.closedReason ??= `socket error: ${err.message}`;
    });
  }

  /** Connects; with `discard`, received bytes are only counted (for fuzzing). */
  static connect(
    port: number,
    options: { host?: string; discard?: boolean } = {},
  ): Promise<RawNbdClient> {
    return new Promise<RawNbdClient>((resolve, reject) => {
      const socket = net.connect({ port, host: options.host ?? '127.0.0.1', noDelay: true });
      const onError = (err: Error) => reject(err);
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new RawNbdClient(socket, options.discard ?? false));
      });
    });
  }

  get closed(): boolean {
    return this.closedReason !== undefined && this.socket.destroyed;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.bufferedBytes;
  }

  send(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Sends and resolves once the bytes are handed to the kernel (or the socket died). */
  sendAndFlush(bytes: Buffer): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.socket.destroyed) {
        resolve();
        return;
      }
      this.socket.write(bytes, () => resolve());
    });
  }

  /** Resolves with exactly `bytes` bytes, or rejects (closed, or nothing in time). */
  receive(bytes: number, timeoutMs = RAW_CLIENT_READ_TIMEOUT_MS): Promise<Buffer> {
    if (this.waiter !== undefined) throw new Error('one receive at a time');
    if (this.bufferedBytes >= bytes) return Promise.resolve(this.take(bytes));
    if (this.closedReason !== undefined && this.socket.destroyed) {
      return Promise.reject(new ConnectionClosedError(this.closedReason));
    }
    return new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(
          new ReadTimeoutError(
            `waited ${timeoutMs} ms for ${bytes} bytes, have ${this.bufferedBytes}`,
          ),
        );
      }, timeoutMs);
      this.waiter = { bytes, resolve, reject, timer };
    });
  }

  /** Whatever has arrived and not been consumed (without waiting). */
  takeBuffered(): Buffer {
    return this.take(this.bufferedBytes);
  }

  /** True if the server closed the connection within the time. */
  async waitClosed(timeoutMs = RAW_CLIENT_READ_TIMEOUT_MS): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.closedPromise.then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Half-closes: no more bytes from us, replies still readable. */
  end(): void {
    this.socket.end();
  }

  // ------------------------------------------------------------------ handshake

  async readGreeting(): Promise<Greeting> {
    const bytes = await this.receive(18);
    return {
      magic: bytes.readBigUInt64BE(0),
      ihaveopt: bytes.readBigUInt64BE(8),
      flags: bytes.readUInt16BE(16),
    };
  }

  sendClientFlags(flags: number): void {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32BE(flags >>> 0, 0);
    this.send(bytes);
  }

  /** An option header with `lengthBytes` (default: the data's length), then the data. */
  sendOption(option: number, data: Buffer = Buffer.alloc(0), lengthBytes = data.length): void {
    this.send(Buffer.concat([optionHeader(option, lengthBytes), data]));
  }

  async readOptionReply(timeoutMs = RAW_CLIENT_READ_TIMEOUT_MS): Promise<OptionReply> {
    const header = await this.receive(20, timeoutMs);
    const length = header.readUInt32BE(16);
    const data = length === 0 ? Buffer.alloc(0) : await this.receive(length, timeoutMs);
    return {
      magic: header.readBigUInt64BE(0),
      option: header.readUInt32BE(8),
      type: header.readUInt32BE(12),
      data,
    };
  }

  /**
   * Sends an option and reads its replies up to the final one (ACK or an error); the
   * intermediate SERVER / INFO / META_CONTEXT replies come first in the list.
   */
  async option(option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      replies.push(reply);
      if (
        reply.type !== NBD_REP_SERVER &&
        reply.type !== NBD_REP_INFO &&
        reply.type !== NBD_REP_META_CONTEXT
      ) {
        return replies;
      }
    }
  }

  /** Greeting, client flags, then [STRUCTURED_REPLY, SET_META_CONTEXT], then GO. */
  async handshake(options: HandshakeOptions): Promise<HandshakeResult> {
    const greeting = await this.readGreeting();
    if (greeting.magic !== NBD_MAGIC || greeting.ihaveopt !== NBD_IHAVEOPT) {
      throw new Error('not an NBD newstyle greeting');
    }
    this.sendClientFlags(options.clientFlags ?? NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    if (options.structured === true) {
      const [ack] = await this.option(NBD_OPT_STRUCTURED_REPLY);
      if (ack?.type !== NBD_REP_ACK) throw new Error('structured replies refused');
      this.structured = true;
    }
    if (options.metaContexts !== undefined) {
      const replies = await this.option(
        NBD_OPT_SET_META_CONTEXT,
        metaContextPayload(options.name, options.metaContexts),
      );
      if (replies[replies.length - 1]?.type !== NBD_REP_ACK) {
        throw new Error('SET_META_CONTEXT refused');
      }
    }
    const replies = await this.option(NBD_OPT_GO, infoPayload(options.name, []));
    const last = replies[replies.length - 1];
    if (last?.type !== NBD_REP_ACK) {
      throw new Error(`GO ${options.name}: reply 0x${(last?.type ?? 0).toString(16)}`);
    }
    const info = parseInfoReplies(replies);
    if (info.export === undefined) throw new Error('GO without NBD_INFO_EXPORT');
    return {
      sizeBytes: info.export.sizeBytes,
      transmissionFlags: info.export.transmissionFlags,
      replies,
    };
  }

  // ------------------------------------------------------------------ transmission

  /** Sends one request (any fields at all); returns its handle. */
  request(fields: RequestFields): bigint {
    const { handle, bytes } = this.encodeRequest(fields);
    this.send(bytes);
    return handle;
  }

  /**
   * Encodes a request and expects its reply, without sending it: the test sends the
   * bytes itself (split, packed, or mangled).
   */
  encodeRequest(fields: RequestFields): { handle: bigint; bytes: Buffer } {
    const handle = fields.handle ?? this.nextHandle++;
    const offsetBytes = BigInt(fields.offsetBytes ?? 0);
    const lengthBytes = fields.lengthBytes ?? fields.data?.length ?? 0;
    const header = requestHeader(
      fields.command,
      fields.flags ?? 0,
      handle,
      offsetBytes,
      lengthBytes,
    );
    this.pending.set(handle, { command: fields.command, offsetBytes, lengthBytes });
    return {
      handle,
      bytes: fields.data === undefined ? header : Buffer.concat([header, fields.data]),
    };
  }

  /**
   * Reads replies until one request's reply is complete and returns it. Structured
   * chunks of other requests read meanwhile are kept for later calls.
   */
  async readReply(timeoutMs = RAW_CLIENT_READ_TIMEOUT_MS): Promise<NbdReply> {
    for (;;) {
      const magic = (await this.receive(4, timeoutMs)).readUInt32BE(0);
      if (magic === NBD_SIMPLE_REPLY_MAGIC) {
        const rest = await this.receive(12, timeoutMs);
        const error = rest.readUInt32BE(0);
        const handle = rest.readBigUInt64BE(4);
        const pending = this.pending.get(handle);
        if (pending === undefined) throw new Error(`simple reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        const data =
          pending.command === NBD_CMD_READ && error === 0 && pending.lengthBytes > 0
            ? await this.receive(pending.lengthBytes, timeoutMs)
            : Buffer.alloc(0);
        return {
          handle,
          structured: false,
          error,
          errorMessage: '',
          data,
          chunks: [],
          contextId: undefined,
          extents: [],
        };
      }
      if (magic !== NBD_STRUCTURED_REPLY_MAGIC) {
        throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      }
      const rest = await this.receive(16, timeoutMs);
      const flags = rest.readUInt16BE(0);
      const type = rest.readUInt16BE(2);
      const handle = rest.readBigUInt64BE(4);
      const length = rest.readUInt32BE(12);
      const payload = length === 0 ? Buffer.alloc(0) : await this.receive(length, timeoutMs);
      const pending = this.pending.get(handle);
      if (pending === undefined) throw new Error(`structured chunk for unknown handle ${handle}`);
      const chunks = this.partial.get(handle) ?? [];
      chunks.push({ flags, type, payload });
      if ((flags & NBD_REPLY_FLAG_DONE) === 0) {
        this.partial.set(handle, chunks);
        continue;
      }
      this.partial.delete(handle);
      this.pending.delete(handle);
      return assembleStructured(handle, pending, chunks);
    }
  }

  nbdRead(offsetBytes: number, lengthBytes: number, flags = 0): Promise<NbdReply> {
    this.request({ command: NBD_CMD_READ, offsetBytes, lengthBytes, flags });
    return this.readReply();
  }

  nbdWrite(offsetBytes: number, data: Buffer, flags = 0): Promise<NbdReply> {
    this.request({ command: NBD_CMD_WRITE, offsetBytes, data, flags });
    return this.readReply();
  }

  nbdFlush(flags = 0): Promise<NbdReply> {
    this.request({ command: NBD_CMD_FLUSH, flags });
    return this.readReply();
  }

  nbdTrim(offsetBytes: number, lengthBytes: number, flags = 0): Promise<NbdReply> {
    this.request({ command: NBD_CMD_TRIM, offsetBytes, lengthBytes, flags });
    return this.readReply();
  }

  nbdWriteZeroes(offsetBytes: number, lengthBytes: number, flags = 0): Promise<NbdReply> {
    this.request({ command: NBD_CMD_WRITE_ZEROES, offsetBytes, lengthBytes, flags });
    return this.readReply();
  }

  nbdBlockStatus(offsetBytes: number, lengthBytes: number, flags = 0): Promise<NbdReply> {
    this.request({ command: NBD_CMD_BLOCK_STATUS, offsetBytes, lengthBytes, flags });
    return this.readReply();
  }

  /** NBD_CMD_DISC (no reply comes). */
  disconnect(): void {
    this.send(requestHeader(NBD_CMD_DISC, 0, 0n, 0n, 0));
  }

  // ------------------------------------------------------------------ internals

  private take(bytes: number): Buffer {
    if (bytes === 0) return Buffer.alloc(0);
    // Only the chunks the message spans are joined (many replies may be queued).
    let count = 0;
    let spanned = 0;
    while (spanned < bytes) {
      spanned += (this.chunks[count] as Buffer).length;
      count += 1;
    }
    const head = this.chunks.splice(0, count);
    const joined = head.length === 1 ? (head[0] as Buffer) : Buffer.concat(head);
    if (joined.length > bytes) this.chunks.unshift(joined.subarray(bytes));
    this.bufferedBytes -= bytes;
    return joined.subarray(0, bytes);
  }

  private serveWaiter(): void {
    const waiter = this.waiter;
    if (waiter === undefined || this.bufferedBytes < waiter.bytes) return;
    this.waiter = undefined;
    clearTimeout(waiter.timer);
    waiter.resolve(this.take(waiter.bytes));
  }

  private failWaiter(err: Error): void {
    const waiter = this.waiter;
    if (waiter === undefined) return;
    this.waiter = undefined;
    clearTimeout(waiter.timer);
    waiter.reject(err);
  }
}

function assembleStructured(
  handle: bigint,
  pending: Pending,
  chunks: readonly StructuredChunk[],
): NbdReply {
  let error = 0;
  let errorMessage = '';
  let contextId: number | undefined;
  const extents: BlockStatusDescriptor[] = [];
  const data =
    pending.command === NBD_CMD_READ ? Buffer.alloc(pending.lengthBytes) : Buffer.alloc(0);
  for (const chunk of chunks) {
    if ((chunk.type & 0x8000) !== 0) {
      if (error === 0) {
        error = chunk.payload.readUInt32BE(0);
        const messageBytes = chunk.payload.readUInt16BE(4);
        errorMessage = chunk.payload.subarray(6, 6 + messageBytes).toString('utf8');
      }
    } else if (chunk.type === NBD_REPLY_TYPE_OFFSET_DATA) {
      const at = Number(chunk.payload.readBigUInt64BE(0) - pending.offsetBytes);
      chunk.payload.copy(data, at, 8);
    } else if (chunk.type === NBD_REPLY_TYPE_BLOCK_STATUS) {
      contextId = chunk.payload.readUInt32BE(0);
      for (let at = 4; at + 8 <= chunk.payload.length; at += 8) {
        extents.push({
          lengthBytes: chunk.payload.readUInt32BE(at),
          flags: chunk.payload.readUInt32BE(at + 4),
        });
      }
    }
  }
  return {
    handle,
    structured: true,
    error,
    errorMessage,
    data,
    chunks,
    contextId,
    extents,
  };
}

// ------------------------------------------------------------------ message builders

export function optionHeader(option: number, lengthBytes: number): Buffer {
  const bytes = Buffer.alloc(16);
  bytes.writeBigUInt64BE(NBD_IHAVEOPT, 0);
  bytes.writeUInt32BE(option >>> 0, 8);
  bytes.writeUInt32BE(lengthBytes >>> 0, 12);
  return bytes;
}

/** NBD_OPT_INFO / NBD_OPT_GO payload: u32 name length, name, u16 count, u16 info types. */
export function infoPayload(name: string, infoTypes: readonly number[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const bytes = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infoTypes.length);
  bytes.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(bytes, 4);
  bytes.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((type, i) => {
    bytes.writeUInt16BE(type, 6 + nameBytes.length + 2 * i);
  });
  return bytes;
}

/** LIST/SET_META_CONTEXT payload: u32 name length, name, u32 count, (u32 length, query)*. */
export function metaContextPayload(name: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const nameBytes = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(nameBytes.length, 0);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(head, nameBytes, count);
  for (const query of queries) {
    const bytes = Buffer.from(query, 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length, 0);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

export function requestHeader(
  command: number,
  flags: number,
  handle: bigint,
  offsetBytes: bigint,
  lengthBytes: number,
): Buffer {
  const bytes = Buffer.alloc(28);
  bytes.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  bytes.writeUInt16BE(flags & 0xffff, 4);
  bytes.writeUInt16BE(command & 0xffff, 6);
  bytes.writeBigUInt64BE(BigInt.asUintN(64, handle), 8);
  bytes.writeBigUInt64BE(BigInt.asUintN(64, offsetBytes), 16);
  bytes.writeUInt32BE(lengthBytes >>> 0, 24);
  return bytes;
}

export interface ParsedInfo {
  export: { sizeBytes: number; transmissionFlags: number } | undefined;
  blockSize: { minimumBytes: number; preferredBytes: number; maximumBytes: number } | undefined;
  name: string | undefined;
  description: string | undefined;
  /** Info types in the order they came. */
  types: number[];
}

/** Decodes the NBD_REP_INFO replies of an INFO or GO. */
export function parseInfoReplies(replies: readonly OptionReply[]): ParsedInfo {
  const out: ParsedInfo = {
    export: undefined,
    blockSize: undefined,
    name: undefined,
    description: undefined,
    types: [],
  };
  for (const reply of replies) {
    if (reply.type !== NBD_REP_INFO) continue;
    const type = reply.data.readUInt16BE(0);
    out.types.push(type);
    if (type === 0) {
      out.export = {
        sizeBytes: Number(reply.data.readBigUInt64BE(2)),
        transmissionFlags: reply.data.readUInt16BE(10),
      };
    } else if (type === 1) {
      out.name = reply.data.subarray(2).toString('utf8');
    } else if (type === 2) {
      out.description = reply.data.subarray(2).toString('utf8');
    } else if (type === 3) {
      out.blockSize = {
        minimumBytes: reply.data.readUInt32BE(2),
        preferredBytes: reply.data.readUInt32BE(6),
        maximumBytes: reply.data.readUInt32BE(10),
      };
    }
  }
  return out;
}

/** Checks an option reply's framing (magic and the option it answers). */
export function isReplyTo(reply: OptionReply, option: number): boolean {
  return reply.magic === NBD_OPTION_REPLY_MAGIC && reply.option === option;
}
