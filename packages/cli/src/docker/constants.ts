/**
 * Limits and defaults of the Docker volume plugin (`shale docker serve`), with their units.
 */

/** Where dockerd looks for plugin sockets: a socket here named shale.sock is plugin `shale`. */
export const PLUGIN_SOCKET_DEFAULT = '/run/docker/plugins/shale.sock';

/** Where volumes are mounted on this host: MOUNT_ROOT/NAME (created as needed). */
export const MOUNT_ROOT_DEFAULT = '/var/lib/shale/docker/volumes';

/** Where the plugin's vDisk mappings are recorded (as `shale vdisk map --map-dir`). */
export const PLUGIN_MAP_DIR_DEFAULT = '/var/lib/shale/docker/mapped';

/** The size of a volume created without `-o size=` (vDisks are thin: nothing is allocated). */
export const DEFAULT_VOLUME_SIZE_BYTES = 10 * 1024 ** 3;

/** The smallest volume: mkfs.xfs refuses less than 300 MiB, ext4 wants room for a journal. */
export const MIN_VOLUME_SIZE_BYTES = 16 * 1024 ** 2;

/** The vPool of a volume created without `-o vpool=`. */
export const DEFAULT_VPOOL = 'default';

/** The file systems a volume may be made with (`-o fs=`); the first is the default. */
export const FILE_SYSTEMS = ['ext4', 'xfs'] as const;

/**
 * The most a call may take before the plugin answers with an error (the work goes on
 * behind it, and a retry finds it done or still running). dockerd gives Create and Mount
 * 2 minutes and every other call 1 minute (moby volume/drivers/proxy.go); these stay
 * below, so that a user sees our message rather than dockerd's timeout.
 */
export const LONG_CALL_BUDGET_MS = 100_000;
export const SHORT_CALL_BUDGET_MS = 45_000;

/** How long mkfs may run on a new volume before it counts as failed. */
export const MKFS_TIMEOUT_MS = 90_000;

/** The largest request body the plugin reads (dockerd's are a few hundred bytes). */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** The content type of every answer (the plugin protocol's). */
export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';
