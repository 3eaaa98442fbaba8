import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { systemErrorCode } from '@shale/common';
import { FORMAT_VERSION } from './constants.js';
import type { Disk } from './disk.js';
import { AsdErrorCode, asdError } from './errors.js';

/** Written once, at the first start, in <dir>/asd-identity.json. */
export interface AsdIdentity {
  readonly asdId: string;
  readonly nodeId: string;
  readonly createdAtMs: number;
  readonly formatVersion: number;
}

export const IDENTITY_FILE = 'asd-identity.json';
/** Names the ASD itself creates in its directory; anything else makes a fresh directory "not empty". */
export const OWN_ENTRIES = new Set([IDENTITY_FILE, 'index', 'objects', `${IDENTITY_FILE}.tmp`]);
/** Entries a freshly formatted file system has, which do not make it "in use". */
const HARMLESS_ENTRIES = new Set(['lost+found']);

/**
 * Loads the identity of the ASD directory, or writes a new one on first start.
 *
 * Refusals (each unless `claim`): the directory belongs to another ASD id than the one
 * asked for, or to another node; or it holds files that are not an ASD's (someone's
 * data: never format over it).
 */
export async function loadOrCreateIdentity(
  disk: Disk,
  dir: string,
  wanted: { asdId?: string; nodeId: string; claim: boolean },
): Promise<{ identity: AsdIdentity; created: boolean; claimed: boolean }> {
  const file = path.join(dir, IDENTITY_FILE);
  let existing: AsdIdentity | undefined;
  try {
    existing = parseIdentity(await fs.readFile(file, 'utf8'), file);
  } catch (err) {
    if (systemErrorCode(err) !== 'ENOENT') throw err;
  }

  if (existing === undefined) {
    const foreign = (await disk.readdir(dir)).filter(
      (name) => !OWN_ENTRIES.has(name) && !HARMLESS_ENTRIES.has(name),
    );
    if (foreign.length > 0 && !wanted.claim) {
      throw asdError(
        AsdErrorCode.DirNotEmpty,
        `${dir} is not an ASD directory and is not empty (${foreign.slice(0, 5).join(', ')}${foreign.length > 5 ? ', ...' : ''}); refusing to use it. Pass --claim to use it anyway.`,
      );
    }
    const identity: AsdIdentity = {
      asdId: wanted.asdId ?? randomUUID(),
      nodeId: wanted.nodeId,
      createdAtMs: Date.now(),
      formatVersion: FORMAT_VERSION,
    };
    await writeIdentity(disk, dir, identity);
    return { identity, created: true, claimed: false };
  }

  const asdMismatch = wanted.asdId !== undefined && wanted.asdId !== existing.asdId;
  const nodeMismatch = wanted.nodeId !== existing.nodeId;
  if (!asdMismatch && !nodeMismatch) return { identity: existing, created: false, claimed: false };
  if (!wanted.claim) {
    const what = asdMismatch
      ? `belongs to ASD ${existing.asdId}, not ${wanted.asdId}`
      : `belongs to ASD ${existing.asdId} of node ${existing.nodeId}, not node ${wanted.nodeId}`;
    throw asdError(
      AsdErrorCode.IdentityMismatch,
      `${dir} ${what}; refusing to serve it. Pass --claim to take it over (its objects are kept).`,
      { details: { asdId: existing.asdId, nodeId: existing.nodeId } },
    );
  }
  const identity: AsdIdentity = {
    ...existing,
    asdId: wanted.asdId ?? existing.asdId,
    nodeId: wanted.nodeId,
  };
  await writeIdentity(disk, dir, identity);
  return { identity, created: false, claimed: true };
}

function parseIdentity(text: string, file: string): AsdIdentity {
  const parsed: unknown = JSON.parse(text);
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    typeof (parsed as AsdIdentity).asdId !== 'string' ||
    typeof (parsed as AsdIdentity).nodeId !== 'string' ||
    typeof (parsed as AsdIdentity).createdAtMs !== 'number' ||
    typeof (parsed as AsdIdentity).formatVersion !== 'number'
  ) {
    throw asdError(AsdErrorCode.InvalidArgument, `${file} is not a valid ASD identity file`);
  }
  const identity = parsed as AsdIdentity;
  if (identity.formatVersion !== FORMAT_VERSION) {
    throw asdError(
      AsdErrorCode.InvalidArgument,
      `${file} has format version ${identity.formatVersion}; this ASD reads version ${FORMAT_VERSION}`,
    );
  }
  return identity;
}

/** Write to a temporary name, fsync, rename, fsync the directory: the file is whole or absent. */
async function writeIdentity(disk: Disk, dir: string, identity: AsdIdentity): Promise<void> {
  const file = path.join(dir, IDENTITY_FILE);
  const tmp = `${file}.tmp`;
  await disk.writeFileDurably(tmp, Buffer.from(`${JSON.stringify(identity, null, 2)}\n`));
  await fs.rename(tmp, file);
  await disk.fsyncDir(dir);
}
