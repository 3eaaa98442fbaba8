import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { systemErrorCode } from '@shale/common';
import { KEY_BYTES } from './constants.js';
import { ProxyErrorCode, proxyError } from './errors.js';

/**
 * Where encryption keys come from. The id of the key an object was written with goes into
 * the object's manifest; reads ask for that id, so keys can be rotated (a new current key)
 * without rewriting old objects.
 */
export interface KeyProvider {
  currentKeyId(): string;
  getKey(keyId: string): Promise<Buffer>;
}

/** Keys held in memory (tests, or keys handed over by an external KMS client). */
export function memoryKeyProvider(
  keys: ReadonlyMap<string, Buffer>,
  currentKeyId: string,
): KeyProvider {
  if (!keys.has(currentKeyId)) {
    throw proxyError(
      ProxyErrorCode.KeyNotFound,
      `current key ${currentKeyId} is not among the keys`,
    );
  }
  for (const [id, key] of keys) {
    if (key.length !== KEY_BYTES) {
      throw proxyError(
        ProxyErrorCode.KeyFileBad,
        `key ${id} is ${key.length} bytes, not ${KEY_BYTES}`,
      );
    }
  }
  return {
    currentKeyId: () => currentKeyId,
    getKey: async (keyId) => {
      const key = keys.get(keyId);
      if (key === undefined)
        throw proxyError(ProxyErrorCode.KeyNotFound, `no key with id ${keyId}`);
      return key;
    },
  };
}

/**
 * The key file (JSON, mode 0600, owned by the proxy's user):
 *   {"formatVersion": 1, "currentKeyId": "k-…", "keys": {"k-…": "<32 bytes, base64>", …}}
 */
interface KeyFileJson {
  formatVersion: 1;
  currentKeyId: string;
  keys: Record<string, string>;
}

export interface FileKeyProviderOptions {
  /** Create the file with one new key if it does not exist (first start). */
  readonly create?: boolean;
}

function parseKeyFile(text: string, file: string): Map<string, Buffer> & { current: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw proxyError(ProxyErrorCode.KeyFileBad, `key file ${file} is not JSON`, { cause: err });
  }
  const bad = (what: string): never => {
    throw proxyError(ProxyErrorCode.KeyFileBad, `key file ${file}: ${what}`);
  };
  if (typeof json !== 'object' || json === null) bad('not an object');
  const obj = json as Record<string, unknown>;
  if (obj.formatVersion !== 1)
    bad(`formatVersion must be 1, got ${JSON.stringify(obj.formatVersion)}`);
  if (typeof obj.currentKeyId !== 'string') bad('currentKeyId must be a string');
  if (typeof obj.keys !== 'object' || obj.keys === null) bad('keys must be an object');
  const keys = new Map<string, Buffer>() as Map<string, Buffer> & { current: string };
  for (const [id, value] of Object.entries(obj.keys as Record<string, unknown>)) {
    if (typeof value !== 'string') bad(`key ${id} must be a base64 string`);
    const key = Buffer.from(value as string, 'base64');
    if (key.length !== KEY_BYTES) bad(`key ${id} is ${key.length} bytes, not ${KEY_BYTES}`);
    keys.set(id, key);
  }
  const current = obj.currentKeyId as string;
  if (!keys.has(current)) bad(`currentKeyId ${current} is not among the keys`);
  keys.current = current;
  return keys;
}

function newKeyId(): string {
  return `k-${randomBytes(8).toString('hex')}`;
}

/** Writes the file atomically with mode 0600: tmp (O_EXCL) + fsync + rename + dir fsync. */
async function writeKeyFile(file: string, content: KeyFileJson): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const handle = await fs.open(tmp, 'wx', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(content, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  const dir = await fs.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/**
 * A key provider backed by one file. Refuses a file that its group or others may read or
 * write (like ssh does for private keys): PROXY_KEY_FILE_INSECURE, naming the mode and the
 * fix. With `create`, a missing file is created with one new random 32-byte key.
 * `rotate()` adds a new key and makes it current; old keys stay for reading old objects.
 */
export class FileKeyProvider implements KeyProvider {
  private constructor(
    private readonly file: string,
    private keys: Map<string, Buffer>,
    private current: string,
  ) {}

  static async open(file: string, options: FileKeyProviderOptions = {}): Promise<FileKeyProvider> {
    let stat: Awaited<ReturnType<typeof fs.stat>>;
    try {
      stat = await fs.stat(file);
    } catch (err) {
      if (systemErrorCode(err) !== 'ENOENT') throw err;
      if (options.create !== true) {
        throw proxyError(ProxyErrorCode.KeyFileMissing, `key file ${file} does not exist`, {
          cause: err,
        });
      }
      const id = newKeyId();
      await writeKeyFile(file, {
        formatVersion: 1,
        currentKeyId: id,
        keys: { [id]: randomBytes(KEY_BYTES).toString('base64') },
      });
      stat = await fs.stat(file);
    }
    if (!stat.isFile())
      throw proxyError(ProxyErrorCode.KeyFileBad, `key file ${file} is not a regular file`);
    if ((stat.mode & 0o077) !== 0) {
      throw proxyError(
        ProxyErrorCode.KeyFileInsecure,
        `key file ${file} has mode ${(stat.mode & 0o777).toString(8)}: group or others can access it; run chmod 600 ${file}`,
        { details: { file, mode: (stat.mode & 0o777).toString(8) } },
      );
    }
    const keys = parseKeyFile(await fs.readFile(file, 'utf8'), file);
    return new FileKeyProvider(file, keys, keys.current);
  }

  currentKeyId(): string {
    return this.current;
  }

  async getKey(keyId: string): Promise<Buffer> {
    const key = this.keys.get(keyId);
    if (key === undefined) {
      throw proxyError(ProxyErrorCode.KeyNotFound, `no key with id ${keyId} in ${this.file}`);
    }
    return key;
  }

  /** Adds a new key, makes it current, and writes the file; returns the new id. */
  async rotate(): Promise<string> {
    const id = newKeyId();
    const keys = new Map(this.keys);
    keys.set(id, randomBytes(KEY_BYTES));
    await writeKeyFile(this.file, {
      formatVersion: 1,
      currentKeyId: id,
      keys: Object.fromEntries([...keys].map(([k, v]) => [k, v.toString('base64')])),
    });
    this.keys = keys;
    this.current = id;
    return id;
  }
}
