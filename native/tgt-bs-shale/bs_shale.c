/*
 * bs_shale.c -- tgt backing store that serves a LUN straight from an NBD
 * export (Shale's edge, or any NBD server) through libnbd.
 *
 *   initiator --iSCSI--> tgtd --(bs_thread worker)--> libnbd handle --NBD--> edge
 *
 * Modelled on tgt's bs_rdwr.c / bs_rbd.c (GPL-2.0, FUJITA Tomonori, Mike
 * Christie and others); this file is GPL-2.0 for the same reason: it is
 * compiled against tgt's headers and loaded into tgtd.
 *
 * Threading: tgt's bs_thread pool runs bs_shale_request() on nr_iothreads
 * worker threads per LU (16 by default, tgtd -t). Each worker owns one libnbd
 * handle (one NBD connection), so as many commands are in flight on the
 * wire as there are workers. A worker finds its slot through a thread-local
 * pointer set the first time it runs a command; slots are claimed in order
 * under the LU's mutex. Only the owner replaces its slot's handle (on
 * reconnect), under the slot's mutex; a flush takes every other slot's mutex
 * in turn to flush that connection too when it holds unflushed writes.
 *
 * Reconnect (per worker, per command):
 *
 *   [connected] --call fails, connection dead--> [closed]
 *   [closed] --connect ok--> [connected] --> retry the same call
 *   [closed] --connect fails--> sleep backoff (100 ms, doubling, cap 2 s)
 *            --> [closed], until 60 s since the first failure: fail the
 *                command with a sense error
 *
 * NBD writes, trims and zeroes are idempotent, so re-sending one whose reply
 * was lost with the connection is safe.
 *
 * Lost writes: an NBD server may drop writes it acknowledged but was not
 * asked to flush when it dies (Shale's volumedriver SIGKILLed), and a flush
 * on a new connection, to the restarted server, cannot cover them. Each slot
 * counts the writes acked on its connection since a flush there covered
 * them; a connection that dies with that count above zero adds it to the
 * LU's orphans, under the durable epoch its server told (the
 * `durable-epoch=E` at the end of the export description: Shale's edge,
 * co-located, where acked writes outlive the process). A flush on a
 * connection with the same epoch covers orphans of that epoch; any other
 * orphan (no epoch, or another one: the host rebooted, writes were lost on
 * a restore) is lost, and the next SYNCHRONIZE CACHE fails (MEDIUM ERROR /
 * WRITE ERROR) instead of telling the initiator they are stable. A flush
 * goes to every connection holding unflushed writes, even on a
 * CAN_MULTI_CONN export: that flush is what proves the connection (and the
 * server instance that acked them) is still alive.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "list.h"
#include "util.h"
#include "tgtd.h"
#include "scsi.h"
#include "spc.h"
#include "bs_thread.h"

/* ---- limits (units last) ---- */
/* Largest payload sent in one NBD read/write; nbdkit and Shale's edge take 32 MiB. */
#define SHALE_MAX_IO_BYTES		(32u << 20)
/* Largest count sent in one NBD zero/trim (no payload; NBD counts are 32-bit). */
#define SHALE_MAX_ZERO_BYTES		(1u << 30)
/* Pattern buffer for WRITE SAME with non-zero data. */
#define SHALE_PATTERN_BUF_BYTES		(1u << 20)
#define SHALE_RECONNECT_FIRST_MS	100
#define SHALE_RECONNECT_CAP_MS		2000
#define SHALE_RECONNECT_DEADLINE_MS	60000
/* Longest durable epoch kept (longer ones count as none: conservative). */
#define SHALE_EPOCH_BYTES		128
/* Distinct epochs with orphaned writes at once (more: counted lost). */
#define SHALE_ORPHAN_EPOCHS_MAX		16
/* A flush is resent at most this often to cover orphans its own retry made. */
#define SHALE_FLUSH_ROUNDS_MAX		3
/* SBC: DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT */
#define SHALE_ASC_SPACE_ALLOC_FAILED	0x2707

struct shale_slot {
	pthread_mutex_t lock;		/* guards nbd's lifetime (close/replace) */
	struct nbd_handle *nbd;		/* NULL when not connected */
	/* Writes acked on nbd (without FUA) that no flush on nbd covers yet.
	 * Added to by the owner; taken away under lock. */
	atomic_uint_fast64_t unflushed;
	uint64_t deaths;		/* under lock: connections of this slot lost */
	char epoch[SHALE_EPOCH_BYTES];	/* under lock: nbd's durable epoch, or "" */
	bool ever_connected;		/* owner only: lazy first connect is no failure */
};

struct shale_lu {
	char *uri;
	uint64_t size_bytes;
	int lseek_fd;			/* handed to tgt as lu->fd; see bs_shale_open */
	bool read_only, can_flush, can_fua, can_trim, can_zero, can_multi_conn;

	/* Acked-unflushed writes on connections that died since a flush last
	 * reported them: the next flush fails. */
	atomic_uint_fast64_t lost_writes;
	/* Acked-unflushed writes of dead connections, by the server's durable
	 * epoch: a flush on a connection of that epoch covers them. */
	pthread_mutex_t orphan_lock;
	struct shale_orphans {
		char epoch[SHALE_EPOCH_BYTES];
		uint64_t writes;
	} orphans[SHALE_ORPHAN_EPOCHS_MAX];

	pthread_mutex_t claim_lock;
	int nr_slots, nr_claimed;
	struct shale_slot *slots;
};

/* shale_lu lives just after the bs_thread_info, as active_rbd does in bs_rbd. */
static inline struct shale_lu *SHALEP(struct scsi_lu *lu)
{
	return (struct shale_lu *)((char *)lu + sizeof(struct scsi_lu) +
				   sizeof(struct bs_thread_info));
}

