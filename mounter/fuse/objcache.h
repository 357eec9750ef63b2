/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Open object files by DIGESTS index.  cache=private needs them: the kernel
 * sends no OPEN there, so a READ names only the inode, and opening its object
 * for every cache miss would cost an openat2 + fstat per 128 KiB.
 * cache=auto reads its small files that way too.  cache=shared uses them as
 * well, so an open() of a file costs the server no search of the stores once
 * its object was opened before.  At most @max idle
 * fds stay open (the least recently used is closed first); a fd handed out by
 * objcache_lookup/insert stays valid until objcache_put.
 */
#ifndef UNIONBLOB_OBJCACHE_H
#define UNIONBLOB_OBJCACHE_H

#include <pthread.h>
#include <stdint.h>

struct objslot;

struct objcache {
	struct objslot *slot;	/* one per object, indexed by DIGESTS index */
	uint32_t nobj;
	uint32_t open, max;	/* fds held, and the bound on idle ones */
	uint32_t head, tail;	/* idle list, most recently used first */
	pthread_mutex_t lock;
};

/* 0, or -ENOMEM. */
int objcache_init(struct objcache *c, uint64_t nobj, uint32_t max);

/*
 * The cached fd of object @obj, referenced; -ENOENT when it is not open; the
 * -errno of an open that failed in the last second or two.
 */
int objcache_lookup(struct objcache *c, uint64_t obj);

/* Remembers that opening object @obj just failed with -errno @err. */
void objcache_failed(struct objcache *c, uint64_t obj, int err);

/*
 * Caches @fd as object @obj's, referenced, and returns the fd to use: @fd,
 * or the one another thread cached meanwhile (then @fd is closed); -EIO
 * (and @fd closed) when @obj is out of range.
 */
int objcache_insert(struct objcache *c, uint64_t obj, int fd);

/* Drops the reference of a lookup or insert. */
void objcache_put(struct objcache *c, uint64_t obj);

#endif
