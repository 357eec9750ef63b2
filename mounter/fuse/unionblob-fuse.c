/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unionblob-fuse: serve a unionblob blob (format/SPEC.md) read-only through
 * FUSE, for hosts that cannot load the kernel module.
 *
 *   unionblob-fuse BLOB MOUNTPOINT -o basedir=STORE[:STORE...][,verity=off|try|require]
 *                  [,allow_other][,foreground][,pidfile=F][,logfile=F][,timeout=S]
 *                  [,cache=private|shared|auto][,passthrough_min=BYTES][,open_objects=N]
 *                  [,passthrough=auto|off][,nosplice][,noreaddirplus]
 *
 * Design:
 *   - The blob is mmapped read-only and parsed by the same reader core the
 *     kernel module uses (format/c/ubreader.c); get_page() is a pointer into
 *     the mapping, so reading the blob takes no lock.
 *   - FUSE node ids are st_ino = inode index + 1 (root = FUSE_ROOT_ID), the
 *     numbering of the kernel module.  Nodes are the blob's inodes, which
 *     never go away, so forget is a no-op and no node table exists.
 *   - The blob never changes while mounted, so the kernel may cache entries,
 *     attributes, directory listings and page contents for as long as it
 *     likes (huge timeouts, keep_cache, cache_readdir).
 *   - External files are served from their object, opened beneath the
 *     store directory fds (openat2 RESOLVE_BENEATH, O_NOFOLLOW).  Three modes:
 *     cache=private (default): the kernel sends no OPEN at all (we answer
 *     the first with ENOSYS, FUSE_CAP_NO_OPEN_SUPPORT) and keeps file pages
 *     in the mount's own page cache; a cache miss is a READ naming only the
 *     inode, served from an object fd kept open per object (objcache.c).
 *     cache=shared: every open() is an OPEN that hands the object to the
 *     kernel as a passthrough backing file where it allows that
 *     (passthrough.c), so pages are cached once with the store's files;
 *     else reads are served from the fd of the OPEN.
 *     cache=auto: every open() is an OPEN too; objects of passthrough_min
 *     bytes or more are passed through (their backing id registered once and
 *     kept until unmount), smaller files are answered FOPEN_KEEP_CACHE with
 *     nothing opened, their misses read by inode as in cache=private.  Without
 *     passthrough from the kernel it falls back to cache=private.
 *     Reads that reach us go out by fuse_reply_data(), which splices when
 *     the kernel allows.
 *   - Corruption, a missing object or a vanished store fail only the
 *     request that hit it (EIO and one rate-limited line on stderr); the
 *     rest of the tree keeps working.
 *   - With no -f/foreground, the server daemonizes only after the mount
 *     exists, so whoever started it can use the tree when it returns.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "ubreader.h"
#include "verity.h"
#include "passthrough.h"
#include "objcache.h"

#define PROG "unionblob-fuse"
#define MAX_STORES 64

enum verity_mode { VERITY_OFF, VERITY_TRY, VERITY_REQUIRE };
enum cache_mode { CACHE_AUTO, CACHE_PRIVATE, CACHE_SHARED };

/* Per-object verity state, cached by DIGESTS index. */
/*
 * The file check_verity() last accepted for one object, as fstat saw it: a later open of the
 * same file skips the check, one of another file (the object replaced by a rename) or of the
 * same file changed since (written in place: ctime moves) checks again.
 */
struct obj_checked {
	u64 dev, ino, ctime_ns;
	bool good;
};

/*
 * File handle of an open file that has no backing object (inline, empty):
 * fd -1 and no passthrough flag, so the OPEN reply hook leaves it alone.
 */
#define FH_NONE ((uint64_t)UINT32_MAX)

struct ubfs {
	struct ub_blob blob;
	u32 handle_gen;		/* generation of every node: a file handle of another blob is stale */
	const char *blob_path;
	const uint8_t *map;
	size_t map_len;
	int store_fd[MAX_STORES];
	char *store_path[MAX_STORES];
	int nstores;
	enum verity_mode verity;
	struct obj_checked *obj_checked;	/* DIGESTS.count entries when verity != off */
	struct backing *backing;	/* DIGESTS.count entries when passthrough is on */
	enum cache_mode cache;	/* cache= */
	u64 pt_min;		/* cache=auto: smallest object handed to the kernel (passthrough_min=) */
	int no_open;		/* no OPEN requests (private, or auto without passthrough): READs come by inode */
	int no_opendir;		/* the kernel can do without OPENDIR */
	struct objcache objects;	/* open objects, by DIGESTS index */
	double timeout;
	int splice;
	int readdirplus;
	unsigned int max_read;	/* -o max_read=N, 0 if not given */
};

/*
 * The kernel attaches one backing file to a FUSE inode while any passthrough
 * open of it lasts, and refuses an open naming another one: so every open of
 * an object shares one backing id, registered by the first and dropped with
 * the last.
 */
struct backing {
	int id;
	unsigned int refs;
	u64 size;	/* cache=auto: the pinned object's size, checked against each inode opening it */
};

static pthread_mutex_t backing_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t verity_lock = PTHREAD_MUTEX_INITIALIZER;

/* Command line, filled by fuse_opt_parse(). */
struct config {
	char *blob;
	char *mountpoint;
	char *basedir;
	char *verity;
	char *pidfile;
	char *logfile;
	char *timeout;
	char *passthrough;
	char *cache;
	char *open_objects;
	char *passthrough_min;
	char *uidmap;
	char *gidmap;
	unsigned int max_read;
	int foreground;
	int singlethread;
	int nosplice;
	int noreaddirplus;
	int help;
	int version;
};

/* ---- logging ----------------------------------------------------------- */

/*
 * At most LOG_BURST lines per LOG_WINDOW seconds: a corrupt directory read
 * in a loop must not fill the disk, but the first failures must be seen.
 */
#define LOG_BURST 20
#define LOG_WINDOW 10

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *log_tag = "";

static void fs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fs_log(const char *fmt, ...)
{
	static time_t window;
	static unsigned int lines, dropped;
	time_t now = time(NULL);
	va_list ap;

	pthread_mutex_lock(&log_lock);
	if (now - window >= LOG_WINDOW) {
		if (dropped)
			fprintf(stderr, PROG "%s: %u log lines suppressed\n", log_tag, dropped);
		window = now;
		lines = dropped = 0;
	}
	if (lines++ >= LOG_BURST) {
		dropped++;
	} else {
		fprintf(stderr, PROG "%s: ", log_tag);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
		fflush(stderr);
	}
	pthread_mutex_unlock(&log_lock);
}

/* The errno a request answers for a reader error; logs the ones that mean damage. */
static int reply_errno(int err, const char *what, uint64_t ino)
{
	if (err == -EUCLEAN || err == -EIO || err == -EINVAL) {
		fs_log("inode %" PRIu64 ": %s: %s", ino, what,
		       err == -EUCLEAN ? "blob is corrupt" : strerror(-err));
		return EIO;
	}
	return -err;
}

/* ---- blob access ------------------------------------------------------- */

/*
 * The blob is mapped MAP_SHARED and read in place. Cut short under us (truncated in place; our
 * own writers only ever rename a new file over a blob), a page past its new end raises SIGBUS,
 * which would kill the server and leave every file of the mount failing with ENOTCONN. The
 * handler maps a page of zeros there instead and marks the blob gone: the access resumes and
 * reads zeros (which the reader refuses for metadata), and from then on every request, and any
 * reply built from blob bytes while it happened, fails with EIO. Unmounting works as usual.
 */
