/**
 * The contract between the NBD protocol core and what serves the bytes: a provider of
 * named exports, and the block operations of one open export. The protocol core checks
 * ranges, flags and read-only before it calls; an export sees only valid requests.
 * Implementations: VolumedriverExports (a vDisk over VolumeService Io streams) and
 * MemoryExports (tests, the fuzzer, and the protocol benchmark).
 */

/** What NBD_OPT_LIST and NBD_OPT_INFO tell a client about an export. */
export interface ExportInfo {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Human-readable, for NBD_INFO_DESCRIPTION and the list. */
  readonly description: string;
  /**
   * Set when the writes this export acknowledged survive the death of the serving process:
   * a later connection to an export with the same epoch sees them, and its flush makes them
   * durable. Told to clients as `durable-epoch=<epoch>` at the end of NBD_INFO_DESCRIPTION
   * (tgt's bs_shale reads it; without it a client must count them lost).
   */
  readonly durableEpoch?: string;
}

/** One run of a block-status answer, consecutive from the requested offset. */
export interface Extent {
  readonly lengthBytes: number;
  /** Not allocated: reads as zeros. */
  readonly hole: boolean;
}

export interface BlockExport {
  readonly info: ExportInfo;
  read(offsetBytes: number, lengthBytes: number): Promise<Buffer>;
  /** Durability: resolved = visible to every later read; with fua, on stable storage. */
  write(offsetBytes: number, data: Buffer, fua: boolean): Promise<void>;
  /** Durability: every write resolved before this call is on stable storage. */
  flush(): Promise<void>;
  /** Unmaps: the range reads as zeros afterwards (whole clusters; edges keep their data). */
  trim(offsetBytes: number, lengthBytes: number, fua: boolean): Promise<void>;
  /** The range reads as zeros afterwards; noHole: write real zeros (allocate). */
  writeZeroes(
    offsetBytes: number,
    lengthBytes: number,
    options: { fua: boolean; noHole: boolean },
  ): Promise<void>;
  /** At least one extent from offsetBytes, at most lengthBytes in all (may stop short). */
  blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]>;
  /** The connection is done with it (the provider may close what it shares). */
  release(): void;
}

export interface ExportProvider {
  /** Every export, for NBD_OPT_LIST. */
  list(): Promise<ExportInfo[]>;
  /** One export's info (EDGE_NOT_FOUND if there is none), for NBD_OPT_INFO. */
  info(name: string): Promise<ExportInfo>;
  /** Opens an export for one connection (EDGE_NOT_FOUND, EDGE_UNAVAILABLE). */
  open(name: string): Promise<BlockExport>;
  /** Closes everything it holds; open exports fail with EDGE_CLOSED afterwards. */
  close(): Promise<void>;
}