/* A worker thread serves exactly one LU (bs_thread_open makes threads per LU). */
static __thread struct shale_lu *tls_lu;
static __thread struct shale_slot *tls_slot;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/*
 * The durable epoch at the end of the export's description
 * ("...; durable-epoch=E"), into out; "" when there is none.
 */
static void read_epoch(struct nbd_handle *nbd, char out[SHALE_EPOCH_BYTES])
{
	char *description = nbd_get_export_description(nbd);
	const char *mark = "durable-epoch=";
	char *at;

	out[0] = '\0';
	if (!description)
		return;
	at = strstr(description, mark);
	if (at) {
		at += strlen(mark);
		size_t n = strcspn(at, "; \t\n");

		if (n > 0 && n < SHALE_EPOCH_BYTES) {
			memcpy(out, at, n);
			out[n] = '\0';
		}
	}
	free(description);
}

static struct nbd_handle *shale_connect(const char *uri)
{
	struct nbd_handle *nbd = nbd_create();

	if (!nbd) {
		eprintf("bs_shale: nbd_create: %s\n", nbd_get_error());
		return NULL;
	}
	nbd_set_full_info(nbd, true);	/* ask for the description: the epoch */
	if (nbd_connect_uri(nbd, uri) == -1) {
		dprintf("bs_shale: connect %s: %s\n", uri, nbd_get_error());
		nbd_close(nbd);
		return NULL;
	}
	return nbd;
}

static struct shale_slot *my_slot(struct shale_lu *s)
{
	if (tls_lu != s) {
		pthread_mutex_lock(&s->claim_lock);
		/* bs_thread_open starts nr_slots workers; each claims once. */
		if (s->nr_claimed >= s->nr_slots) {
			pthread_mutex_unlock(&s->claim_lock);
			eprintf("bs_shale: more workers than slots (%d)\n",
				s->nr_slots);
			abort();
		}
		tls_slot = &s->slots[s->nr_claimed++];
		tls_lu = s;
		pthread_mutex_unlock(&s->claim_lock);
	}
	return tls_slot;
}

static bool is_connection_error(struct nbd_handle *nbd, int err)
{
	if (nbd_aio_is_dead(nbd) > 0 || nbd_aio_is_closed(nbd) > 0)
		return true;
	switch (err) {
	case ENOTCONN:
	case ESHUTDOWN:
	case EPIPE:
	case ECONNRESET:
	case ECONNABORTED:
	case ECONNREFUSED:
	case ETIMEDOUT:
		return true;
	default:
		return false;
	}
}

enum shale_op { OP_PREAD, OP_PWRITE, OP_FLUSH, OP_TRIM, OP_ZERO };

static const char *op_name[] = { "pread", "pwrite", "flush", "trim", "zero" };

/*
 * A transfer that is not a whole number of the export's minimum blocks (the
 * iSCSI residual tests send them; Shale's edge advertises 512-byte blocks and
 * libnbd refuses unaligned requests to it): through a bounce buffer of the
 * aligned blocks around it, read-modify-write for writes and zeroes. Not
 * atomic against another command on the same blocks (no initiator sends such
 * transfers but conformance suites). A zero-length transfer is done at once.
 */
static int call_unaligned(struct nbd_handle *nbd, enum shale_op op, void *buf,
			  uint64_t count, uint64_t offset, uint32_t flags,
			  uint64_t block)
{
	uint64_t start = offset / block * block;
	uint64_t end = (offset + count + block - 1) / block * block;
	uint64_t size = (uint64_t)nbd_get_size(nbd);
	char *bounce;
	int rc;

	if (end > size)
		end = size;
	if (end <= start || offset + count > end) {
		errno = EINVAL;
		return -1;
	}
	bounce = malloc(end - start);
	if (!bounce) {
		errno = ENOMEM;
		return -1;
	}
	rc = nbd_pread(nbd, bounce, end - start, start, 0);
	if (rc == 0 && op == OP_PREAD)
		memcpy(buf, bounce + (offset - start), count);
	if (rc == 0 && op != OP_PREAD) {
		if (op == OP_PWRITE)
			memcpy(bounce + (offset - start), buf, count);
		else
			memset(bounce + (offset - start), 0, count);
		rc = nbd_pwrite(nbd, bounce, end - start, start,
				flags & LIBNBD_CMD_FLAG_FUA);
	}
	free(bounce);
	return rc;
}

static int call_once(struct nbd_handle *nbd, enum shale_op op, void *buf,
		     uint64_t count, uint64_t offset, uint32_t flags)
{
	if (op != OP_FLUSH) {
		int64_t block = nbd_get_block_size(nbd, LIBNBD_SIZE_MINIMUM);

		if (count == 0)
			return 0;
		if (block > 1 && ((offset | count) % (uint64_t)block) != 0) {
			/* A trim is advisory: only its whole blocks are sent. */
			if (op == OP_TRIM) {
				uint64_t b = (uint64_t)block;
				uint64_t start = (offset + b - 1) / b * b;
				uint64_t end = (offset + count) / b * b;

				return end > start ?
					nbd_trim(nbd, end - start, start, flags) : 0;
			}
			return call_unaligned(nbd, op, buf, count, offset,
					      flags, (uint64_t)block);
		}
	}
	switch (op) {
	case OP_PREAD:
		return nbd_pread(nbd, buf, count, offset, 0);
	case OP_PWRITE:
		return nbd_pwrite(nbd, buf, count, offset, flags);
	case OP_FLUSH:
		return nbd_flush(nbd, 0);
	case OP_TRIM:
		return nbd_trim(nbd, count, offset, flags);
	case OP_ZERO:
		return nbd_zero(nbd, count, offset, flags);
	}
	abort();
}