static char *bus_map;
static size_t bus_map_len, bus_page;
static volatile sig_atomic_t blob_gone;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t at = (uintptr_t)si->si_addr, base = (uintptr_t)bus_map;

	(void)uc;
	if (bus_map && at >= base && at - base < bus_map_len &&
	    mmap((void *)(at & ~(uintptr_t)(bus_page - 1)), bus_page, PROT_READ,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
		blob_gone = 1;
		return;
	}
	/* not the blob's: die of it as before (re-raised when the handler returns) */
	signal(sig, SIG_DFL);
	raise(sig);
}

static int catch_blob_sigbus(char *map, size_t len)
{
	struct sigaction sa;

	bus_map = map;
	bus_map_len = len;
	bus_page = (size_t)sysconf(_SC_PAGESIZE);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL);
}

/* EIO (and one line in the log) once the blob file was cut short while mounted. */
static bool blob_lost(void)
{
	static atomic_bool said;

	if (!blob_gone)
		return false;
	if (!atomic_exchange(&said, true))
		fs_log("the blob file shrank while mounted (truncated in place?): every request now fails with EIO; unmount and mount it again");
	return true;
}

static const void *map_get_page(void *ctx, u64 index, void **cookie)
{
	struct ubfs *fs = ctx;

	*cookie = NULL;
	return fs->map + index * UB_BLOCK_SIZE;
}

static struct ubfs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Reads node @nodeid; 0 or the errno to answer. */
static int get_inode(struct ubfs *fs, fuse_ino_t nodeid, struct ub_inode_info *out)
{
	u64 index;
	int err;

	if (blob_lost())
		return EIO;
	if (!ub_st_ino_to_index(nodeid, &index) || index >= fs->blob.inode_count)
		return ESTALE;
	err = ub_read_inode(&fs->blob, index, out);
	if (blob_lost())
		return EIO;
	return err ? reply_errno(err, "reading inode", nodeid) : 0;
}

/*
 * uidmap=/gidmap= (a container in its own user namespace, as containerd's uidmapping labels
 * ask): the blob's id I in [C, C+L) is shown as H + (I - C). Any other id is given to the
 * kernel as (u32)-1, no id at all: stat shows the overflow id (65534) and nobody owns the file,
 * and the kernel refuses to give that owner to another file (EOVERFLOW), so an overlay's
 * copy-up of it fails instead of creating a file of the host's real uid 65534 — as through an
 * idmapped mount. One mapping per server: global.
 */
#define MAX_ID_RANGES 64
#define UNMAPPED_ID UINT32_MAX

struct id_range {
	u32 inside, outside, count;
};

struct id_map {
	struct id_range r[MAX_ID_RANGES];
	int n;		/* 0: ids shown as they are */
};

static struct id_map uid_map, gid_map;

static u32 map_id(const struct id_map *m, u32 id)
{
	int i;

	if (!m->n)
		return id;
	for (i = 0; i < m->n; i++)
		if (id >= m->r[i].inside && id - m->r[i].inside < m->r[i].count)
			return m->r[i].outside + (id - m->r[i].inside);
	return UNMAPPED_ID;
}

