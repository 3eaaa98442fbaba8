/**
 * Option haggling: the client's flags and options parsed from the connection's bytes, what
 * the server answers to each option of the fixed newstyle handshake, and what the client
 * negotiated (structured replies, base:allocation). Nothing more is read from the client
 * while an option is being answered, so at most one is answered per connection.
 *
 *   client-flags --> option-header --> option-data --> busy (answering) --> option-header ...
 *                          \--> option-skip (too long: NBD_REP_ERR_TOO_BIG) --/
 *   GO / EXPORT_NAME that opened an export: the connection enters transmission.
 */
import { errorMessage, isShaleError } from '@shale/common';
import type { BlockExport, ExportInfo, ExportProvider } from './block-export.js';
import type { ByteQueue } from './byte-queue.js';
import type { ConnectionObserver, ProtocolErrorKind } from './connection-observer.js';
import {
  NBD_HANDSHAKE_IDLE_TIMEOUT_MS,
  NBD_HANDSHAKE_LIST_MAX_AGE_MS,
  NBD_HANDSHAKE_MAX_MS,
  NBD_HANDSHAKE_MAX_OPTIONS,
  NBD_HANDSHAKE_MS_PER_EXPORT,
  NBD_HANDSHAKE_OPTIONS_PER_EXPORT,
  NBD_MAX_PAYLOAD_BYTES,
  NBD_MIN_BLOCK_BYTES,
  NBD_OPTION_MAX_BYTES,
  NBD_PREFERRED_BLOCK_BYTES,
} from './constants.js';
import { EdgeErrorCode } from './errors.js';
import {
  decodeExportName,
  decodeInfoRequest,
  decodeMetaContextRequest,
  infoBlockSizeReply,
  infoExportReply,
  infoTextReply,
  metaContextReply,
  optionError,
  optionReply,
  serverReply,
} from './nbd-options.js';
import {
  BASE_ALLOCATION,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_IHAVEOPT,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_HEADER_BYTES,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
} from './nbd-protocol.js';

/** The meta-context id of base:allocation in this server. */
export const BASE_ALLOCATION_ID = 1;
/** The 124 zero bytes ending NBD_OPT_EXPORT_NAME's reply without NO_ZEROES. */
const EXPORT_NAME_PADDING = Buffer.alloc(124);

/** NBD_INFO_DESCRIPTION: the description, and the durable epoch where the export has one. */
export function describe(info: ExportInfo): string {
  return info.durableEpoch === undefined
    ? info.description
    : `${info.description}; durable-epoch=${info.durableEpoch}`;
}

/** What the transmission phase needs to know from the handshake. */
export interface Negotiated {
  readonly structured: boolean;
  /** base:allocation was selected for the export entered. */
  readonly blockStatus: boolean;
}

/** What the handshake needs from its connection. */
export interface HandshakeHost {
  /** The connection is closed: a late answer is dropped (and an opened export released). */
  isClosed(): boolean;
  send(buffer: Buffer): void;
  /** An option is being answered: read nothing more. */
  pauseReading(): void;
  /** It was answered: read on (unless the connection has other reasons not to). */
  resumeReading(): void;
  /** ABORT: close once the replies are written. */
  endAfterReplies(): void;
  /** The client broke the protocol (or took too long). */
  protocolFailure(reason: string, kind?: ProtocolErrorKind): void;
  /** Closes without blaming the client (an EXPORT_NAME the provider could not open). */
  close(reason: string): void;
  /** GO or EXPORT_NAME opened an export: the handshake is over. */
  enterTransmission(opened: BlockExport, negotiated: Negotiated): void;
}

export interface HandshakeOptions {
  readonly provider: ExportProvider;
  readonly observer: ConnectionObserver;
  /** Export served for an empty export name; none: an empty name is an unknown export. */
  readonly defaultExport?: string | undefined;
  /** Without a complete option for this long, the client is cut (NBD_HANDSHAKE_IDLE_TIMEOUT_MS). */
  readonly handshakeIdleTimeoutMs?: number;
  /** The whole handshake at most (NBD_HANDSHAKE_MAX_MS). */
  readonly handshakeMaxMs?: number;
}

type ParseState =
  | { readonly kind: 'client-flags' }
  | { readonly kind: 'option-header' }
  | { readonly kind: 'option-data'; readonly option: number; readonly lengthBytes: number }
  | { readonly kind: 'option-skip'; readonly option: number; remainingBytes: number }
  | { readonly kind: 'busy' };

