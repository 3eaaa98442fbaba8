/**
 * Operating errors: a dead peer, a full disk, bad input. Each carries a stable `code`
 * that crosses process boundaries unchanged (gRPC metadata, HTTP bodies, CLI exit
 * messages), and an optional `cause` chain. Programmer errors are not ShaleErrors:
 * they are assertion failures (see assert.ts) and crash the process.
 */
export class ShaleError extends Error {
  readonly code: string;
  /** Extra machine-readable context (the key that was corrupt, the limit exceeded, ...). */
  readonly details: Readonly<Record<string, string>>;

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; details?: Record<string, string> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ShaleError';
    this.code = code;
    this.details = options.details ?? {};
  }

  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

export function isShaleError(err: unknown, code?: string): err is ShaleError {
  return err instanceof ShaleError && (code === undefined || err.code === code);
}

/** The message of anything thrown, for logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The `code` property of a Node.js system error (ENOSPC, ENOENT, ...), if any. */
export function systemErrorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}