/*
 * The slot's connection is dead: the writes it acked unflushed may be gone
 * with the server. Caller holds slot->lock.
 */
static void slot_connection_lost(struct shale_lu *s, struct shale_slot *slot)
{
	uint_fast64_t n = atomic_exchange(&slot->unflushed, 0);
	int i, free_at = -1;

	slot->deaths++;
	if (!n)
		return;
	if (slot->epoch[0]) {
		pthread_mutex_lock(&s->orphan_lock);
		for (i = 0; i < SHALE_ORPHAN_EPOCHS_MAX; i++) {
			struct shale_orphans *o = &s->orphans[i];

			if (o->writes && strcmp(o->epoch, slot->epoch) == 0)
				break;
			if (!o->writes && free_at < 0)
				free_at = i;
		}
		if (i == SHALE_ORPHAN_EPOCHS_MAX && free_at >= 0) {
			i = free_at;
			strcpy(s->orphans[i].epoch, slot->epoch);
		}
		if (i < SHALE_ORPHAN_EPOCHS_MAX) {
			s->orphans[i].writes += n;
			pthread_mutex_unlock(&s->orphan_lock);
			eprintf("bs_shale: %s: connection died holding %" PRIuFAST64
				" acknowledged unflushed writes (durable epoch "
				"%s): a flush on that epoch covers them\n",
				s->uri, n, slot->epoch);
			return;
		}
		pthread_mutex_unlock(&s->orphan_lock);
	}
	atomic_fetch_add(&s->lost_writes, n);
	eprintf("bs_shale: %s: connection died holding %" PRIuFAST64
		" acknowledged unflushed writes (no durable epoch); the next "
		"flush fails\n", s->uri, n);
}

/*
 * One NBD call on this worker's connection, reconnecting and retrying on a
 * connection error until SHALE_RECONNECT_DEADLINE_MS has passed since the
 * first failure. Returns 0, or -1 with *err set to an errno.
 */
static int shale_call(struct shale_lu *s, enum shale_op op, void *buf,
		      uint64_t count, uint64_t offset, uint32_t flags, int *err)
{
	struct shale_slot *slot = my_slot(s);
	uint64_t first_fail_ms = 0;
	unsigned int backoff_ms = SHALE_RECONNECT_FIRST_MS;

	for (;;) {
		if (slot->nbd) {
			if (call_once(slot->nbd, op, buf, count, offset,
				      flags) == 0) {
				if (first_fail_ms)
					eprintf("bs_shale: %s: %s resumed after "
						"%" PRIu64 " ms\n", s->uri,
						op_name[op],
						now_ms() - first_fail_ms);
				if ((op == OP_PWRITE || op == OP_ZERO ||
				     op == OP_TRIM) &&
				    !(flags & LIBNBD_CMD_FLAG_FUA))
					atomic_fetch_add(&slot->unflushed, 1);
				return 0;
			}
			*err = nbd_get_errno();
			if (!is_connection_error(slot->nbd, *err)) {
				eprintf("bs_shale: %s: %s %" PRIu64 "@%" PRIu64
					": %s\n", s->uri, op_name[op], count,
					offset, nbd_get_error());
				if (*err == 0)
					*err = EIO;
				return -1;
			}
			eprintf("bs_shale: %s: connection lost during %s: %s\n",
				s->uri, op_name[op], nbd_get_error());
			pthread_mutex_lock(&slot->lock);
			slot_connection_lost(s, slot);
			nbd_close(slot->nbd);
			slot->nbd = NULL;
			pthread_mutex_unlock(&slot->lock);
		}

		/* A never-connected slot (workers connect lazily) is not a failure. */
		if (!first_fail_ms && slot->ever_connected)
			first_fail_ms = now_ms();
		else if (first_fail_ms &&
			 now_ms() - first_fail_ms >= SHALE_RECONNECT_DEADLINE_MS) {
			eprintf("bs_shale: %s: no connection for %d ms, "
				"failing %s\n", s->uri,
				SHALE_RECONNECT_DEADLINE_MS, op_name[op]);
			*err = ENOTCONN;
			return -1;
		}

		struct nbd_handle *nbd = shale_connect(s->uri);
		if (nbd) {
			int64_t size = nbd_get_size(nbd);

			if (size >= 0 && (uint64_t)size != s->size_bytes)
				eprintf("bs_shale: %s: size changed on reconnect "
					"(%" PRIu64 " -> %" PRId64 " bytes)\n",
					s->uri, s->size_bytes, size);
			pthread_mutex_lock(&slot->lock);
			slot->nbd = nbd;
			read_epoch(nbd, slot->epoch);
			pthread_mutex_unlock(&slot->lock);
			if (slot->ever_connected)
				eprintf("bs_shale: %s: reconnected\n", s->uri);
			slot->ever_connected = true;
			continue;
		}
		sleep_ms(backoff_ms);
		backoff_ms *= 2;
		if (backoff_ms > SHALE_RECONNECT_CAP_MS)
			backoff_ms = SHALE_RECONNECT_CAP_MS;
	}
}

/* Reads and writes larger than SHALE_MAX_IO_BYTES go as several NBD requests. */
static int shale_rw(struct shale_lu *s, enum shale_op op, char *buf,
		    uint64_t count, uint64_t offset, uint32_t flags, int *err)
{
	while (count > 0) {
		uint64_t n = count < SHALE_MAX_IO_BYTES ? count : SHALE_MAX_IO_BYTES;

		if (shale_call(s, op, buf, n, offset, flags, err))
			return -1;
		buf += n;
		offset += n;
		count -= n;
	}
	return 0;
}

