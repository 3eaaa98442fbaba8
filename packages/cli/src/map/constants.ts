/**
 * Limits and defaults of `shale vdisk map` (nbdfuse + a loop device), with their units.
 * The CLI package has no other constants yet; these live beside the code that uses them.
 */

/** Where mappings are recorded: one directory per vDisk (record, FUSE mountpoint, log). */
export const MAP_DIR_DEFAULT = '/var/lib/shale/mapped';

/** How long nbdfuse may take to connect and serve its file before map gives up. */
export const NBDFUSE_READY_TIMEOUT_MS = 15_000;

/** How long an unmapped nbdfuse may take to exit after its FUSE mount is gone. */
export const NBDFUSE_EXIT_TIMEOUT_MS = 10_000;

/** Any one host command (losetup, fusermount3, umount, modprobe -n) before SIGKILL. */
export const HOST_COMMAND_TIMEOUT_MS = 30_000;

/** Polling interval while waiting for nbdfuse (its pid file, its exit). */
export const POLL_INTERVAL_MS = 50;

/** The bytes of nbdfuse's log that an error message quotes. */
export const LOG_TAIL_BYTES = 2048;

/**
 * How long map/unmap wait for another one working on the same vDisk (its lock file names
 * its pid; a lock whose process is gone, a map killed midway, is taken over at once).
 */
export const MAP_LOCK_TIMEOUT_MS = 30_000;

/** The name of the file inside the FUSE mountpoint that nbdfuse serves. */
export const NBDFUSE_FILE_NAME = 'nbd';

/** vDisk names that are safe as a directory name (the API's own rule is at least this strict). */
export const MAPPABLE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Debian packages of the host tools, named in MAP_TOOL_MISSING. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  nbdfuse: 'libnbd-bin',
  fusermount3: 'fuse3',
  losetup: 'mount',
  umount: 'mount',
};
