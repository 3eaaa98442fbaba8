/**
 * `shale iscsi serve`: runs (or adopts) tgtd and keeps its targets in line with the iSCSI
 * target records of the metadata store, until SIGTERM/SIGINT; then removes its targets and,
 * when it started tgtd, tgtd itself. It exits 1 when tgtd stops answering (its supervisor,
 * `shale up`, starts it again, and every target comes back from the records).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ShaleError } from '@shale/common';
import { IscsiTargetRecords, SecretBox } from '@shale/framework-api';
import { nbdTarget } from '../admin/api-target.js';
import {
  type Command,
  EXIT_FAILURE,
  EXIT_OK,
  optionalString,
  parsePort,
  requireString,
  UsageError,
} from '../command.js';
import { KV_OPTIONS, openKv } from '../commands/kv-option.js';
import { waitForShutdownSignal } from '../signals.js';
import { controlPortFor, ISCSI_PORTAL_DEFAULT, NATIVE_BSTYPE } from './constants.js';
import { type BackingKind, LunBacking } from './lun-backing.js';
import { IscsiReconciler } from './reconciler.js';
import { parsePortal, portalText, TgtDaemon } from './tgt-daemon.js';

/** How often serve checks that tgtd still answers. */
const TGTD_CHECK_MS = 2_000;
const STATE_DIR_DEFAULT = '/var/lib/shale/iscsi';

export const iscsiServeCommand: Command = {
  name: 'serve',
  summary: 'run tgtd and keep its iSCSI targets in line with the metadata store',
  usage:
    'shale iscsi serve (--kv etcd://HOST:PORT,... | --kv kv://HOST:PORT) --key-file FILE [--nbd HOST:PORT | --data-dir DIR] [--portal 127.0.0.1:3260] [--tgt-control N] [--backing auto|native|file] [--unmap on|off] [--state-dir DIR]',
  options: {
    ...KV_OPTIONS,
    'key-file': {
      type: 'string',
      valueName: 'FILE',
      description: "the key that opens the targets' CHAP secrets (the API's --iscsi-key-file)",
    },
    nbd: {
      type: 'string',
      valueName: 'HOST:PORT',
      description:
        "the NBD server LUNs read and write (default: $SHALE_NBD, else the local shale up's)",
    },
    'data-dir': {
      type: 'string',
      valueName: 'DIR',
      description: 'find the NBD server through the shale up on DIR',
    },
    portal: {
      type: 'string',
      valueName: 'ADDR:PORT',
      description: `where tgtd listens for initiators (default ${ISCSI_PORTAL_DEFAULT})`,
    },
    'tgt-control': {
      type: 'string',
      valueName: 'N',
      description:
        'adopt the tgtd already running with control port N (tgtd -C N) instead of starting one',
    },
    backing: {
      type: 'string',
      valueName: 'KIND',
      description:
        'native (tgt bs_shale), file (nbdfuse + rdwr), or auto: native when tgtd has it (default auto)',
    },
    unmap: {
      type: 'string',
      valueName: 'on|off',
      description:
        'on: LUNs are thin provisioned, UNMAP and WRITE SAME with unmap free space in the vDisk (default on)',
    },
    'state-dir': {
      type: 'string',
      valueName: 'DIR',
      description: `tgtd's pid file and nbdfuse mounts (default ${STATE_DIR_DEFAULT})`,
    },
  },
  details:
    'Run as root. A tgtd it starts uses the port of the portal as its control port (tgtadm -C PORT; ports above 32767 less 32768). Prints {"event":"listening",...} on stdout when every target is in place.',
  async run(values) {
    const shutdown = waitForShutdownSignal();
    const log = (line: string) => process.stderr.write(`shale iscsi: ${line}\n`);
    const portal = parsePortal(optionalString(values, 'portal') ?? ISCSI_PORTAL_DEFAULT);
    const adopt = optionalString(values, 'tgt-control');
    const backingWanted = optionalString(values, 'backing') ?? 'auto';
    if (!['auto', 'native', 'file'].includes(backingWanted)) {
      throw new UsageError(`--backing must be auto, native or file, not "${backingWanted}"`);
    }
    const unmap = optionalString(values, 'unmap') ?? 'on';
    if (unmap !== 'on' && unmap !== 'off')
      throw new UsageError(`--unmap must be on or off, not "${unmap}"`);
    const keyFile = requireString(values, 'key-file');
    const stateDir = optionalString(values, 'state-dir') ?? STATE_DIR_DEFAULT;
    const nbd = await nbdTarget(values);
    const box = await SecretBox.open(keyFile);
    const kv = await openKv(values);
    const daemon =
      adopt === undefined
        ? await TgtDaemon.start({ control: controlPortFor(portal.port), portal, stateDir, log })
        : await TgtDaemon.adopt(parsePort(adopt, 'tgt-control'), log);
    let backing: LunBacking | undefined;
    let reconciler: IscsiReconciler | undefined;
    try {
      const stores = await daemon.admin.backingStores();
      const hasNative = stores.includes(NATIVE_BSTYPE);
      if (backingWanted === 'native' && !hasNative) {
        throw new ShaleError(
          'ISCSI_NO_NATIVE_BACKING',
          `tgtd has no "${NATIVE_BSTYPE}" backing store (it has ${stores.join(', ')}): build it with scripts/build-tgt-bs-shale.sh, or use --backing file`,
        );
      }
      const kind: BackingKind = backingWanted === 'file' || !hasNative ? 'file' : 'native';
      if (kind === 'file' && backingWanted === 'auto') {
        log(
          `tgtd has no "${NATIVE_BSTYPE}" backing store: LUNs are nbdfuse files (no reconnect when the edge restarts; scripts/build-tgt-bs-shale.sh builds the native one)`,
        );
      }
      backing = new LunBacking(kind, nbd, stateDir, log);
      reconciler = new IscsiReconciler({
        admin: daemon.admin,
        records: new IscsiTargetRecords(kv),
        box,
        backing,
        thinProvisioning: unmap === 'on',
        log,
      });
      const first = await reconciler.start(kv);
      process.stdout.write(
        `${JSON.stringify({ event: 'listening', service: 'iscsi', portal: portalText(portal), control: daemon.admin.control, backing: kind, nbd, targets: first.kept + first.made, failures: first.failures })}\n`,
      );
      const stopped = await Promise.race([
        shutdown.then((signal) => ({ signal })),
        watchTgtd(daemon).then(() => ({ signal: undefined })),
      ]);
      if (stopped.signal === undefined) {
        log('tgtd stopped answering: exiting so that it is started again');
        await reconciler.stop().catch(() => undefined);
        await daemon.stop();
        await kv.close();
        return EXIT_FAILURE;
      }
      log(`${stopped.signal}: removing targets`);
    } catch (err) {
      await reconciler?.stop().catch(() => undefined);
      await backing?.releaseAll();
      await daemon.stop();
      await kv.close();
      throw err;
    }
    await reconciler.stop();
    await daemon.stop();
    await kv.close();
    return EXIT_OK;
  },
};

async function watchTgtd(daemon: TgtDaemon): Promise<void> {
  for (;;) {
    await sleep(TGTD_CHECK_MS);
    if (!(await daemon.answering().catch(() => false))) return;
  }
}