static int shale_zero_or_trim(struct shale_lu *s, enum shale_op op,
			      uint64_t count, uint64_t offset, uint32_t flags,
			      int *err)
{
	while (count > 0) {
		uint64_t n = count < SHALE_MAX_ZERO_BYTES ? count : SHALE_MAX_ZERO_BYTES;

		if (shale_call(s, op, NULL, n, offset, flags, err))
			return -1;
		offset += n;
		count -= n;
	}
	return 0;
}

/*
 * Flush another worker's connection if it holds unflushed writes, under its
 * lock (its owner only replaces the handle under it). A dead connection is
 * counted as lost, not an error here: shale_flush reports it.
 */
static int flush_other(struct shale_lu *s, struct shale_slot *other, int i,
		       int *err)
{
	uint_fast64_t n;
	int rc = 0;

	pthread_mutex_lock(&other->lock);
	n = atomic_load(&other->unflushed);
	if (n && other->nbd) {
		if (nbd_flush(other->nbd, 0) == 0) {
			atomic_fetch_sub(&other->unflushed, n);
		} else {
			*err = nbd_get_errno();
			if (is_connection_error(other->nbd, *err)) {
				slot_connection_lost(s, other);
			} else {
				eprintf("bs_shale: %s: flush on connection %d: "
					"%s\n", s->uri, i, nbd_get_error());
				if (*err == 0)
					*err = EIO;
				rc = -1;
			}
		}
	}
	pthread_mutex_unlock(&other->lock);
	return rc;
}

/*
 * SYNCHRONIZE CACHE, and the flush after a FUA write on an export without
 * FUA: every acknowledged write is on the server's stable storage, or this
 * fails. Flushes this worker's connection and every other one that acked
 * writes since its last flush (see "Lost writes" at the top).
 */
static int shale_flush(struct shale_lu *s, int *err)
{
	struct shale_slot *mine = my_slot(s);
	uint64_t snap[SHALE_ORPHAN_EPOCHS_MAX];
	char epoch[SHALE_EPOCH_BYTES];
	uint_fast64_t n, lost;
	uint64_t deaths;
	int i, round;
	bool uncovered;

	if (!s->can_flush)
		return 0;	/* server has no write-back cache to flush */

	for (i = 0; i < s->nr_slots; i++) {
		if (&s->slots[i] != mine && flush_other(s, &s->slots[i], i, err))
			return -1;
	}

	/*
	 * Orphans of our connection's epoch that existed before our flush was
	 * sent are covered by it; our own connection dying in the call makes
	 * new ones (its retry was sent after them): another round covers those.
	 */
	for (round = 0; round < SHALE_FLUSH_ROUNDS_MAX; round++) {
		pthread_mutex_lock(&s->orphan_lock);
		for (i = 0; i < SHALE_ORPHAN_EPOCHS_MAX; i++)
			snap[i] = s->orphans[i].writes;
		pthread_mutex_unlock(&s->orphan_lock);
		pthread_mutex_lock(&mine->lock);
		n = atomic_load(&mine->unflushed);
		deaths = mine->deaths;
		pthread_mutex_unlock(&mine->lock);

		if (shale_call(s, OP_FLUSH, NULL, 0, 0, 0, err))
			return -1;

		pthread_mutex_lock(&mine->lock);
		if (mine->deaths == deaths)	/* else the count was orphaned */
			atomic_fetch_sub(&mine->unflushed, n);
		strcpy(epoch, mine->epoch);
		pthread_mutex_unlock(&mine->lock);

		uncovered = false;
		pthread_mutex_lock(&s->orphan_lock);
		for (i = 0; i < SHALE_ORPHAN_EPOCHS_MAX; i++) {
			struct shale_orphans *o = &s->orphans[i];

			if (!o->writes || !epoch[0] || strcmp(o->epoch, epoch))
				continue;
			/* the entry may have been reused since the snapshot */
			o->writes -= snap[i] < o->writes ? snap[i] : o->writes;
			uncovered |= o->writes > 0;
		}
		pthread_mutex_unlock(&s->orphan_lock);
		if (!uncovered)
			break;
	}

	/* Orphans of another epoch: that server instance and its writes are gone. */
	pthread_mutex_lock(&s->orphan_lock);
	for (i = 0; i < SHALE_ORPHAN_EPOCHS_MAX; i++) {
		struct shale_orphans *o = &s->orphans[i];

		if (o->writes && (!epoch[0] || strcmp(o->epoch, epoch))) {
			eprintf("bs_shale: %s: %" PRIu64 " writes of durable epoch %s "
				"are gone (the server now has epoch %s)\n",
				s->uri, o->writes, o->epoch,
				epoch[0] ? epoch : "none");
			atomic_fetch_add(&s->lost_writes, o->writes);
			o->writes = 0;
		}
	}
	pthread_mutex_unlock(&s->orphan_lock);

	lost = atomic_exchange(&s->lost_writes, 0);
	if (lost) {
		eprintf("bs_shale: %s: flush failed: %" PRIuFAST64 " acknowledged "
			"writes were unflushed on connections that died\n",
			s->uri, lost);
		*err = EIO;
		return -1;
	}
	return 0;
}

/*
 * Write with the durability the initiator asked for: the CDB's FUA bit
 * (cdb_fua, only meaningful for opcodes that have one), or the caching mode
 * page with WCE off, as bs_rdwr decides it.
 */
