import type { OsdRecord } from './backend-registry.js';
import { AsdOsd, type Osd, type OsdAddress } from './osd.js';

export type OsdFactory = (address: OsdAddress) => Osd;

export const defaultOsdFactory: OsdFactory = (address) => new AsdOsd(address);

/**
 * One client per OSD, made on first use and replaced when the registry gives the OSD a new
 * address. The number of clients is bounded by the OSDs of the backend.
 */
export class OsdPool {
  private readonly clients = new Map<string, { address: string; osd: Osd }>();

  constructor(private readonly factory: OsdFactory = defaultOsdFactory) {}

  get(record: OsdAddress | OsdRecord): Osd {
    const known = this.clients.get(record.osdId);
    if (known !== undefined && known.address === record.address) return known.osd;
    known?.osd.close();
    const osd = this.factory({
      osdId: record.osdId,
      nodeId: record.nodeId,
      address: record.address,
    });
    this.clients.set(record.osdId, { address: record.address, osd });
    return osd;
  }

  close(): void {
    for (const { osd } of this.clients.values()) osd.close();
    this.clients.clear();
  }
}