export class NbdHandshake {
  private state: ParseState = { kind: 'client-flags' };
  /** Restarted by every option received or answered. */
  private idleTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private startedAtMs = 0;
  private stopped = false;
  private optionsSeen = 0;
  /** The client sent NBD_FLAG_C_NO_ZEROES. */
  private noZeroes = false;
  private structured = false;
  /** base:allocation selected, and for which export name (GO must name the same one). */
  private metaBase = false;
  private metaExportName: string | undefined;
  /** The exports this connection's last LIST returned, to answer INFO from (see exportInfo). */
  private listing: { readonly atMs: number; readonly byName: Map<string, ExportInfo> } | undefined;

  constructor(
    private readonly host: HandshakeHost,
    private readonly options: HandshakeOptions,
  ) {}

  /** Not answering an option: the client's bytes may be read. */
  get reading(): boolean {
    return this.state.kind !== 'busy';
  }

  /** How many exports the last LIST returned (the option limit grows with it). */
  get listedExports(): number {
    return this.listing?.byName.size ?? 0;
  }

  /**
   * Starts the handshake's deadlines (the greeting is being sent): an idle one, restarted by
   * every option the client completes and every answer, and the absolute cap.
   */
  start(): void {
    const idleMs = this.options.handshakeIdleTimeoutMs ?? NBD_HANDSHAKE_IDLE_TIMEOUT_MS;
    this.idleTimer = setTimeout(
      () => this.timedOut(`no option for ${idleMs} ms in the handshake`),
      idleMs,
    );
    this.idleTimer.unref();
    this.startedAtMs = Date.now();
    this.armDeadline();
  }

  /** The absolute cap, from the start: longer for a client that listed many exports. */
  private armDeadline(): void {
    if (this.stopped) return;
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
    const maxMs =
      (this.options.handshakeMaxMs ?? NBD_HANDSHAKE_MAX_MS) +
      NBD_HANDSHAKE_MS_PER_EXPORT * this.listedExports;
    this.deadlineTimer = setTimeout(
      () => this.timedOut(`handshake not finished in ${maxMs} ms`),
      Math.max(0, this.startedAtMs + maxMs - Date.now()),
    );
    this.deadlineTimer.unref();
  }

  private timedOut(reason: string): void {
    this.host.protocolFailure(reason, 'handshake-timeout');
  }

  /** The handshake is over (transmission, or the connection closed). */
  stop(): void {
    this.stopped = true;
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    if (this.deadlineTimer !== undefined) clearTimeout(this.deadlineTimer);
  }

  /** The client or the server moved the handshake on: the idle deadline starts again. */
  private progress(): void {
    this.idleTimer?.refresh();
  }