static int shale_write(struct scsi_cmd *cmd, struct shale_lu *s,
		       const char *buf, uint64_t count, uint64_t offset,
		       bool cdb_fua, int *err)
{
	struct mode_pg *pg = find_mode_page(cmd->dev, 0x08, 0);
	bool fua = cdb_fua || (pg && !(pg->mode_data[0] & 0x04));

	if (fua && s->can_fua)
		/* Durability: FUA: on the server's stable storage when acked. */
		return shale_rw(s, OP_PWRITE, (char *)buf, count, offset,
				LIBNBD_CMD_FLAG_FUA, err);
	if (shale_rw(s, OP_PWRITE, (char *)buf, count, offset, 0, err))
		return -1;
	/* Durability: without FUA the write is stable only after this flush. */
	return fua ? shale_flush(s, err) : 0;
}

/* ---- errno -> sense: the one table at this boundary ---- */
struct errno_sense {
	int err;
	uint8_t key;
	uint16_t asc;
};

static const struct errno_sense errno_sense_map[] = {
	{ EROFS,  DATA_PROTECT,    ASC_WRITE_PROTECT },
	{ EPERM,  DATA_PROTECT,    ASC_WRITE_PROTECT },
	{ ENOSPC, DATA_PROTECT,    SHALE_ASC_SPACE_ALLOC_FAILED },
	{ EDQUOT, DATA_PROTECT,    SHALE_ASC_SPACE_ALLOC_FAILED },
	{ ENOMEM, HARDWARE_ERROR,  ASC_INTERNAL_TGT_FAILURE },
};

static void cmd_error_sense(struct scsi_cmd *cmd, uint8_t key, uint16_t asc)
{
	scsi_set_result(cmd, SAM_STAT_CHECK_CONDITION);
	sense_data_build(cmd, key, asc);
}

/* is_write selects MEDIUM ERROR / WRITE ERROR over READ ERROR as the default. */
static void cmd_errno_sense(struct scsi_cmd *cmd, int err, bool is_write)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(errno_sense_map); i++) {
		if (errno_sense_map[i].err == err) {
			cmd_error_sense(cmd, errno_sense_map[i].key,
					errno_sense_map[i].asc);
			return;
		}
	}
	cmd_error_sense(cmd, MEDIUM_ERROR,
			is_write ? ASC_WRITE_ERROR : ASC_READ_ERROR);
}

