/**
 * Limits and defaults of `shale iscsi serve` (tgtd driven through tgtadm), with their units.
 */

/** The iSCSI portal when none is given: the IANA port, loopback only. */
export const ISCSI_PORTAL_DEFAULT = '127.0.0.1:3260';

/** tgtadm refuses control ports (`-C N`, socket /run/tgtd/socket.N) above this. */
export const TGT_CONTROL_MAX = 32_767;

/** The control port of the tgtd serve starts: the portal's port, folded into tgtadm's range. */
export function controlPortFor(portalPort: number): number {
  return portalPort <= TGT_CONTROL_MAX ? portalPort : portalPort - (TGT_CONTROL_MAX + 1);
}

/** Any one tgtadm call before SIGKILL. */
export const TGTADM_TIMEOUT_MS = 15_000;

/** How long a started tgtd may take to answer tgtadm. */
export const TGTD_READY_TIMEOUT_MS = 10_000;

/** How long tgtd may take to exit after `--op delete --mode system` before SIGKILL. */
export const TGTD_EXIT_TIMEOUT_MS = 5_000;

/** The reconciler compares the store with tgtd this often, besides on every change. */
export const RECONCILE_INTERVAL_MS = 10_000;

/** Polling interval while waiting for tgtd or nbdfuse. */
export const ISCSI_POLL_MS = 50;

/** Every target's one data LUN (LUN 0 is tgt's controller). */
export const ISCSI_DATA_LUN = 1;

/** tgt's backing store served by native/tgt-bs-shale (NBD straight to the edge). */
export const NATIVE_BSTYPE = 'shale';

/** The backing store under an nbdfuse file when the native one is not installed. */
export const FILE_BSTYPE = 'rdwr';

/** How long nbdfuse may take to connect and serve its file. */
export const NBDFUSE_READY_TIMEOUT_MS = 15_000;