static void fill_stat(const struct ub_inode_info *ii, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ub_inode_st_ino(ii);
	st->st_mode = ii->mode;
	st->st_nlink = ii->nlink;
	st->st_uid = map_id(&uid_map, ii->uid);
	st->st_gid = map_id(&gid_map, ii->gid);
	st->st_size = (off_t)ii->size;
	st->st_blksize = UB_BLOCK_SIZE;
	/* as the kernel module and ext4 count them: whole 4 KiB blocks, in 512-byte units */
	st->st_blocks = (blkcnt_t)(((ii->size >> UB_BLOCK_SIZE_LOG2) + !!(ii->size & (UB_BLOCK_SIZE - 1))) << (UB_BLOCK_SIZE_LOG2 - 9));
	if (ub_inode_is_dev(ii))
		st->st_rdev = makedev(ub_inode_rdev_major(ii), ub_inode_rdev_minor(ii));
	st->st_mtim.tv_sec = ii->mtime_sec;
	st->st_mtim.tv_nsec = ii->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void fill_entry(struct ubfs *fs, const struct ub_inode_info *ii, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = ub_inode_st_ino(ii);
	e->generation = fs->handle_gen;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
	fill_stat(ii, &e->attr);
}

/* ---- objects ----------------------------------------------------------- */

static int openat_beneath_flags(int dirfd, const char *path, u64 flags)
{
	static int have_openat2 = 1;
	struct open_how how = {
		.flags = flags,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd;

	if (__atomic_load_n(&have_openat2, __ATOMIC_RELAXED)) {
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		/* O_NOATIME needs ownership (or CAP_FOWNER): retry without it. */
		if (fd < 0 && errno == EPERM) {
			how.flags &= ~(u64)O_NOATIME;
			fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		}
		if (fd >= 0 || errno != ENOSYS)
			return fd;
		__atomic_store_n(&have_openat2, 0, __ATOMIC_RELAXED);
	}
	/* Old kernels: only the last component is protected from symlinks. */
	fd = openat(dirfd, path, (int)flags);
	if (fd < 0 && errno == EPERM && (flags & O_NOATIME))
		fd = openat(dirfd, path, (int)(flags & ~(u64)O_NOATIME));
	return fd;
}

/*
 * Opens a regular file beneath dirfd for reading; -1 with errno (ENODEV: something other
 * than a regular file is there). Whatever is planted in a store, only regular files are ever opened: the
 * name is resolved with O_PATH (which opens nothing) and checked first, then reopened through
 * /proc/self/fd, so no device's open routine runs (a watchdog, a tape, a tty taking the
 * server as its session). O_NONBLOCK and O_NOCTTY cover the fallback without /proc.
 */
static int openat_beneath(int dirfd, const char *path)
{
	const u64 rd = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME | O_NONBLOCK | O_NOCTTY;
	char proc[32];
	struct stat st;
	int pfd, fd;

	pfd = openat_beneath_flags(dirfd, path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return -1;
	if (fstat(pfd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(pfd);
		errno = ENODEV;
		return -1;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, (int)(rd & ~(u64)O_NOFOLLOW));
	if (fd < 0 && errno == EPERM)
		fd = open(proc, (int)(rd & ~(u64)(O_NOFOLLOW | O_NOATIME)));
	if (fd < 0 && (errno == ENOENT || errno == ENOTDIR))	/* no /proc */
		fd = openat_beneath_flags(dirfd, path, rd);
	close(pfd);
	return fd;
}

/* The object from the first store that has it as a regular file; fd or -errno. */
static int open_object(struct ubfs *fs, const u8 digest[UB_DIGEST_SIZE], const char **where)
{
	char rel[8 + UB_OBJECT_PATH_LEN] = "objects/";
	int i, fd, first_err = -ENOENT;
	struct stat st;

	ub_object_path(digest, rel + 8);
	for (i = 0; i < fs->nstores; i++) {
		fd = openat_beneath(fs->store_fd[i], rel);
		if (fd < 0) {
			/* Not in this store (or not as a plain file beneath it): try the next. */
			if (errno != ENOENT && errno != ENOTDIR && first_err == -ENOENT)
				first_err = -errno;
			continue;
		}
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0) {
			*where = fs->store_path[i];
			return fd;
		}
		close(fd);
	}
	*where = NULL;
	return first_err;
}

static u64 ctime_ns(const struct stat *st)
{
	return (u64)st->st_ctim.tv_sec * 1000000000u + (u64)st->st_ctim.tv_nsec;
}

/* Whether the file `st` describes is the one last found good for object k. */
static bool verity_checked(struct ubfs *fs, u64 k, const struct stat *st)
{
	const struct obj_checked *c = &fs->obj_checked[k];
	bool same;

	pthread_mutex_lock(&verity_lock);
	same = c->good && c->dev == (u64)st->st_dev && c->ino == (u64)st->st_ino &&
	       c->ctime_ns == ctime_ns(st);
	pthread_mutex_unlock(&verity_lock);
	return same;
}

static void verity_remember(struct ubfs *fs, u64 k, const struct stat *st)
{
	struct obj_checked *c = &fs->obj_checked[k];

	pthread_mutex_lock(&verity_lock);
	c->dev = (u64)st->st_dev;
	c->ino = (u64)st->st_ino;
	c->ctime_ns = ctime_ns(st);
	c->good = true;
	pthread_mutex_unlock(&verity_lock);
}

/* Checks the object (fd, fstat'ed as st) against its digest per the verity mode; 0 or an errno. */
static int check_verity(struct ubfs *fs, const struct ub_inode_info *ii, int fd,
			const struct stat *st, const u8 digest[UB_DIGEST_SIZE], const char *hex)
{
	uint8_t got[SHA256_SIZE];
	int r;

	if (fs->verity == VERITY_OFF || verity_checked(fs, ii->payload, st))
		return 0;
	r = verity_measure_fd(fd, got);
	if (r == 0 && fs->verity == VERITY_TRY) {
		verity_remember(fs, ii->payload, st);	/* until it changes: not measured per READ */
		return 0;	/* no fs-verity on this file: try accepts it */
	}
	if (r == 0)
		r = verity_digest_fd(fd, got) == 0 ? 1 : -EIO;
	if (r < 0) {
		fs_log("inode %" PRIu64 ": object %s: verity: %s", ub_inode_st_ino(ii), hex, strerror(-r));
		return EIO;
	}
	if (memcmp(got, digest, SHA256_SIZE) != 0) {
		fs_log("inode %" PRIu64 ": object %s: content does not match its digest",
		       ub_inode_st_ino(ii), hex);
		return EIO;
	}
	verity_remember(fs, ii->payload, st);
	return 0;
}

/* Opens the backing object of an external file; fd, or -errno to answer. */
static int open_backing(struct ubfs *fs, const struct ub_inode_info *ii)
{
	u8 digest[UB_DIGEST_SIZE];
	char hex[UB_OBJECT_PATH_LEN];
	const char *store;
	struct stat st;
	int fd, err;

	err = ub_get_digest(&fs->blob, ii, digest);
	if (err)
		return -reply_errno(err, "reading digest", ub_inode_st_ino(ii));
	ub_object_path(digest, hex);
	fd = open_object(fs, digest, &store);
	if (fd < 0) {
		fs_log("inode %" PRIu64 ": object %s: %s", ub_inode_st_ino(ii), hex,
		       fd == -ENOENT ? "missing from every store" :
		       fd == -ENODEV ? "not a regular file in any store" : strerror(-fd));
		return -EIO;
	}
	if (fstat(fd, &st) < 0) {
		close(fd);
		return -EIO;
	}
	/*
	 * Objects are mostly read front to back, and a cache=private miss reads
	 * one in 128 KiB READs spread over threads: read ahead twice as far
	 * (a cold 200 MiB object: median 0.40 s -> 0.27 s on the dev VM).
	 */
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	err = check_verity(fs, ii, fd, &st, digest, hex);
	if (err) {
		close(fd);
		return -err;
	}
	return fd;
}

/*
 * Whether the open object fd can serve inode ii: its size must be the inode's (a blob whose
 * inode names an object of another size is corrupt; an object truncated in place would read
 * as zeros from the kernel's cache, a passthrough file past the inode's end), and with --verity
 * it must still be the file last found good (a changed inode or ctime is hashed again). Per
 * inode and per use, not remembered against the object: other inodes may share it and be fine.
 * 0 or an errno.
 */
static int object_fits(struct ubfs *fs, const struct ub_inode_info *ii, int fd)
{
	u8 digest[UB_DIGEST_SIZE];
	char hex[UB_OBJECT_PATH_LEN];
	struct stat st;
	int err;

	if (fstat(fd, &st) < 0)
		st.st_size = -1;
	if ((u64)st.st_size == ii->size &&
	    (fs->verity == VERITY_OFF || verity_checked(fs, ii->payload, &st)))
		return 0;
	err = ub_get_digest(&fs->blob, ii, digest);
	if (err)
		return reply_errno(err, "reading digest", ub_inode_st_ino(ii));
	ub_object_path(digest, hex);
	if ((u64)st.st_size != ii->size) {
		fs_log("inode %" PRIu64 ": object %s: size %lld, expected %" PRIu64,
		       ub_inode_st_ino(ii), hex, (long long)st.st_size, ii->size);
		return EIO;
	}
	return check_verity(fs, ii, fd, &st, digest, hex);
}

/* The open object of an external file, referenced (objcache_put), unchecked; fd or -errno. */
static int object_fd_unchecked(struct ubfs *fs, const struct ub_inode_info *ii)
{
	int fd = objcache_lookup(&fs->objects, ii->payload);

	if (fd != -ENOENT)
		return fd;
	fd = open_backing(fs, ii);
	if (fd < 0) {
		objcache_failed(&fs->objects, ii->payload, fd);
		return fd;
	}
	return objcache_insert(&fs->objects, ii->payload, fd);
}

/* The open object of an external file, fit for ii (object_fits), referenced; fd or -errno. */
static int object_fd(struct ubfs *fs, const struct ub_inode_info *ii)
{
	int fd = object_fd_unchecked(fs, ii);
	int err;

	if (fd < 0)
		return fd;
	err = object_fits(fs, ii, fd);
	if (err) {
		objcache_put(&fs->objects, ii->payload);
		return -err;
	}
	return fd;
}

/* ---- FUSE operations --------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ubfs *fs = userdata;
	unsigned int want = FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_PARALLEL_DIROPS |
			    FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_ASYNC_READ |
			    FUSE_CAP_POSIX_ACL;

	if (fs->splice)
		want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	if (fs->max_read)
		conn->max_read = fs->max_read;
	/* The kernel picks readdirplus when it expects lookups to follow (ls -l, find). */
	if (fs->readdirplus)
		want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
	else
		conn->want &= ~(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
	conn->want |= want & conn->capable;
	/*
	 * Folio size of the private page cache: Linux 6.18 gives FUSE files
	 * only 4 KiB folios whatever we answer here (measured with and
	 * without splice, with 128 KiB and 1 MiB readahead: see
	 * bench/mount/README.md), so a warm big read walks 256 folios per
	 * MiB where ext4 walks a few large ones.  Kernels with large folios for
	 * FUSE size them by min(max_write, max_read, max_pages) and only
	 * without the writeback cache: keep max_write at libfuse's 1 MiB and
	 * never ask for FUSE_CAP_WRITEBACK_CACHE (we are read-only anyway).
	 */
	/* Contents never change: mtime changes must not drop the page cache. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	conn->time_gran = 1;
	/*
	 * Without OPEN the kernel keeps every file's pages (FOPEN_KEEP_CACHE is
	 * its default then) and a warm read never reaches us; without OPENDIR it
	 * caches listings (FOPEN_CACHE_DIR), as our opendir asks anyway.
	 */
	fs->no_open = (fs->cache == CACHE_PRIVATE ||
		       (fs->cache == CACHE_AUTO && !pt_offered())) &&
		      (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
	if (fs->cache == CACHE_AUTO && fs->backing && !pt_offered())
		fs_log("the kernel offers no FUSE passthrough: cache=auto works like cache=private");
	if (fs->cache == CACHE_PRIVATE && !fs->no_open)
		fs_log("the kernel cannot skip OPEN: cache=private works like cache=shared without passthrough");
	fs->no_opendir = !!(conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info dir, ii;
	struct fuse_entry_param e;
	int err;

	/* as ext4 and the kernel module answer (and no negative entry is cached for it) */
	if (strlen(name) > UB_NAME_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	err = get_inode(fs, parent, &dir);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	/*
	 * To reopen a node by file handle once its inode is gone, the kernel looks up "." on it,
	 * whatever its type (ub_lookup_inode would answer ENOTDIR for a file: ESTALE to the user).
	 */
	if (!strcmp(name, ".")) {
		fill_entry(fs, &dir, &e);
		fuse_reply_entry(req, &e);
		return;
	}
	err = ub_lookup_inode(&fs->blob, &dir, name, strlen(name), &ii);
	if (blob_lost())
		err = -EIO;	/* not a negative entry cached for good */
	if (err == -ENOENT) {
		/* A negative entry: the name will not appear later either. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs->timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (err) {
		fuse_reply_err(req, reply_errno(err, "lookup", parent));
		return;
	}
	fill_entry(fs, &ii, &e);
	fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	struct stat st;
	int err;

	(void)fi;
	err = get_inode(fs, ino, &ii);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	fill_stat(&ii, &st);
	fuse_reply_attr(req, &st, fs->timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	char target[UB_SYMLINK_MAX + 1];
	int n;

	n = get_inode(fs, ino, &ii);
	if (n) {
		fuse_reply_err(req, n);
		return;
	}
	if (!ub_inode_is_lnk(&ii)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	n = ub_readlink(&fs->blob, &ii, target, sizeof(target));
	if (blob_lost())
		n = -EIO;
	if (n < 0) {
		fuse_reply_err(req, reply_errno(n, "readlink", ino));
		return;
	}
	fuse_reply_readlink(req, target);
}

/* The backing id of object @obj for one more open file (0: serve it ourselves). */
static int backing_get(struct ubfs *fs, u64 obj, int fd)
{
	struct backing *b;
	int id;

	if (!fs->backing || !pt_active())
		return 0;
	pthread_mutex_lock(&backing_lock);
	b = &fs->backing[obj];
	if (b->refs == 0)
		b->id = pt_backing_open(fd);
	if (b->id > 0)
		b->refs++;
	id = b->id;
	pthread_mutex_unlock(&backing_lock);
	return id;
}

static void backing_put(struct ubfs *fs, u64 obj)
{
	struct backing *b = &fs->backing[obj];

	pthread_mutex_lock(&backing_lock);
	if (b->refs && --b->refs == 0) {
		pt_backing_close(b->id);
		b->id = 0;
	}
	pthread_mutex_unlock(&backing_lock);
}

/*
 * cache=auto: the backing id of a big object, registered by its first open
 * and kept until unmount, so reopening it costs the server one table read
 * (the kernel holds the object open meanwhile; big objects are few).
 * 0 when it cannot be passed through (then the server reads it), or -errno.
 */
static int backing_pinned(struct ubfs *fs, const struct ub_inode_info *ii)
{
	struct backing *b;
	int fd, id;

	if (!fs->backing || !pt_active())
		return 0;
	b = &fs->backing[ii->payload];
	id = __atomic_load_n(&b->id, __ATOMIC_ACQUIRE);
	if (id > 0) {
		/* another inode pinned it: the kernel would read it up to its own end */
		if (b->size == ii->size)
			return id;
		fs_log("inode %" PRIu64 ": its object has %" PRIu64 " bytes, the inode %" PRIu64,
		       ub_inode_st_ino(ii), b->size, ii->size);
		return -EIO;
	}
	fd = object_fd(fs, ii);	/* checked (size, verity) before the kernel gets it */
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&backing_lock);
	if (b->id <= 0) {
		b->size = ii->size;
		__atomic_store_n(&b->id, pt_backing_open(fd), __ATOMIC_RELEASE);
	}
	id = b->id;
	pthread_mutex_unlock(&backing_lock);
	objcache_put(&fs->objects, ii->payload);
	return id;
}

/*
 * cache=auto: a big external file is passed through (the store's page cache
 * and its large folios); anything else is kept in this mount's page cache
 * across opens, and its object is opened only if a READ comes (by inode, as
 * in cache=private), so a warm open of a small file is one cheap round trip.
 */
static void open_auto(fuse_req_t req, struct ubfs *fs, const struct ub_inode_info *ii,
		      struct fuse_file_info *fi)
{
	int id = 0;

	if (ub_inode_is_external(ii) && ii->size >= fs->pt_min)
		id = backing_pinned(fs, ii);
	if (id < 0) {
		fuse_reply_err(req, -id);
		return;
	}
	fi->fh = id > 0 ? pt_fh(-1, id) : FH_NONE;
	fi->keep_cache = id == 0;
	fi->noflush = 1;
	fuse_reply_open(req, fi);	/* nothing to undo if the opener went away */
}

/* Undoes what op_open set up for @fh. */
static void release_fh(struct ubfs *fs, fuse_ino_t ino, uint64_t fh)
{
	struct ub_inode_info ii;

	/* The inode was read at open; the blob cannot have changed since. */
	if (fh == FH_NONE || get_inode(fs, ino, &ii) != 0)
		return;
	if (pt_fh_id(fh))
		backing_put(fs, ii.payload);
	objcache_put(&fs->objects, ii.payload);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	int err, fd;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* cache=private: this tells the kernel to open every file by itself from now on. */
	if (fs->no_open) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	err = get_inode(fs, ino, &ii);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (!ub_inode_is_reg(&ii)) {
		fuse_reply_err(req, ub_inode_is_dir(&ii) ? EISDIR : EINVAL);
		return;
	}
	if (fs->cache == CACHE_AUTO) {
		open_auto(req, fs, &ii, fi);
		return;
	}
	fi->fh = FH_NONE;
	if (ub_inode_is_external(&ii)) {
		fd = object_fd(fs, &ii);
		if (fd < 0) {
			fuse_reply_err(req, -fd);
			return;
		}
		/* With passthrough the kernel reads the object itself; else we serve reads from fd. */
		fi->fh = pt_fh(fd, backing_get(fs, ii.payload, fd));
	}
	/* Passthrough files use the object's page cache; the kernel refuses cache flags on them. */
	fi->keep_cache = fi->fh == FH_NONE || !pt_fh_id(fi->fh);
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) != 0)
		release_fh(fs, ino, fi->fh);	/* the opener went away: nobody will release it */
}

/* A read of a file that is not external: inline bytes from the blob, or nothing. */
static void read_inline(fuse_req_t req, struct ubfs *fs, const struct ub_inode_info *ii,
			size_t size, off_t off)
{
	char buf[UB_INLINE_MAX];
	int n;

	if (!ub_inode_is_inline(ii) || (u64)off >= ii->size) {
		fuse_reply_buf(req, NULL, 0);	/* empty file, or past the end */
		return;
	}
	n = ub_read_data(&fs->blob, ii, (u64)off, buf, size < sizeof(buf) ? size : sizeof(buf));
	if (blob_lost())
		n = -EIO;
	if (n < 0) {
		fuse_reply_err(req, reply_errno(n, "reading inline data", ub_inode_st_ino(ii)));
		return;
	}
	fuse_reply_buf(req, buf, (size_t)n);
}

/*
 * libfuse splices from the object into /dev/fuse, or preads when it cannot. The object is
 * checked first (object_fits): one that no longer has the inode's size answers EIO, since a
 * short read would make the kernel take it as the file's new size, and with --verity one
 * changed since it was hashed is hashed again.
 */
static void read_fd(fuse_req_t req, struct ubfs *fs, int fd, const struct ub_inode_info *ii,
		    size_t size, off_t off)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	int err = object_fits(fs, ii, fd);

	if (err) {
		fuse_reply_err(req, err);
		return;
	}

	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = fd;
	bv.buf[0].pos = off;
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

/* cache=private: a READ names only the inode. */
static void read_by_inode(fuse_req_t req, struct ubfs *fs, fuse_ino_t ino, size_t size, off_t off)
{
	struct ub_inode_info ii;
	int err, fd;

	err = get_inode(fs, ino, &ii);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (!ub_inode_is_external(&ii)) {
		read_inline(req, fs, &ii, size, off);
		return;
	}
	fd = object_fd_unchecked(fs, &ii);	/* read_fd checks it */
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	read_fd(req, fs, fd, &ii, size, off);
	objcache_put(&fs->objects, ii.payload);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	int err;

	if (fs->no_open || fs->cache == CACHE_AUTO) {
		read_by_inode(req, fs, ino, size, off);
	} else if ((err = get_inode(fs, ino, &ii)) != 0) {
		fuse_reply_err(req, err);
	} else if (fi->fh != FH_NONE) {
		read_fd(req, fs, pt_fh_fd(fi->fh), &ii, size, off);
	} else {
		read_inline(req, fs, &ii, size, off);
	}
}

/*
 * SEEK_DATA and SEEK_HOLE from the object, so that a sparse file of the image (its object keeps
 * its holes) copies up through overlayfs, and copies with cp, without its zeros. Answers stay
 * inside the inode's size; other whences never reach us.
 */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	int err, fd;
	off_t at;

	(void)fi;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = get_inode(fs, ino, &ii);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (off < 0 || (u64)off >= ii.size) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	if (!ub_inode_is_external(&ii)) {	/* inline data has no holes */
		fuse_reply_lseek(req, whence == SEEK_DATA ? off : (off_t)ii.size);
		return;
	}
	fd = object_fd(fs, &ii);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	at = lseek(fd, off, whence);
	err = at < 0 ? errno : 0;
	objcache_put(&fs->objects, ii.payload);
	if (err)
		fuse_reply_err(req, err);
	else if ((u64)at >= ii.size)
		whence == SEEK_DATA ? fuse_reply_err(req, ENXIO) : fuse_reply_lseek(req, (off_t)ii.size);
	else
		fuse_reply_lseek(req, at);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubfs *fs = req_fs(req);

	/* cache=auto holds nothing per open file. */
	if (fs->cache != CACHE_AUTO)
		release_fh(fs, ino, fi->fh);
	fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	int err;

	/* The kernel checked that it is a directory; it caches listings without OPENDIR. */
	if (fs->no_opendir) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	err = get_inode(fs, ino, &ii);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (!ub_inode_is_dir(&ii)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* State of one readdir/readdirplus request while the reader emits entries. */
struct dirfill {
	fuse_req_t req;
	struct ubfs *fs;
	int plus;
	char *buf;
	size_t size, used;
	int err;		/* errno of an entry that could not be emitted */
};

/* Adds one entry; returns nonzero when it did not fit (or failed). */
static int dirfill_add(struct dirfill *d, const char *name, const struct ub_inode_info *ii,
		       unsigned int dtype, u64 ino_index, off_t next)
{
	struct fuse_entry_param e;
	size_t n;

	if (d->plus) {
		fill_entry(d->fs, ii, &e);
		n = fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name, &e, next);
	} else {
		memset(&e.attr, 0, sizeof(e.attr));
		e.attr.st_ino = ub_index_to_st_ino(ino_index);
		e.attr.st_mode = (mode_t)dtype << 12;	/* DT_* -> S_IF* */
		n = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, &e.attr, next);
	}
	if (n > d->size - d->used)
		return 1;
	d->used += n;
	return 0;
}

static int dirfill_emit(void *arg, const struct ub_dirent_info *de)
{
	struct dirfill *d = arg;
	struct ub_inode_info ii;
	char name[UB_NAME_MAX + 1];
	int err;

	memcpy(name, de->name, de->name_len);
	name[de->name_len] = '\0';
	if (d->plus) {
		err = ub_read_inode(&d->fs->blob, de->ino, &ii);
		if (!err && ub_inode_dtype(&ii) != de->dtype)
			err = -EUCLEAN;	/* SPEC §10: dirent type must match the inode */
		if (err) {
			d->err = reply_errno(err, "readdir entry", ub_index_to_st_ino(de->ino));
			return 1;
		}
	}
	return dirfill_add(d, name, d->plus ? &ii : NULL, de->dtype, de->ino, (off_t)de->next_pos);
}

/* "." and ".." at positions 0 and 1, as SPEC §5 numbers them. */
static int dirfill_dots(struct dirfill *d, const struct ub_inode_info *dir, u64 *pos)
{
	struct ub_inode_info parent;
	int err;

	if (*pos == UB_DIRPOS_DOT) {
		if (dirfill_add(d, ".", dir, UB_DT_DIR, dir->index, UB_DIRPOS_DOTDOT))
			return 1;
		*pos = UB_DIRPOS_DOTDOT;
	}
	if (*pos == UB_DIRPOS_DOTDOT) {
		parent = *dir;
		if (d->plus) {
			err = ub_read_inode(&d->fs->blob, ub_inode_parent(dir), &parent);
			if (err) {
				d->err = reply_errno(err, "reading parent", ub_inode_st_ino(dir));
				return 1;
			}
		}
		if (dirfill_add(d, "..", &parent, UB_DT_DIR, ub_inode_parent(dir), UB_DIRPOS_FIRST))
			return 1;
		*pos = UB_DIRPOS_FIRST;
	}
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus)
{
	struct dirfill d = { .req = req, .fs = req_fs(req), .plus = plus, .size = size };
	struct ub_inode_info dir;
	u64 pos = off < 0 ? UB_DIRPOS_FIRST : (u64)off;
	int err;

	err = get_inode(d.fs, ino, &dir);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	d.buf = malloc(size);
	if (!d.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	err = 0;
	if (!dirfill_dots(&d, &dir, &pos) && !d.err)
		err = ub_readdir(&d.fs->blob, &dir, &pos, dirfill_emit, &d);
	if (err && !d.err)
		d.err = reply_errno(err, "readdir", ino);
	if (blob_lost()) {
		d.err = EIO;
		d.used = 0;
	}
	/* Entries already gathered go out; the failing one fails the next call. */
	if (d.err && d.used == 0)
		fuse_reply_err(req, d.err);
	else
		fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, 1);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* Xattrs are shown with trusted.overlay.* escaped so overlayfs can stack on us. */
/*
 * Does the caller have CAP_SYS_ADMIN, as a filesystem asks before listing
 * trusted.* names (reading one without it is -ENODATA in the VFS)?  Users
 * other than root do not (a user's rootless mount included); root's own
 * capabilities are read from /proc, since container runtimes drop this one.
 */
static bool caller_is_admin(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char path[64], line[256];
	bool admin = true;	/* uid 0 whose status is unreadable: as before */
	FILE *f;

	if (ctx->uid != 0)
		return false;
	if (ctx->pid <= 0)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
	f = fopen(path, "re");
	if (!f)
		return true;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long caps;

		if (sscanf(line, "CapEff: %llx", &caps) == 1) {
			admin = caps & (1ULL << 21);	/* CAP_SYS_ADMIN */
			break;
		}
	}
	fclose(f);
	return admin;
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	char *buf = NULL;
	long n;
	int err;

	err = get_inode(fs, ino, &ii);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (size && !(buf = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = ub_listxattr(&fs->blob, &ii, UB_XATTR_ESCAPE_OVERLAY | UB_XATTR_HIDE_UNREADABLE_USER |
			 (caller_is_admin(req) ? 0 : UB_XATTR_HIDE_TRUSTED), buf, size);
	if (blob_lost())
		n = -EIO;
	if (n < 0)
		fuse_reply_err(req, reply_errno((int)n, "listxattr", ino));
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

/*
 * With uidmap=/gidmap=, ids stored inside xattr values are mapped as the inode's own: the named
 * users and groups of a POSIX ACL (the kernel enforces what getxattr returns) and the root id of
 * a version 3 file capability. Values too short for their header are left to the kernel to refuse.
 */
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP 0x08
#define VFS_CAP_V3 0x03000000u
#define VFS_CAP_V3_SIZE 24

static u32 get_le32(const char *p)
{
	const unsigned char *b = (const unsigned char *)p;

	return b[0] | (u32)b[1] << 8 | (u32)b[2] << 16 | (u32)b[3] << 24;
}

static void put_le32(char *p, u32 v)
{
	p[0] = (char)v;
	p[1] = (char)(v >> 8);
	p[2] = (char)(v >> 16);
	p[3] = (char)(v >> 24);
}

static int xattr_has_ids(const char *name)
{
	return !strcmp(name, "system.posix_acl_access") || !strcmp(name, "system.posix_acl_default") ||
	       !strcmp(name, "security.capability");
}

/*
 * Maps the ids inside val in place; returns its new length. An ACL entry naming a user or group
 * outside the mapping is left out (no process can have that id, and as -1 the kernel would
 * refuse the whole ACL); a v3 capability's unmapped root id becomes -1 (no root it applies to).
 */
static size_t map_xattr_ids(const char *name, char *val, size_t len)
{
	size_t off, out;

	if (!strcmp(name, "security.capability")) {
		if (len >= VFS_CAP_V3_SIZE && (get_le32(val) & 0xff000000u) == VFS_CAP_V3)
			put_le32(val + 20, map_id(&uid_map, get_le32(val + 20)));
		return len;
	}
	if (len < 4 || get_le32(val) != ACL_XATTR_VERSION)
		return len;
	/* entries of 8 bytes: tag (le16), perm (le16), id (le32) */
	for (off = out = 4; off + 8 <= len; off += 8) {
		unsigned int tag = (unsigned char)val[off] | (unsigned char)val[off + 1] << 8;
		u32 id = get_le32(val + off + 4);

		if (tag == ACL_TAG_USER)
			id = map_id(&uid_map, id);
		else if (tag == ACL_TAG_GROUP)
			id = map_id(&gid_map, id);
		if ((tag == ACL_TAG_USER || tag == ACL_TAG_GROUP) && id == UNMAPPED_ID)
			continue;
		memmove(val + out, val + off, 8);
		put_le32(val + out + 4, id);
		out += 8;
	}
	memmove(val + out, val + off, len - off);	/* a partial trailing entry stays, for the kernel to refuse */
	return out + (len - off);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ubfs *fs = req_fs(req);
	struct ub_inode_info ii;
	int mapped = (uid_map.n || gid_map.n) && xattr_has_ids(name);
	size_t want = size;
	char *buf = NULL;
	int n;

	n = get_inode(fs, ino, &ii);
	if (n) {
		fuse_reply_err(req, n);
		return;
	}
	/* a mapped value can be shorter than the stored one: read it whole, also for a size probe */
	if (mapped) {
		n = ub_getxattr(&fs->blob, &ii, UB_XATTR_ESCAPE_OVERLAY, name, strlen(name), NULL, 0);
		want = n < 0 ? 0 : (size_t)n;
	}
	if (want && !(buf = malloc(want))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = ub_getxattr(&fs->blob, &ii, UB_XATTR_ESCAPE_OVERLAY, name, strlen(name), buf, want);
	if (blob_lost())
		n = -EIO;
	if (n >= 0 && mapped)
		n = (int)map_xattr_ids(name, buf, (size_t)n);
	if (n < 0)
		fuse_reply_err(req, reply_errno(n, "getxattr", ino));
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else if ((size_t)n > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ubfs *fs = req_fs(req);
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = UB_BLOCK_SIZE;
	sv.f_frsize = UB_BLOCK_SIZE;
	/* as the kernel module: file data plus the blob, rounded up without wrapping near 2^64 */
	sv.f_blocks = (fs->blob.data_bytes >> UB_BLOCK_SIZE_LOG2) + !!(fs->blob.data_bytes & (UB_BLOCK_SIZE - 1)) +
		      (fs->blob.size >> UB_BLOCK_SIZE_LOG2);
	sv.f_files = fs->blob.inode_count;
	sv.f_namemax = UB_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops ub_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.read = op_read,
	.lseek = op_lseek,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.listxattr = op_listxattr,
	.getxattr = op_getxattr,
	.statfs = op_statfs,
};

/* ---- start-up ---------------------------------------------------------- */

static void usage(void)
{
	printf("usage: " PROG " BLOB MOUNTPOINT -o basedir=STORE[:STORE...][,OPTIONS]\n"
	       "\n"
	       "Serve a unionblob blob read-only; regular files come from the object stores,\n"
	       "searched in order.\n"
	       "\n"
	       "options:\n"
	       "    -o basedir=A[:B...]     object stores (required)\n"
	       "    -o verity=off|try|require\n"
	       "                            check objects against their fs-verity digest:\n"
	       "                            try: where the store has fs-verity; require: always\n"
	       "                            (computed once per object when the store cannot)\n"
	       "    -o allow_other          let other users in (permissions still apply)\n"
	       "    -o foreground, -f       do not daemonize\n"
	       "    -o pidfile=FILE         write the server's pid once it serves\n"
	       "    -o logfile=FILE         where runtime errors go after daemonizing\n"
	       "    -o timeout=SECONDS      kernel entry/attr cache time (default 1 year)\n"
	       "    -o cache=private|shared|auto\n"
	       "                            private (default): no OPEN per open(), file pages\n"
	       "                            cached by this mount; shared: one OPEN per open(),\n"
	       "                            file pages cached once with the store's own files\n"
	       "                            (kernel FUSE passthrough, Linux 6.9+); auto: one OPEN\n"
	       "                            per open(), files from passthrough_min on shared,\n"
	       "                            smaller ones cached by this mount\n"
	       "    -o passthrough_min=SIZE cache=auto: smallest file passed through, in bytes\n"
	       "                            or with K, M, G (default 128K)\n"
	       "    -o open_objects=N       idle object files kept open (default 4096)\n"
	       "    -o passthrough=auto|off cache=shared|auto: off serves reads through the\n"
	       "                            server (cache=auto then works like private)\n"
	       "    -o uidmap=C:H:L[:C:H:L...], gidmap=...\n"
	       "                            show the blob's ids C..C+L-1 as H..H+L-1 and any\n"
	       "                            other id as 65534 (containerd's uidmapping labels)\n"
	       "    -o nosplice             copy through userspace instead of splice\n"
	       "    -o noreaddirplus        plain readdir only (tests, benchmarks)\n"
	       "    -s                      single-threaded\n"
	       "    -d, -o debug            libfuse debug output (implies -f)\n"
	       "and the mount options of libfuse (see fuse(8)).\n");
}

enum { KEY_FOREGROUND, KEY_DEBUG, KEY_SINGLE, KEY_HELP, KEY_VERSION };

#define UB_OPT(t, p) { t, offsetof(struct config, p), 1 }
static const struct fuse_opt ub_opts[] = {
	{ "basedir=%s", offsetof(struct config, basedir), 0 },
	{ "verity=%s", offsetof(struct config, verity), 0 },
	{ "pidfile=%s", offsetof(struct config, pidfile), 0 },
	{ "logfile=%s", offsetof(struct config, logfile), 0 },
	{ "timeout=%s", offsetof(struct config, timeout), 0 },
	{ "passthrough=%s", offsetof(struct config, passthrough), 0 },
	{ "cache=%s", offsetof(struct config, cache), 0 },
	{ "open_objects=%s", offsetof(struct config, open_objects), 0 },
	{ "passthrough_min=%s", offsetof(struct config, passthrough_min), 0 },
	{ "uidmap=%s", offsetof(struct config, uidmap), 0 },
	{ "gidmap=%s", offsetof(struct config, gidmap), 0 },
	/* libfuse refuses INIT unless init() repeats the max_read it was mounted with: note it and
	 * pass it on to libfuse too. */
	{ "max_read=%u", offsetof(struct config, max_read), 0 },
	FUSE_OPT_KEY("max_read=", FUSE_OPT_KEY_KEEP),
	UB_OPT("nosplice", nosplice),
	UB_OPT("noreaddirplus", noreaddirplus),
	FUSE_OPT_KEY("foreground", KEY_FOREGROUND),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct config *cfg = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!cfg->blob)
			return (cfg->blob = strdup(arg)) ? 0 : -1;
		if (!cfg->mountpoint)
			return (cfg->mountpoint = strdup(arg)) ? 0 : -1;
		fprintf(stderr, PROG ": unexpected argument '%s'\n", arg);
		return -1;
	case KEY_FOREGROUND:
		cfg->foreground = 1;
		return 0;
	case KEY_DEBUG:
		cfg->foreground = 1;
		return 1;	/* libfuse wants it too */
	case KEY_SINGLE:
		cfg->singlethread = 1;
		return 0;
	case KEY_HELP:
		cfg->help = 1;
		return 0;
	case KEY_VERSION:
		cfg->version = 1;
		return 0;
	default:
		return 1;	/* everything else is libfuse's (mount options) */
	}
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static const char *blob_error(int err)
{
	switch (err) {
	case -EUCLEAN: return "not a valid unionblob blob (bad magic, checksum, sizes or sections)";
	case -EINVAL: return "unsupported unionblob blob (version, block size or features)";
	default: return strerror(-err);
	}
}

static void open_blob(struct ubfs *fs, const char *path)
{
	struct stat st;
	void *map;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		die("%s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		die("%s: not a regular file", path);
	if (st.st_size < (off_t)UB_BLOCK_SIZE)
		die("%s: %s", path, blob_error(-EUCLEAN));
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("%s: mmap: %s", path, strerror(errno));
	close(fd);	/* the mapping keeps the file */
	if (catch_blob_sigbus(map, (size_t)st.st_size))
		die("sigaction SIGBUS: %s", strerror(errno));
	/* Directory blocks and inodes are read at random: no readahead. */
	madvise(map, (size_t)st.st_size, MADV_RANDOM);
	fs->map = map;
	fs->map_len = (size_t)st.st_size;
	fs->blob_path = path;
	fs->blob.size = (u64)st.st_size;
	fs->blob.get_page = map_get_page;
	fs->blob.put_page = NULL;
	fs->blob.ctx = fs;
	err = ub_open(&fs->blob, 0);
	if (err == -EINVAL && fs->blob.version_major != UB_VERSION_MAJOR)
		die("%s: unionblob format version %u: %s (this server reads version %u)", path,
		    fs->blob.version_major, fs->blob.version_major < UB_VERSION_MAJOR ?
		    "rebuild the blob with this cfs" : "too new for this server", UB_VERSION_MAJOR);
	if (err)
		die("%s: %s", path, blob_error(err));
	fs->handle_gen = ub_handle_generation(&fs->blob);
	/* FUSE's root node is 1, which names inode index 0 (st_ino = index + 1, SPEC §4) */
	if (fs->blob.root_ino != 0)
		die("%s: the root directory is inode index %" PRIu64 "; this server serves blobs whose root is index 0, as cfs build writes them",
		    path, fs->blob.root_ino);
}

static void open_stores(struct ubfs *fs, const char *basedir)
{
	char *list, *save = NULL, *dir;

	if (!basedir || !*basedir)
		die("-o basedir=STORE[:STORE...] is required");
	list = strdup(basedir);
	if (!list)
		die("out of memory");
	for (dir = strtok_r(list, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		int fd;

		if (fs->nstores == MAX_STORES)
			die("too many stores (at most %d)", MAX_STORES);
		fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			die("store %s: %s", dir, strerror(errno));
		fs->store_fd[fs->nstores] = fd;
		fs->store_path[fs->nstores] = strdup(dir);
		fs->nstores++;
	}
	if (!fs->nstores)
		die("-o basedir=STORE[:STORE...] is required");
	free(list);
}

/*
 * cache=auto: files from this size on are passed through.  Below it the
 * mount's page cache (4 KiB folios on Linux 6.18) reads as fast as the
 * store's, and skipping the kernel's per-open backing file is cheaper; from
 * it on, the store's large folios win (bench/mount/README.md, run 5).
 */
#define PASSTHROUGH_MIN_DEFAULT (128u << 10)

/* cache= when not given (bench/mount/README.md, run 5). */
#define CACHE_DEFAULT CACHE_PRIVATE

/* "N", "NK", "NM" or "NG" (binary units) into @out; 0, or -1 if it is not one. */
static int parse_size(const char *s, u64 *out)
{
	unsigned long long n;
	char *end;
	int shift = 0;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (*end) {
	case 'G': case 'g': shift += 10; /* fall through */
	case 'M': case 'm': shift += 10; /* fall through */
	case 'K': case 'k': shift += 10; end++; break;
	}
	if (*end || (shift && n > (~0ULL >> shift)))
		return -1;
	*out = (u64)n << shift;
	return 0;
}

/* C:H:L triples joined by ':' (as fuse-overlayfs takes them); ranges of C must not overlap. */
static void parse_id_map(const char *opt, const char *text, struct id_map *m)
{
	unsigned long long v[3];
	const char *p = text;
	char *end;
	int i, k;

	m->n = 0;
	while (*p) {
		if (m->n == MAX_ID_RANGES)
			die("%s=%s: more than %d ranges", opt, text, MAX_ID_RANGES);
		for (k = 0; k < 3; k++) {
			errno = 0;
			if (*p < '0' || *p > '9')
				goto bad;
			v[k] = strtoull(p, &end, 10);
			if (errno || v[k] > UINT32_MAX || (*end && *end != ':') || (k < 2 && !*end))
				goto bad;
			p = *end ? end + 1 : end;
			if (*end && !*p)
				goto bad;
		}
		/* 4294967295 is no id (the kernel's -1): no range may reach it */
		if (!v[2] || v[0] + v[2] - 1 >= UINT32_MAX || v[1] + v[2] - 1 >= UINT32_MAX)
			goto bad;
		for (i = 0; i < m->n; i++)
			if ((v[0] < (unsigned long long)m->r[i].inside + m->r[i].count && m->r[i].inside < v[0] + v[2]) ||
			    (v[1] < (unsigned long long)m->r[i].outside + m->r[i].count && m->r[i].outside < v[1] + v[2]))
				die("%s=%s: ranges overlap", opt, text);
		m->r[m->n++] = (struct id_range){ (u32)v[0], (u32)v[1], (u32)v[2] };
	}
	if (m->n)
		return;
bad:
	die("%s=%s: expected FIRST:MAPPED:COUNT[:FIRST:MAPPED:COUNT...] (decimal ids up to 4294967294, COUNT > 0)", opt, text);
}

static void parse_settings(struct ubfs *fs, const struct config *cfg)
{
	char *end;

	fs->verity = VERITY_OFF;
	if (cfg->verity) {
		if (!strcmp(cfg->verity, "try"))
			fs->verity = VERITY_TRY;
		else if (!strcmp(cfg->verity, "require"))
			fs->verity = VERITY_REQUIRE;
		else if (strcmp(cfg->verity, "off"))
			die("verity=%s: expected off, try or require", cfg->verity);
	}
	fs->timeout = 365.0 * 86400;
	if (cfg->timeout) {
		fs->timeout = strtod(cfg->timeout, &end);
		if (*end || fs->timeout < 0)
			die("timeout=%s: expected seconds", cfg->timeout);
	}
	fs->splice = !cfg->nosplice;
	fs->readdirplus = !cfg->noreaddirplus;
	fs->max_read = cfg->max_read;
	fs->cache = CACHE_DEFAULT;
	if (cfg->cache && !strcmp(cfg->cache, "auto"))
		fs->cache = CACHE_AUTO;
	else if (cfg->cache && !strcmp(cfg->cache, "private"))
		fs->cache = CACHE_PRIVATE;
	else if (cfg->cache && !strcmp(cfg->cache, "shared"))
		fs->cache = CACHE_SHARED;
	else if (cfg->cache)
		die("cache=%s: expected auto, private or shared", cfg->cache);
	if (cfg->uidmap)
		parse_id_map("uidmap", cfg->uidmap, &uid_map);
	if (cfg->gidmap)
		parse_id_map("gidmap", cfg->gidmap, &gid_map);
	fs->pt_min = PASSTHROUGH_MIN_DEFAULT;
	if (cfg->passthrough_min && parse_size(cfg->passthrough_min, &fs->pt_min) != 0)
		die("passthrough_min=%s: expected a size in bytes (suffix K, M or G allowed)",
		    cfg->passthrough_min);
}

#define OPEN_OBJECTS_DEFAULT 4096

/* How many idle object fds to keep: open_objects=N, within half the fd limit. */
static uint32_t open_objects_limit(const struct config *cfg)
{
	unsigned long n = OPEN_OBJECTS_DEFAULT;
	struct rlimit rl;
	char *end;

	if (cfg->open_objects) {
		errno = 0;
		n = strtoul(cfg->open_objects, &end, 10);
		if (*end || !*cfg->open_objects || errno || n == 0 || n > INT32_MAX)
			die("open_objects=%s: expected a positive number", cfg->open_objects);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && n > rl.rlim_cur / 2)
		n = rl.rlim_cur / 2;
	return (uint32_t)n;
}

/* Every open file (or cached object) holds a fd: allow as many as the hard limit does. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void write_pidfile(const char *path)
{
	FILE *f;

	if (!path)
		return;
	f = fopen(path, "we");
	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
		fs_log("pidfile %s: %s", path, strerror(errno));
}

/* Stdio of a daemon: nothing in, runtime errors to the log file if any. */
static void redirect_stdio(const char *logfile)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int log = logfile ? open(logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;

	if (null < 0)
		return;
	dup2(null, 0);
	dup2(null, 1);
	dup2(log >= 0 ? log : null, 2);
	close(null);
	if (log >= 0)
		close(log);
}

/*
 * Fork after the mount exists: the parent exits 0 once the child has its
 * pid file written and its stdio detached, so `cfs mount` returns with a
 * mounted tree and a pid it can find.
 */
static void daemonize(const struct config *cfg)
{
	int pipefd[2];
	char ok = 0;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid > 0) {
		close(pipefd[1]);
		_exit(read(pipefd[0], &ok, 1) == 1 && ok == 1 ? 0 : 1);
	}
	close(pipefd[0]);
	setsid();
	if (chdir("/") < 0)
		_exit(1);
	write_pidfile(cfg->pidfile);
	redirect_stdio(cfg->logfile);
	ok = 1;
	if (write(pipefd[1], &ok, 1) != 1)
		_exit(1);
	close(pipefd[1]);
}

/* passthrough=auto (default) or off; anything else is a usage error. */
static int use_passthrough(const struct config *cfg)
{
	if (!cfg->passthrough || !strcmp(cfg->passthrough, "auto"))
		return 1;
	if (!strcmp(cfg->passthrough, "off"))
		return 0;
	die("passthrough=%s: expected auto or off", cfg->passthrough);
}

static int serve(struct fuse_session *se, const struct config *cfg)
{
	struct fuse_loop_config *lc;
	int ret;

	if (cfg->singlethread)
		return fuse_session_loop(se);
	lc = fuse_loop_cfg_create();
	if (!lc)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(lc, 0);
	fuse_loop_cfg_set_idle_threads(lc, 4);
	ret = fuse_session_loop_mt(se, lc);
	fuse_loop_cfg_destroy(lc);
	return ret;
}

/* Mount options every instance gets: read-only, kernel permission checks, a readable name. */
static int add_fixed_options(struct fuse_args *args, const char *blob)
{
	char *opts = NULL, *fsname;
	int err;

	if (asprintf(&fsname, "fsname=%s", blob) < 0)
		return -1;
	err = fuse_opt_add_opt(&opts, "ro,default_permissions,subtype=unionblob") ||
	      fuse_opt_add_opt_escaped(&opts, fsname) ||
	      fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opts);
	free(fsname);
	free(opts);
	return err ? -1 : 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct config cfg = { 0 };
	struct fuse_session *se;
	static struct ubfs fs;
	char *tag;
	int ret, passthrough;

	if (fuse_opt_parse(&args, &cfg, ub_opts, opt_proc) < 0)
		return 2;
	if (cfg.help) {
		usage();
		return 0;
	}
	if (cfg.version) {
		printf(PROG " (unionblob format %d), libfuse %s\n", UB_VERSION_MAJOR, fuse_pkgversion());
		return 0;
	}
	if (!cfg.blob || !cfg.mountpoint) {
		fprintf(stderr, "usage: " PROG " BLOB MOUNTPOINT -o basedir=STORE[:STORE...] (see --help)\n");
		return 2;
	}
	parse_settings(&fs, &cfg);
	passthrough = use_passthrough(&cfg) && fs.cache != CACHE_PRIVATE;
	open_blob(&fs, cfg.blob);
	open_stores(&fs, cfg.basedir);
	if (fs.verity != VERITY_OFF && fs.blob.sect[UB_SECT_DIGESTS].count &&
	    !(fs.obj_checked = calloc(fs.blob.sect[UB_SECT_DIGESTS].count, sizeof(*fs.obj_checked))))
		die("out of memory");
	if (asprintf(&tag, "[%s]", cfg.mountpoint) >= 0)
		log_tag = tag;
	raise_fd_limit();
	if (objcache_init(&fs.objects, fs.blob.sect[UB_SECT_DIGESTS].count, open_objects_limit(&cfg)) != 0)
		die("out of memory");
	if (add_fixed_options(&args, cfg.blob) < 0)
		die("out of memory");

	se = fuse_session_new(&args, &ub_ops, sizeof(ub_ops), &fs);
	if (!se)
		return 1;	/* libfuse said why (unknown option, ...) */
	if (fuse_set_signal_handlers(se) != 0) {
		fuse_session_destroy(se);
		return 1;
	}
	if (fuse_session_mount(se, cfg.mountpoint) != 0) {
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
		return 1;	/* libfuse said why */
	}
	if (passthrough && fs.blob.sect[UB_SECT_DIGESTS].count) {
		fs.backing = calloc(fs.blob.sect[UB_SECT_DIGESTS].count, sizeof(*fs.backing));
		if (!fs.backing || pt_install(se) != 0) {
			fs_log("cannot set up passthrough: reads go through the server");
			free(fs.backing);
			fs.backing = NULL;
		}
	}
	if (cfg.foreground)
		write_pidfile(cfg.pidfile);
	else
		daemonize(&cfg);

	ret = serve(se, &cfg);

	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	if (cfg.pidfile)
		unlink(cfg.pidfile);
	fuse_opt_free_args(&args);
	return ret ? 1 : 0;
}
