import fs from 'node:fs/promises';
import { ShaleError } from '@shale/common';
import { ApiClient } from '@shale/framework-api';
import { type OptionSpec, type OptionValues, optionalString, UsageError } from '../command.js';
import { defaultDataDir, readStatus } from '../up/cluster-layout.js';

/** The options every verb that talks to the API takes. */
export const API_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  api: {
    type: 'string',
    valueName: 'URL',
    description: 'the framework API (default: $SHALE_API, else the local shale up)',
  },
  token: {
    type: 'string',
    valueName: 'TOKEN',
    description: "its bearer token (default: $SHALE_TOKEN, else the local shale up's token file)",
  },
  'data-dir': {
    type: 'string',
    valueName: 'DIR',
    description: 'the data dir of the local shale up (default: $SHALE_DATA_DIR or ~/.shale)',
  },
  json: { type: 'boolean', description: 'print JSON (for scripts) instead of tables' },
};

/**
 * Finds the API: --api/--token, else SHALE_API/SHALE_TOKEN, else the status file of the
 * shale up running on the data dir (its API URL and token file). CLI_NO_CLUSTER when none.
 */
export async function apiClient(values: Readonly<OptionValues>): Promise<ApiClient> {
  const url = optionalString(values, 'api') ?? process.env.SHALE_API;
  const token = optionalString(values, 'token') ?? process.env.SHALE_TOKEN;
  if (url !== undefined) {
    if (token === undefined) {
      throw new UsageError('--api (or SHALE_API) needs --token (or SHALE_TOKEN)');
    }
    return new ApiClient({ url, token });
  }
  const dataDir = optionalString(values, 'data-dir') ?? defaultDataDir();
  const status = await readStatus(dataDir);
  if (status === undefined) {
    throw new ShaleError(
      'CLI_NO_CLUSTER',
      `no shale up is running on ${dataDir}; start one (shale up), or give --api URL --token T (or SHALE_API, SHALE_TOKEN)`,
    );
  }
  let fileToken: string;
  try {
    fileToken = (await fs.readFile(status.tokenFile, 'utf8')).trim();
  } catch (err) {
    throw new ShaleError('CLI_NO_CLUSTER', `cannot read the API token ${status.tokenFile}`, {
      cause: err,
    });
  }
  return new ApiClient({ url: status.apiUrl, token: token ?? fileToken });
}

/**
 * The NBD server that exports vDisks under their names, as HOST:PORT: --nbd, else
 * SHALE_NBD, else the local shale up's (its status file). With --api and neither: usage.
 */
export async function nbdTarget(values: Readonly<OptionValues>): Promise<string> {
  const given = optionalString(values, 'nbd') ?? process.env.SHALE_NBD;
  if (given !== undefined) {
    if (!/^[^\s/:]+:\d{1,5}$/.test(given) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(given)) {
      throw new UsageError(`--nbd must be HOST:PORT, not "${given}"`);
    }
    return given;
  }
  if ((optionalString(values, 'api') ?? process.env.SHALE_API) !== undefined) {
    throw new UsageError('--api (or SHALE_API) needs --nbd HOST:PORT (or SHALE_NBD)');
  }
  const dataDir = optionalString(values, 'data-dir') ?? defaultDataDir();
  const status = await readStatus(dataDir);
  if (status === undefined) {
    throw new ShaleError(
      'CLI_NO_CLUSTER',
      `no shale up is running on ${dataDir}; start one (shale up), or give --api URL --token T --nbd HOST:PORT`,
    );
  }
  return status.nbd;
}
