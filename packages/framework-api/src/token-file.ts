import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs/promises';
import { systemErrorCode } from '@shale/common';
import { API_TOKEN_BYTES, API_TOKEN_FILE_MODE } from './constants.js';
import { ApiErrorCode, apiError } from './errors.js';

const TOKEN_PATTERN = new RegExp(`^[0-9a-f]{${API_TOKEN_BYTES * 2}}$`);

export interface TokenFile {
  readonly token: string;
  /** True when this call generated the token (the file did not exist). */
  readonly created: boolean;
}

/**
 * The API's bearer token, from `path`. When the file does not exist, a token of
 * API_TOKEN_BYTES random bytes (hex) is written to a new file created with mode 0600
 * (O_EXCL: never over someone else's file; fsynced before it is used). An existing file
 * must be a regular file that its group and others cannot read or write
 * (API_TOKEN_FILE_INSECURE) and hold one token (API_TOKEN_FILE_BAD).
 */
export async function loadOrCreateToken(path: string): Promise<TokenFile> {
  const token = randomBytes(API_TOKEN_BYTES).toString('hex');
  let created: fs.FileHandle | undefined;
  try {
    created = await fs.open(
      path,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      API_TOKEN_FILE_MODE,
    );
  } catch (err) {
    if (systemErrorCode(err) !== 'EEXIST') {
      throw apiError(
        ApiErrorCode.TokenFileBad,
        `cannot create token file ${path}: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
  }
  if (created !== undefined) {
    try {
      // The umask can only remove bits, but a chmod makes 0600 certain whatever it is.
      await created.chmod(API_TOKEN_FILE_MODE);
      await created.writeFile(`${token}\n`);
      await created.sync();
    } finally {
      await created.close();
    }
    return { token, created: true };
  }
  return { token: await readToken(path), created: false };
}

async function readToken(path: string): Promise<string> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    throw apiError(ApiErrorCode.TokenFileBad, `cannot open token file ${path}: ${String(err)}`, {
      cause: err,
    });
  }
  try {
    // fstat of the opened file: what is checked is what is read.
    const stat = await handle.stat();
    if (!stat.isFile())
      throw apiError(ApiErrorCode.TokenFileBad, `token file ${path} is not a regular file`);
    const loose = stat.mode & 0o077;
    if (loose !== 0) {
      throw apiError(
        ApiErrorCode.TokenFileInsecure,
        `token file ${path} has mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}: its group or others can read or write it; run "chmod 600 ${path}" (or remove it to get a new token)`,
        { details: { path, mode: (stat.mode & 0o777).toString(8) } },
      );
    }
    const text = (await handle.readFile({ encoding: 'utf8' })).trim();
    if (!TOKEN_PATTERN.test(text)) {
      throw apiError(
        ApiErrorCode.TokenFileBad,
        `token file ${path} must hold one token of ${API_TOKEN_BYTES * 2} lowercase hex characters`,
      );
    }
    return text;
  } finally {
    await handle.close();
  }
}

/**
 * Whether the `Authorization` header carries `Bearer <token>`. The comparison takes the same
 * time whatever the presented value is: both sides are hashed to 32 bytes first, so neither
 * the length nor a common prefix shows in the timing.
 */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (header === undefined) return false;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  const presented = match?.[1] ?? '';
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && match !== null;
}
