// Proves AsdOsd meets the OSD contract (osd-conformance.ts) against a real ASD daemon on a real directory.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AsdDaemon } from '@shale/asd';
import { AsdOsd } from './osd.js';
import { osdConformance } from './osd-conformance.js';

osdConformance('AsdOsd over a real ASD', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'osd-conf-'));
  const daemon = await AsdDaemon.start({
    dir,
    port: 0,
    nodeId: 'n1',
    reserveBytes: 0,
    log: () => undefined,
  });
  const osd = new AsdOsd({
    osdId: daemon.store.identity.asdId,
    nodeId: 'n1',
    address: daemon.address,
  });
  return {
    osd,
    done: async () => {
      osd.close();
      await daemon.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
});
