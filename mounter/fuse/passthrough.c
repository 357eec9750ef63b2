/* SPDX-License-Identifier: Apache-2.0 */
/* See passthrough.h.  Protocol structures as in the kernel's uapi <linux/fuse.h> 7.40. */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include "passthrough.h"

#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_OPEN = 14, OP_INIT = 26 };

#define INIT_EXT		(1u << 30)	/* flags2 is valid */
#define INIT2_PASSTHROUGH	(1u << 5)	/* FUSE_PASSTHROUGH (bit 37) in flags2 */
#define OPEN_PASSTHROUGH	(1u << 7)	/* FOPEN_PASSTHROUGH */

struct in_header {
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};

struct init_in {
	uint32_t major, minor, max_readahead, flags, flags2;
};

struct out_header {
	uint32_t len;
	int32_t error;
	uint64_t unique;
};

struct init_out {
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2, max_stack_depth;
	uint32_t unused[6];
};

struct open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

struct backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};

#define DEV_IOC_BACKING_OPEN	_IOW(229, 1, struct backing_map)
#define DEV_IOC_BACKING_CLOSE	_IOW(229, 2, uint32_t)

_Static_assert(sizeof(struct in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct init_out) == 64, "fuse_init_out");
_Static_assert(sizeof(struct open_out) == 16, "fuse_open_out");

/*
 * Our stacking depth: one above the store.  Not more, so overlayfs (which
 * allows two) can still stack on a mount of ours for writable containers.
 */
#define STACK_DEPTH 1

static int devfd = -1;
static int offered;	/* the kernel's INIT offered passthrough */
static int active;	/* we asked for it; cleared if the kernel refuses backing files */

static __thread uint32_t cur_opcode;
static __thread uint64_t cur_unique;

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);
	const struct in_header *h = buf;

	(void)userdata;
	cur_opcode = 0;
	if (n < (ssize_t)sizeof(*h))
		return n;
	cur_opcode = h->opcode;
	cur_unique = h->unique;
	if (h->opcode == OP_INIT && (size_t)n >= sizeof(*h) + sizeof(struct init_in)) {
		const struct init_in *in = (const void *)((const char *)buf + sizeof(*h));
		offered = (in->flags & INIT_EXT) && (in->flags2 & INIT2_PASSTHROUGH);
	}
	return n;
}

static void patch_init(struct init_out *out)
{
	if (!offered)
		return;
	out->flags |= INIT_EXT;
	out->flags2 |= INIT2_PASSTHROUGH;
	out->max_stack_depth = STACK_DEPTH;
	__atomic_store_n(&active, 1, __ATOMIC_RELEASE);
}

static void patch_open(struct open_out *out)
{
	int id = pt_fh_id(out->fh);

	if (id > 0) {
		out->open_flags |= OPEN_PASSTHROUGH;
		out->backing_id = id;
	}
}

/* The reply to the request this thread read last: patch INIT and OPEN, pass the rest. */
static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct out_header *oh = iov[0].iov_base;

	(void)userdata;
	if (count == 2 && iov[0].iov_len == sizeof(*oh) && oh->unique == cur_unique && oh->error == 0) {
		if (cur_opcode == OP_INIT && iov[1].iov_len >= offsetof(struct init_out, unused))
			patch_init(iov[1].iov_base);
		else if (cur_opcode == OP_OPEN && iov[1].iov_len == sizeof(struct open_out))
			patch_open(iov[1].iov_base);
	}
	return writev(fd, iov, count);
}

/* Kept so replies of file data still splice into /dev/fuse (custom I/O disables it otherwise). */
static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

int pt_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
		.writev = io_writev,
		.read = io_read,
		.splice_send = io_splice_send,
	};
	int err;

	devfd = fuse_session_fd(se);
	err = fuse_session_custom_io(se, &io, devfd);
	if (err)
		devfd = -1;
	return err;
}

int pt_offered(void)
{
	return __atomic_load_n(&offered, __ATOMIC_ACQUIRE);
}

int pt_active(void)
{
	return __atomic_load_n(&active, __ATOMIC_ACQUIRE);
}

int pt_backing_open(int fd)
{
	struct backing_map map = { .fd = fd };
	int id;

	if (!pt_active())
		return 0;
	id = ioctl(devfd, DEV_IOC_BACKING_OPEN, &map);
	if (id > 0)
		return id;
	/* Not allowed at all (no CAP_SYS_ADMIN, old kernel): stop trying. */
	if (errno == EPERM || errno == ENOTTY || errno == EINVAL)
		__atomic_store_n(&active, 0, __ATOMIC_RELEASE);
	return 0;	/* e.g. ELOOP: a store on a stacked filesystem; served by us instead */
}

void pt_backing_close(int id)
{
	uint32_t bid = (uint32_t)id;

	if (id > 0)
		ioctl(devfd, DEV_IOC_BACKING_CLOSE, &bid);
}
