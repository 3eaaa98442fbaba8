import type { BackendRecord, BackendRegistry, OsdRecord } from '@shale/alba-proxy';
import { AsdClient } from '@shale/asd';
import { errorMessage } from '@shale/common';
import { mapBounded } from './bounded-map.js';
import { API_PROBE_CONCURRENCY, API_PROBE_DEADLINE_MS } from './constants.js';
import type { Asd } from './schemas.js';

/** What the API asks an ASD: its capacity and whether it is ok. */
export interface AsdProbeClient {
  stats(options: { deadlineMs?: number }): Promise<{
    capacityBytes: number;
    usedBytes: number;
    freeBytes: number;
    objectCount: number;
    /**
     * The file system the ASD's directory is on (its device), so that ASDs sharing one
     * count its space once; empty when the ASD is capped by --capacity-bytes.
     */
    filesystemId?: string;
    /** When the ASD last refused a put for lack of space (0: never). */
    lastNoSpaceAtMs?: number;
  }>;
  health(options: { deadlineMs?: number }): Promise<{ status: string; reason: string }>;
  close(): void;
}

/** The seam to the network. */
export type AsdClientFactory = (address: string) => AsdProbeClient;

/**
 * Live state of the OSDs in the backend registry: one short-deadline stats and health call
 * per ASD (at most API_PROBE_CONCURRENCY at once). An ASD that does not answer is reported
 * `healthy: false` with the reason in `detail`; it is never an error of the request.
 */
export class AsdProbe {
  private readonly clients = new Map<string, AsdProbeClient>();
  private readonly factory: AsdClientFactory;

  constructor(
    private readonly registry: BackendRegistry,
    factory?: AsdClientFactory,
    private readonly deadlineMs = API_PROBE_DEADLINE_MS,
  ) {
    // One try: a probe reports what it saw within its deadline, it does not retry.
    this.factory = factory ?? ((address) => new AsdClient(address, { deadlineMs, maxAttempts: 1 }));
  }

  /** Every OSD record of every backend, in backend then registry order, probed. */
  async probeAll(): Promise<Asd[]> {
    const backends = await this.registry.listBackends();
    const records = (
      await Promise.all(
        backends.map((backend: BackendRecord) => this.registry.listOsds(backend.backendId)),
      )
    ).flat();
    return mapBounded(records, API_PROBE_CONCURRENCY, (record) => this.probe(record));
  }

  async probe(record: OsdRecord): Promise<Asd> {
    const base = {
      id: record.osdId,
      backend: record.backendId,
      nodeId: record.nodeId,
      address: record.address,
      state: record.state,
    };
    const client = this.client(record.address);
    const options = { deadlineMs: this.deadlineMs };
    const [stats, health] = await Promise.allSettled([
      client.stats(options),
      client.health(options),
    ]);
    if (stats.status === 'rejected' || health.status === 'rejected') {
      // A fresh channel next time: a failed one backs off reconnecting for a long time.
      this.drop(record.address, client);
      const failure =
        stats.status === 'rejected'
          ? stats.reason
          : health.status === 'rejected'
            ? health.reason
            : undefined;
      return {
        ...base,
        healthy: false,
        detail: `unreachable: ${errorMessage(failure)}`.slice(0, 4096),
      };
    }
    const ok = health.value.status === 'ok';
    return {
      ...base,
      healthy: ok,
      ...(ok ? {} : { detail: `${health.value.status}: ${health.value.reason}`.slice(0, 4096) }),
      capacityBytes: stats.value.capacityBytes,
      usedBytes: stats.value.usedBytes,
      freeBytes: stats.value.freeBytes,
      objectCount: stats.value.objectCount,
      ...(stats.value.filesystemId === undefined || stats.value.filesystemId === ''
        ? {}
        : { filesystemId: stats.value.filesystemId.slice(0, 1024) }),
      ...(stats.value.lastNoSpaceAtMs === undefined || stats.value.lastNoSpaceAtMs === 0
        ? {}
        : { lastNoSpaceAtMs: stats.value.lastNoSpaceAtMs }),
    };
  }

  close(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  private drop(address: string, client: AsdProbeClient): void {
    if (this.clients.get(address) !== client) return;
    this.clients.delete(address);
    client.close();
  }

  private client(address: string): AsdProbeClient {
    let client = this.clients.get(address);
    if (client === undefined) {
      client = this.factory(address);
      this.clients.set(address, client);
    }
    return client;
  }
}