  /** Consumes queued option bytes for as long as it can; answers each complete option. */
  process(queue: ByteQueue): void {
    for (;;) {
      const state = this.state;
      switch (state.kind) {
        case 'client-flags': {
          if (queue.length < 4) return;
          const flags = queue.take(4).readUInt32BE(0);
          if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
            this.host.protocolFailure(`unknown client flags 0x${flags.toString(16)}`);
            return;
          }
          this.noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
          this.state = { kind: 'option-header' };
          this.progress();
          break;
        }
        case 'option-header': {
          if (queue.length < NBD_OPTION_HEADER_BYTES) return;
          const header = queue.take(NBD_OPTION_HEADER_BYTES);
          if (header.readBigUInt64BE(0) !== NBD_IHAVEOPT) {
            this.host.protocolFailure('bad option magic');
            return;
          }
          this.optionsSeen += 1;
          const maxOptions =
            NBD_HANDSHAKE_MAX_OPTIONS + NBD_HANDSHAKE_OPTIONS_PER_EXPORT * this.listedExports;
          if (this.optionsSeen > maxOptions) {
            this.host.protocolFailure(`more than ${maxOptions} options`);
            return;
          }
          const option = header.readUInt32BE(8);
          const lengthBytes = header.readUInt32BE(12);
          if (option === NBD_OPT_EXPORT_NAME && lengthBytes > NBD_OPTION_MAX_BYTES) {
            // EXPORT_NAME has no error reply (the client would read one as a size): a
            // name this long can only end the session.
            this.host.protocolFailure(`export-name of ${lengthBytes} bytes`);
            return;
          }
          this.state =
            lengthBytes > NBD_OPTION_MAX_BYTES
              ? { kind: 'option-skip', option, remainingBytes: lengthBytes }
              : { kind: 'option-data', option, lengthBytes };
          break;
        }
        case 'option-data': {
          if (queue.length < state.lengthBytes) return;
          const data = queue.take(state.lengthBytes);
          this.state = { kind: 'busy' };
          this.progress();
          // Nothing is read while the option is answered (the provider may take seconds),
          // or a client that does not wait could make the queue grow without bound.
          this.host.pauseReading();
          this.answer(state.option, data).then(
            () => {
              this.progress();
              this.host.resumeReading();
            },
            (err: unknown) =>
              this.host.protocolFailure(`option ${state.option} failed: ${errorMessage(err)}`),
          );
          return;
        }
        case 'option-skip': {
          state.remainingBytes -= queue.skip(state.remainingBytes);
          if (state.remainingBytes > 0) return;
          this.host.send(
            optionError(
              state.option,
              NBD_REP_ERR_TOO_BIG,
              `option data above ${NBD_OPTION_MAX_BYTES} bytes`,
            ),
          );
          this.state = { kind: 'option-header' };
          this.progress();
          break;
        }
        case 'busy':
          return;
      }
    }
  }

  /** Answers one option (its payload read whole). */
  private async answer(option: number, data: Buffer): Promise<void> {
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.optExportName(data);
      case NBD_OPT_ABORT:
        this.host.send(optionReply(option, NBD_REP_ACK));
        this.host.endAfterReplies();
        return;
      case NBD_OPT_LIST:
        return this.optList(data);
      case NBD_OPT_STARTTLS:
        this.replyOption(optionError(option, NBD_REP_ERR_UNSUP, 'this edge does not serve TLS'));
        return;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.optInfoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.replyOption(
            optionError(option, NBD_REP_ERR_INVALID, 'structured reply takes no data'),
          );
          return;
        }
        this.structured = true;
        this.replyOption(optionReply(option, NBD_REP_ACK));
        return;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        return this.optMetaContext(option, data);
      default:
        // Extended headers, and anything newer: not served (the client falls back).
        this.replyOption(
          optionError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`),
        );
    }
  }

  /** An option reply after which haggling goes on. */
  private replyOption(reply: Buffer): void {
    if ((reply.readUInt32BE(12) & 0x8000_0000) !== 0)
      this.options.observer.protocolError('option-error');
    this.host.send(reply);
    if (this.state.kind === 'busy') this.state = { kind: 'option-header' };
  }

  private resolveName(name: string): string | undefined {
    if (name !== '') return name;
    return this.options.defaultExport;
  }

  private async optList(data: Buffer): Promise<void> {
    if (data.length !== 0) {
      this.replyOption(optionError(NBD_OPT_LIST, NBD_REP_ERR_INVALID, 'list takes no data'));
      return;
    }
    let exports: ExportInfo[];
    try {
      exports = await this.list();
    } catch (err) {
      this.replyOption(
        optionError(NBD_OPT_LIST, NBD_REP_ERR_UNKNOWN, `cannot list exports: ${errorMessage(err)}`),
      );
      return;
    }
    for (const info of exports) {
      this.host.send(serverReply(NBD_OPT_LIST, info.name, info.description));
    }
    this.replyOption(optionReply(NBD_OPT_LIST, NBD_REP_ACK));
  }

  private async list(): Promise<ExportInfo[]> {
    const exports = await this.options.provider.list();
    this.listing = { atMs: Date.now(), byName: new Map(exports.map((e) => [e.name, e])) };
    this.armDeadline();
    return exports;
  }

  /**
   * One export's info for INFO and the meta-context options. A client listing exports
   * (nbdinfo --list: LIST, then INFO and LIST_META_CONTEXT for each) is answered from its own
   * LIST while that is younger than NBD_HANDSHAKE_LIST_MAX_AGE_MS (then it is listed again):
   * one ListVdisks instead of a VdiskInfo per option, each of which costs the volumedriver a
   * scan of every vDisk record. A name the listing lacks is asked of the provider. GO always
   * opens (the size of now).
   */
  private async exportInfo(name: string): Promise<ExportInfo> {
    if (this.listing !== undefined) {
      if (Date.now() - this.listing.atMs > NBD_HANDSHAKE_LIST_MAX_AGE_MS) await this.list();
      const listed = this.listing?.byName.get(name);
      if (listed !== undefined) return listed;
    }
    return this.options.provider.info(name);
  }

  private transmissionFlags(info: ExportInfo): number {
    let flags =
      NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN;
    if (info.readOnly) flags |= NBD_FLAG_READ_ONLY;
    else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (this.structured) flags |= NBD_FLAG_SEND_DF;
    return flags;
  }

  private async optInfoOrGo(option: number, data: Buffer): Promise<void> {
    const decoded = decodeInfoRequest(data);
    if (!decoded.ok) {
      this.replyOption(optionError(option, NBD_REP_ERR_INVALID, decoded.reason));
      return;
    }
    const name = this.resolveName(decoded.value.name);
    if (name === undefined) {
      this.replyOption(optionError(option, NBD_REP_ERR_UNKNOWN, 'no default export: name a vDisk'));
      return;
    }
    let info: ExportInfo;
    let opened: BlockExport | undefined;
    try {
      if (option === NBD_OPT_GO) {
        opened = await this.options.provider.open(name);
        info = opened.info;
      } else {
        info = await this.exportInfo(name);
      }
    } catch (err) {
      // A stopping edge says so (the client must disconnect); anything else is "unknown".
      const type = isShaleError(err, EdgeErrorCode.Closed)
        ? NBD_REP_ERR_SHUTDOWN
        : NBD_REP_ERR_UNKNOWN;
      this.replyOption(optionError(option, type, `export ${name}: ${errorMessage(err)}`));
      return;
    }
    if (this.host.isClosed()) {
      opened?.release();
      return;
    }
    this.host.send(infoExportReply(option, info.sizeBytes, this.transmissionFlags(info)));
    for (const type of decoded.value.infoTypes) {
      if (type === NBD_INFO_NAME) this.host.send(infoTextReply(option, NBD_INFO_NAME, info.name));
      if (type === NBD_INFO_DESCRIPTION)
        this.host.send(infoTextReply(option, NBD_INFO_DESCRIPTION, describe(info)));
    }
    // Sent unasked too: we serve unaligned requests, so a client that ignores it is fine.
    this.host.send(
      infoBlockSizeReply(
        option,
        NBD_MIN_BLOCK_BYTES,
        NBD_PREFERRED_BLOCK_BYTES,
        NBD_MAX_PAYLOAD_BYTES,
      ),
    );
    if (opened === undefined) {
      this.replyOption(optionReply(option, NBD_REP_ACK));
      return;
    }
    this.host.send(optionReply(option, NBD_REP_ACK));
    this.host.enterTransmission(opened, this.negotiated(opened));
  }

  private async optExportName(data: Buffer): Promise<void> {
    // No error reply exists for this option: on any failure the connection is closed.
    const decoded = decodeExportName(data);
    const name = decoded.ok ? this.resolveName(decoded.value) : undefined;
    if (name === undefined) {
      this.host.protocolFailure(decoded.ok ? 'export-name: no default export' : decoded.reason);
      return;
    }
    let opened: BlockExport;
    try {
      opened = await this.options.provider.open(name);
    } catch (err) {
      this.host.close(`export-name ${name}: ${errorMessage(err)}`);
      return;
    }
    if (this.host.isClosed()) {
      opened.release();
      return;
    }
    const reply = Buffer.allocUnsafe(10);
    reply.writeBigUInt64BE(BigInt(opened.info.sizeBytes), 0);
    reply.writeUInt16BE(this.transmissionFlags(opened.info), 8);
    this.host.send(reply);
    if (!this.noZeroes) this.host.send(EXPORT_NAME_PADDING);
    this.host.enterTransmission(opened, this.negotiated(opened));
  }

  private negotiated(opened: BlockExport): Negotiated {
    // Contexts chosen for another export name than the one entered do not apply.
    const blockStatus =
      this.metaBase &&
      this.metaExportName !== undefined &&
      this.resolveName(this.metaExportName) === opened.info.name;
    return { structured: this.structured, blockStatus };
  }

  private async optMetaContext(option: number, data: Buffer): Promise<void> {
    if (!this.structured) {
      this.replyOption(
        optionError(option, NBD_REP_ERR_INVALID, 'negotiate structured replies first'),
      );
      return;
    }
    const decoded = decodeMetaContextRequest(data);
    if (!decoded.ok) {
      this.replyOption(optionError(option, NBD_REP_ERR_INVALID, decoded.reason));
      return;
    }
    const name = this.resolveName(decoded.value.name);
    try {
      if (name === undefined) throw new Error('no default export: name a vDisk');
      await this.exportInfo(name);
    } catch (err) {
      this.replyOption(
        optionError(option, NBD_REP_ERR_UNKNOWN, `export ${name ?? '""'}: ${errorMessage(err)}`),
      );
      return;
    }
    const { queries } = decoded.value;
    // Every query starts with a namespace ("base:", "x-foo:", ...).
    const bad = queries.find((q) => !/^[^:]+:/.test(q));
    if (bad !== undefined) {
      this.replyOption(
        optionError(option, NBD_REP_ERR_INVALID, `query ${JSON.stringify(bad)} has no namespace`),
      );
      return;
    }
    if (option === NBD_OPT_LIST_META_CONTEXT) {
      // With no query, or the bare namespace, list everything we have (ids are 0 in a list).
      const listed =
        queries.length === 0 || queries.some((q) => q === BASE_ALLOCATION || q === 'base:');
      if (listed) this.host.send(metaContextReply(option, 0, BASE_ALLOCATION));
    } else {
      // SET replaces the selection; only exact names select a context.
      this.metaBase = queries.includes(BASE_ALLOCATION);
      this.metaExportName = decoded.value.name;
      if (this.metaBase)
        this.host.send(metaContextReply(option, BASE_ALLOCATION_ID, BASE_ALLOCATION));
    }
    this.replyOption(optionReply(option, NBD_REP_ACK));
  }
}