static bool all_zero(const char *buf, size_t len)
{
	return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

/*
 * WRITE SAME (10/16). sbc.c already checked ANCHOR, PI, LBDATA+PBDATA and
 * the data-out length, and turned TL=0 into "to the end of the LU".
 */
static void shale_write_same(struct scsi_cmd *cmd, struct shale_lu *s)
{
	uint64_t offset = cmd->offset, count = cmd->tl;
	size_t block_bytes = 1u << cmd->dev->blk_shift;
	char *block = scsi_get_out_buffer(cmd);
	int lbdata = cmd->scb[1] & 0x06;
	int err = 0, rc;
	/*
	 * sbc.c lets a WRITE SAME through with no data-out (NDOB, or an
	 * initiator that sent none): write zeroes then, never whatever the
	 * data-out buffer happens to hold.
	 */
	bool no_data = scsi_get_out_length(cmd) < block_bytes;
	char *zero_block = NULL;

	if (count == 0)
		return;
	if (no_data) {
		zero_block = calloc(1, block_bytes);
		if (!zero_block) {
			cmd_error_sense(cmd, HARDWARE_ERROR, ASC_INTERNAL_TGT_FAILURE);
			return;
		}
		block = zero_block;
	}

	if (cmd->scb[1] & 0x08) {	/* UNMAP bit */
		if (s->can_zero)
			/*
			 * tgt reports LBPRZ=1 on thin LUs: unmapped blocks read
			 * as zero. NBD trim does not promise that; a zero
			 * without NO_HOLE does and still lets the server punch.
			 */
			rc = shale_zero_or_trim(s, OP_ZERO, count, offset, 0, &err);
		else if (s->can_trim)
			rc = shale_zero_or_trim(s, OP_TRIM, count, offset, 0, &err);
		else
			rc = 0;	/* fall through to writing zeroes below */
		if (rc) {
			cmd_errno_sense(cmd, err, true);
			goto out;
		}
		if (s->can_zero || s->can_trim)
			goto out;
	}

	/*
	 * A zero block: one NBD zero. On a thin LU (LBPME=1) the blocks must
	 * end up mapped, so NO_HOLE. On a fully provisioned one every block is
	 * mapped whatever the server does (the initiator cannot tell), and a
	 * log-structured server keeps no space for later writes of a written
	 * block either: without NO_HOLE it may record the range as zeroes
	 * instead of writing them (a whole-LU WRITE SAME of zeroes is 0 bytes
	 * written, not the LU's size).
	 */
	if (!lbdata && s->can_zero && all_zero(block, block_bytes)) {
		uint32_t zflags = cmd->dev->attrs.thinprovisioning ?
			LIBNBD_CMD_FLAG_NO_HOLE : 0;

		if (shale_zero_or_trim(s, OP_ZERO, count, offset, zflags, &err))
			cmd_errno_sense(cmd, err, true);
		goto out;
	}

	/* Fill a buffer with copies of the block and write it out in runs. */
	size_t buf_bytes = SHALE_PATTERN_BUF_BYTES;
	if (buf_bytes > count)
		buf_bytes = count;
	char *buf = malloc(buf_bytes);
	if (!buf) {
		cmd_error_sense(cmd, HARDWARE_ERROR, ASC_INTERNAL_TGT_FAILURE);
		goto out;
	}
	for (size_t i = 0; i < buf_bytes; i += block_bytes)
		memcpy(buf + i, block, block_bytes);

	while (count > 0) {
		uint64_t n = count < buf_bytes ? count : buf_bytes;

		if (lbdata) {
			/* LBDATA / PBDATA: each block starts with its own LBA. */
			for (uint64_t i = 0; i < n; i += block_bytes) {
				uint64_t lba = (offset + i) >> cmd->dev->blk_shift;

				if (lbdata == 0x02)
					put_unaligned_be32(lba, buf + i);
				else
					put_unaligned_be64(lba, buf + i);
			}
		}
		/* WRITE SAME has no FUA bit (byte 1 bit 3 is UNMAP). */
		if (shale_write(cmd, s, buf, n, offset, false, &err)) {
			cmd_errno_sense(cmd, err, true);
			break;
		}
		offset += n;
		count -= n;
	}
	free(buf);
out:
	free(zero_block);
}

/* UNMAP parameter list: 8-byte header, then 16-byte block descriptors. */
static void shale_unmap(struct scsi_cmd *cmd, struct shale_lu *s)
{
	uint32_t length = scsi_get_out_length(cmd);
	char *p = scsi_get_out_buffer(cmd);
	int err = 0, rc;

	if (!cmd->dev->attrs.thinprovisioning) {
		cmd_error_sense(cmd, ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
		return;
	}
	if (length < 8)
		return;
	length -= 8;
	p += 8;

	for (; length >= 16; length -= 16, p += 16) {
		uint64_t offset = get_unaligned_be64(&p[0]) << cmd->dev->blk_shift;
		uint64_t count = (uint64_t)get_unaligned_be32(&p[8])
				 << cmd->dev->blk_shift;

		if (offset + count > cmd->dev->size || offset + count < offset) {
			eprintf("bs_shale: UNMAP beyond end of LU\n");
			cmd_error_sense(cmd, ILLEGAL_REQUEST,
					ASC_LBA_OUT_OF_RANGE);
			return;
		}
		if (count == 0)
			continue;
		/* Zero without NO_HOLE: see the LBPRZ note in shale_write_same. */
		if (s->can_zero)
			rc = shale_zero_or_trim(s, OP_ZERO, count, offset, 0, &err);
		else if (s->can_trim)
			rc = shale_zero_or_trim(s, OP_TRIM, count, offset, 0, &err);
		else
			rc = 0;	/* nothing to deallocate; UNMAP is advisory */
		if (rc) {
			cmd_errno_sense(cmd, err, true);
			return;
		}
	}
}

static void bs_shale_request(struct scsi_cmd *cmd)
{
	struct shale_lu *s = SHALEP(cmd->dev);
	uint64_t offset = cmd->offset;
	uint32_t length = 0;
	const char *write_buf = NULL;
	char *tmpbuf, *ptr;
	bool do_verify = false;
	int err = 0, oldstate, i;

	/*
	 * bs_thread_close() cancels workers; never let that land inside a
	 * libnbd call holding the handle's lock.
	 */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);

	/* overwritten on error */
	scsi_set_result(cmd, SAM_STAT_GOOD);

	switch (cmd->scb[0]) {
	case ORWRITE_16:
		length = scsi_get_out_length(cmd);
		tmpbuf = malloc(length);
		if (!tmpbuf) {
			cmd_error_sense(cmd, HARDWARE_ERROR, ASC_INTERNAL_TGT_FAILURE);
			break;
		}
		if (shale_rw(s, OP_PREAD, tmpbuf, length, offset, 0, &err)) {
			cmd_errno_sense(cmd, err, false);
			free(tmpbuf);
			break;
		}
		ptr = scsi_get_out_buffer(cmd);
		for (i = 0; i < (int)length; i++)
			ptr[i] |= tmpbuf[i];
		free(tmpbuf);
		write_buf = scsi_get_out_buffer(cmd);
		goto write;
	case COMPARE_AND_WRITE:
		/* Data-out holds the verify blocks, then the write blocks. */
		length = scsi_get_out_length(cmd) / 2;
		if (length != cmd->tl) {
			cmd_error_sense(cmd, ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		tmpbuf = malloc(length);
		if (!tmpbuf) {
			cmd_error_sense(cmd, HARDWARE_ERROR, ASC_INTERNAL_TGT_FAILURE);
			break;
		}
		if (shale_rw(s, OP_PREAD, tmpbuf, length, offset, 0, &err)) {
			cmd_errno_sense(cmd, err, false);
			free(tmpbuf);
			break;
		}
		if (memcmp(scsi_get_out_buffer(cmd), tmpbuf, length)) {
			uint64_t pos = 0;
			char *spos = scsi_get_out_buffer(cmd);

			while (pos < length && spos[pos] == tmpbuf[pos])
				pos++;
			free(tmpbuf);
			scsi_set_result(cmd, SAM_STAT_CHECK_CONDITION);
			sense_data_build_with_info(cmd, MISCOMPARE,
				ASC_MISCOMPARE_DURING_VERIFY_OPERATION, pos);
			break;
		}
		free(tmpbuf);
		write_buf = scsi_get_out_buffer(cmd) + length;
		goto write;
	case SYNCHRONIZE_CACHE:
	case SYNCHRONIZE_CACHE_16:
		if (cmd->scb[1] & 0x2) {	/* IMMED: not supported, as rdwr */
			cmd_error_sense(cmd, ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
			break;
		}
		/* Durability: after this, every acked write is on stable storage. */
		if (shale_flush(s, &err))
			cmd_errno_sense(cmd, err, true);
		break;
	case WRITE_VERIFY:
	case WRITE_VERIFY_12:
	case WRITE_VERIFY_16:
		do_verify = true;
		/* fall through */
	case WRITE_6:
	case WRITE_10:
	case WRITE_12:
	case WRITE_16:
		length = scsi_get_out_length(cmd);
		write_buf = scsi_get_out_buffer(cmd);
write:
		/* FUA is byte 1 bit 3 in every write CDB here but WRITE(6). */
		if (shale_write(cmd, s, write_buf, length, offset,
				cmd->scb[0] != WRITE_6 && (cmd->scb[1] & 0x08),
				&err)) {
			cmd_errno_sense(cmd, err, true);
			break;
		}
		if (do_verify)
			goto verify;
		break;
	case WRITE_SAME:
	case WRITE_SAME_16:
		shale_write_same(cmd, s);
		break;
	case READ_6:
	case READ_10:
	case READ_12:
	case READ_16:
		length = scsi_get_in_length(cmd);
		if (shale_rw(s, OP_PREAD, scsi_get_in_buffer(cmd), length,
			     offset, 0, &err))
			cmd_errno_sense(cmd, err, false);
		break;
	case PRE_FETCH_10:
	case PRE_FETCH_16:
		/* Advisory; the edge has its own cache. Succeed, as rbd does. */
		break;
	case VERIFY_10:
	case VERIFY_12:
	case VERIFY_16:
verify:
		/* BYTCHK=0 sends no data: nothing to compare, as rdwr. */
		length = scsi_get_out_length(cmd);
		if (length == 0)
			break;
		tmpbuf = malloc(length);
		if (!tmpbuf) {
			cmd_error_sense(cmd, HARDWARE_ERROR, ASC_INTERNAL_TGT_FAILURE);
			break;
		}
		if (shale_rw(s, OP_PREAD, tmpbuf, length, offset, 0, &err))
			cmd_errno_sense(cmd, err, false);
		else if (memcmp(scsi_get_out_buffer(cmd), tmpbuf, length))
			cmd_error_sense(cmd, MISCOMPARE,
					ASC_MISCOMPARE_DURING_VERIFY_OPERATION);
		free(tmpbuf);
		break;
	case UNMAP:
		shale_unmap(cmd, s);
		break;
	default:
		break;
	}

	dprintf("io done %p %x %u\n", cmd, cmd->scb[0], length);
	if (scsi_get_result(cmd) != SAM_STAT_GOOD)
		eprintf("bs_shale: io error %p op %x len %u offset %" PRIu64
			" errno %d\n", cmd, cmd->scb[0], length, offset, err);

	pthread_setcancelstate(oldstate, NULL);
}

/* -b nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, ... (libnbd URIs) */
static int bs_shale_open(struct scsi_lu *lu, char *path, int *fd, uint64_t *size)
{
	struct shale_lu *s = SHALEP(lu);
	struct nbd_handle *nbd;
	int64_t size_bytes, pref_bytes;

	if (strncmp(path, "nbd", 3) != 0) {
		eprintf("bs_shale: backing path must be an NBD URI "
			"(nbd://HOST:PORT/EXPORT), got %s\n", path);
		return -EINVAL;
	}
	nbd = nbd_create();
	if (!nbd)
		return -ENOMEM;
	nbd_set_full_info(nbd, true);	/* the description: the durable epoch */
	if (nbd_connect_uri(nbd, path) == -1) {
		eprintf("bs_shale: connect %s: %s\n", path, nbd_get_error());
		nbd_close(nbd);
		return -EIO;
	}
	size_bytes = nbd_get_size(nbd);
	if (size_bytes < 0) {
		eprintf("bs_shale: %s: size: %s\n", path, nbd_get_error());
		nbd_close(nbd);
		return -EIO;
	}

	free(s->uri);
	s->uri = strdup(path);
	if (!s->uri) {
		nbd_close(nbd);
		return -ENOMEM;
	}
	s->size_bytes = size_bytes;
	s->read_only = nbd_is_read_only(nbd) > 0;
	s->can_flush = nbd_can_flush(nbd) > 0;
	s->can_fua = nbd_can_fua(nbd) > 0;
	s->can_trim = nbd_can_trim(nbd) > 0;
	s->can_zero = nbd_can_zero(nbd) > 0;
	s->can_multi_conn = nbd_can_multi_conn(nbd) > 0;
	if (s->read_only)
		lu->attrs.readonly = 1;	/* sbc.c then refuses writes: DATA PROTECT */

	/* Reuse the probe connection as the first worker's. */
	pthread_mutex_lock(&s->slots[0].lock);
	if (s->slots[0].nbd)
		nbd_close(s->slots[0].nbd);
	s->slots[0].nbd = nbd;
	read_epoch(nbd, s->slots[0].epoch);
	s->slots[0].ever_connected = true;
	pthread_mutex_unlock(&s->slots[0].lock);

	pref_bytes = nbd_get_block_size(nbd, LIBNBD_SIZE_PREFERRED);
	if (!lu->attrs.no_auto_lbppbe && pref_bytes > 0)
		update_lbppbe(lu, pref_bytes);

	eprintf("bs_shale: %s: %" PRId64 " bytes%s, flush %d fua %d trim %d "
		"zero %d multi_conn %d, %d connections, durable epoch %s\n",
		path, size_bytes, s->read_only ? " read-only" : "", s->can_flush,
		s->can_fua, s->can_trim, s->can_zero, s->can_multi_conn,
		s->nr_slots, s->slots[0].epoch[0] ? s->slots[0].epoch : "none");

	/*
	 * tgt's sbc.c answers GET LBA STATUS in tgtd's main thread with
	 * lseek(lu->fd, SEEK_HOLE/SEEK_DATA). On fd 0 (tgt's "none", /dev/null
	 * under tgtd -f) lseek returns 0 for every offset and that loop never
	 * ends: tgtd hangs (so it does on an eventfd: noop_llseek). On a pipe
	 * lseek fails (ESPIPE), which sbc.c turns into one descriptor "mapped
	 * to the end": right for a fully provisioned LU, and allowed (if
	 * imprecise) for a thin one. Only the read end is kept; nothing reads it.
	 */
	if (s->lseek_fd < 0) {
		int p[2];

		if (pipe2(p, O_CLOEXEC) == -1) {
			eprintf("bs_shale: pipe2: %m\n");
			return -errno;
		}
		close(p[1]);
		s->lseek_fd = p[0];
	}
	*fd = s->lseek_fd;
	*size = size_bytes;
	return 0;
}

static void bs_shale_close(struct scsi_lu *lu)
{
	struct shale_lu *s = SHALEP(lu);
	int i;

	if (s->lseek_fd >= 0) {
		close(s->lseek_fd);
		s->lseek_fd = -1;
	}

	for (i = 0; i < s->nr_slots; i++) {
		pthread_mutex_lock(&s->slots[i].lock);
		if (s->slots[i].nbd) {
			nbd_close(s->slots[i].nbd);
			s->slots[i].nbd = NULL;
		}
		pthread_mutex_unlock(&s->slots[i].lock);
	}
}

static tgtadm_err bs_shale_init(struct scsi_lu *lu, char *bsopts)
{
	struct bs_thread_info *info = BS_THREAD_I(lu);
	struct shale_lu *s = SHALEP(lu);
	int i;

	if (bsopts && *bsopts)
		eprintf("bs_shale: ignoring bsopts \"%s\" (none defined)\n",
			bsopts);

	s->nr_slots = nr_iothreads;
	s->slots = calloc(s->nr_slots, sizeof(*s->slots));
	if (!s->slots)
		return TGTADM_NOMEM;
	for (i = 0; i < s->nr_slots; i++)
		pthread_mutex_init(&s->slots[i].lock, NULL);
	pthread_mutex_init(&s->claim_lock, NULL);
	pthread_mutex_init(&s->orphan_lock, NULL);
	memset(s->orphans, 0, sizeof(s->orphans));
	atomic_store(&s->lost_writes, 0);
	s->lseek_fd = -1;

	return bs_thread_open(info, bs_shale_request, s->nr_slots);
}

static void bs_shale_exit(struct scsi_lu *lu)
{
	struct bs_thread_info *info = BS_THREAD_I(lu);
	struct shale_lu *s = SHALEP(lu);
	int i;

	/* Workers first, so no one uses a handle we close. */
	bs_thread_close(info);
	bs_shale_close(lu);
	for (i = 0; i < s->nr_slots; i++)
		pthread_mutex_destroy(&s->slots[i].lock);
	pthread_mutex_destroy(&s->claim_lock);
	pthread_mutex_destroy(&s->orphan_lock);
	free(s->slots);
	free(s->uri);
	s->slots = NULL;
	s->uri = NULL;
}

static struct backingstore_template shale_bst = {
	.bs_name		= "shale",
	.bs_datasize		= sizeof(struct bs_thread_info) +
				  sizeof(struct shale_lu),
	.bs_open		= bs_shale_open,
	.bs_close		= bs_shale_close,
	.bs_init		= bs_shale_init,
	.bs_exit		= bs_shale_exit,
	.bs_cmd_submit		= bs_thread_cmd_submit,
	/* Accepted for parity with rbd; an NBD export has no open flags. */
	.bs_oflags_supported	= O_SYNC | O_DIRECT,
};

/* tgtd dlopen()s every file in BSDIR and calls this symbol (bs.c). */
void register_bs_module(void)
{
	/* The same SBC opcode set as bs_rdwr, so unsupported ones get
	 * INVALID OPERATION CODE instead of a silent GOOD. */
	unsigned char sbc_opcodes[] = {
		ALLOW_MEDIUM_REMOVAL, COMPARE_AND_WRITE, FORMAT_UNIT, INQUIRY,
		MAINT_PROTOCOL_IN, MODE_SELECT, MODE_SELECT_10, MODE_SENSE,
		MODE_SENSE_10, ORWRITE_16, PERSISTENT_RESERVE_IN,
		PERSISTENT_RESERVE_OUT, PRE_FETCH_10, PRE_FETCH_16, READ_10,
		READ_12, READ_16, READ_6, READ_CAPACITY, RELEASE, REPORT_LUNS,
		REQUEST_SENSE, RESERVE, SEND_DIAGNOSTIC, SERVICE_ACTION_IN,
		START_STOP, SYNCHRONIZE_CACHE, SYNCHRONIZE_CACHE_16,
		TEST_UNIT_READY, UNMAP, VERIFY_10, VERIFY_12, VERIFY_16,
		WRITE_10, WRITE_12, WRITE_16, WRITE_6, WRITE_SAME,
		WRITE_SAME_16, WRITE_VERIFY, WRITE_VERIFY_12, WRITE_VERIFY_16,
	};

	bs_create_opcode_map(&shale_bst, sbc_opcodes, ARRAY_SIZE(sbc_opcodes));
	register_backingstore_template(&shale_bst);
}

/* Source hash, so scripts/build-tgt-bs-shale.sh --check can tell a stale build. */
#ifdef SHALE_SRC_SHA256
const char bs_shale_src_sha256[] = "bs_shale-src-sha256=" SHALE_SRC_SHA256;
#endif
