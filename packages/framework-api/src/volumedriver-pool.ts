import { ShaleError } from '@shale/common';
import { type VdiskLocation, VolumeClient } from '@shale/volumedriver';
import {
  API_OPERATION_CALL_DEADLINE_MS,
  API_PROBE_DEADLINE_MS,
  API_VOLUME_CALL_DEADLINE_MS,
} from './constants.js';

/** What the API calls on a volumedriver: the VolumeClient's control surface. */
export type VolumeApi = Pick<
  VolumeClient,
  | 'createVpool'
  | 'listVpools'
  | 'createVdisk'
  | 'resizeVdisk'
  | 'deleteVdisk'
  | 'listVdisks'
  | 'vdiskInfo'
  | 'createSnapshot'
  | 'listSnapshots'
  | 'deleteSnapshot'
  | 'cloneVdisk'
  | 'rollback'
  | 'syncToBackend'
  | 'scrub'
  | 'health'
  | 'listStorageRouters'
  | 'locateVdisk'
  | 'close'
>;

/** The seam to the network: a client of one volumedriver with one deadline per call. */
export type VolumeClientFactory = (address: string, deadlineMs: number) => VolumeApi;

/**
 * How long a call may take: control calls (lists, info, create, resize, snapshots), the
 * calls of background operations (clone, rollback, scrub, sync, delete), and probes.
 */
export type CallClass = 'control' | 'operation' | 'probe';

const DEADLINES_MS: Readonly<Record<CallClass, number>> = {
  control: API_VOLUME_CALL_DEADLINE_MS,
  operation: API_OPERATION_CALL_DEADLINE_MS,
  probe: API_PROBE_DEADLINE_MS,
};

/** Codes that say "this volumedriver could not be reached", not "it answered no". */
const UNREACHABLE = new Set(['VD_UNAVAILABLE', 'VD_DEADLINE_EXCEEDED', 'VD_RPC_FAILED']);

/**
 * The volumedrivers the API talks to. Cluster-wide calls (vPools, creating a vDisk, the
 * registry's lists, locating a vDisk) go to any configured volumedriver that can be
 * reached, the last one that answered first. Per-vDisk calls go to the vDisk's owner:
 * located first (LocateVdisk on any configured volumedriver), then called at its
 * registered address, which need not be one of the configured ones. Clients are cached
 * per address and call class; one whose channel failed is dropped so the next call gets
 * a fresh channel (grpc-js backs off reconnecting a failed one for a long time).
 */
export class VolumedriverPool {
  private readonly clients = new Map<string, VolumeApi>();
  private preferred = 0;
  private readonly factory: VolumeClientFactory;

  constructor(
    readonly addresses: readonly string[],
    factory?: VolumeClientFactory,
  ) {
    if (addresses.length === 0) {
      throw new ShaleError('API_BAD_REQUEST', 'the API needs at least one volumedriver address');
    }
    this.factory = factory ?? ((address, deadlineMs) => new VolumeClient(address, deadlineMs));
  }

  client(address: string, callClass: CallClass = 'control'): VolumeApi {
    const key = `${callClass} ${address}`;
    let client = this.clients.get(key);
    if (client === undefined) {
      client = this.factory(address, DEADLINES_MS[callClass]);
      this.clients.set(key, client);
    }
    return client;
  }

  /** Runs `call` on one volumedriver at `address`; an unreachable one's client is dropped. */
  async at<T>(
    address: string,
    call: (client: VolumeApi) => Promise<T>,
    callClass: CallClass = 'control',
  ): Promise<T> {
    const client = this.client(address, callClass);
    try {
      return await call(client);
    } catch (err) {
      if (err instanceof ShaleError && UNREACHABLE.has(err.code))
        this.drop(address, callClass, client);
      throw err;
    }
  }

  /**
   * Runs `call` on the first configured volumedriver that can be reached. An answer (an
   * error such as VD_NOT_FOUND too) ends the search; VD_UNAVAILABLE when none answered.
   * A `mutation` moves on only when the volumedriver was not reached at all
   * (VD_UNAVAILABLE): after a deadline it may have done the work, and doing it again
   * elsewhere would answer VD_EXISTS for what the first one made.
   */
  async ask<T>(
    what: string,
    call: (client: VolumeApi) => Promise<T>,
    options: { readonly callClass?: CallClass; readonly mutation?: boolean } = {},
  ): Promise<T> {
    const failures: string[] = [];
    for (let i = 0; i < this.addresses.length; i++) {
      const index = (this.preferred + i) % this.addresses.length;
      const address = this.addresses[index] as string;
      try {
        const result = await this.at(address, call, options.callClass ?? 'control');
        this.preferred = index;
        return result;
      } catch (err) {
        if (!(err instanceof ShaleError) || !UNREACHABLE.has(err.code)) throw err;
        if (options.mutation === true && err.code !== 'VD_UNAVAILABLE') throw err;
        failures.push(`${address}: ${err.message}`);
      }
    }
    throw new ShaleError(
      'VD_UNAVAILABLE',
      `${what}: no volumedriver could be reached (${failures.join('; ')})`,
    );
  }

  locate(vdiskName: string): Promise<VdiskLocation> {
    return this.ask(`locate vDisk ${vdiskName}`, (c) => c.locateVdisk(vdiskName));
  }

  /** The address of the vDisk's owner (VD_NOT_FOUND: no such vDisk; VD_UNAVAILABLE: no address). */
  async ownerOf(vdiskName: string): Promise<string> {
    const location = await this.locate(vdiskName);
    if (location.ownerAddress === '') {
      throw new ShaleError(
        'VD_UNAVAILABLE',
        `vDisk ${vdiskName}: its owner ${location.ownerNodeId} has not registered an address`,
      );
    }
    return location.ownerAddress;
  }

  /** Locates the vDisk and runs `call` on its owner. */
  async onOwner<T>(
    vdiskName: string,
    call: (client: VolumeApi) => Promise<T>,
    callClass: CallClass = 'control',
  ): Promise<T> {
    return this.at(await this.ownerOf(vdiskName), call, callClass);
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  private drop(address: string, callClass: CallClass, client: VolumeApi): void {
    const key = `${callClass} ${address}`;
    if (this.clients.get(key) !== client) return;
    this.clients.delete(key);
    client.close();
  }
}
