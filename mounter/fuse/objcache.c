/* SPDX-License-Identifier: Apache-2.0 */
/* See objcache.h. */
#include "objcache.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NONE UINT32_MAX

/* How long a failed open is remembered: 1 to 2 s. */
#define FAILURE_TTL 2

/*
 * fd -1: not open.  An open slot with refs 0 sits on the idle list (the only
 * ones eviction may close); a referenced one is off it, so a fd in use is
 * never closed under a reader.  A failed open is remembered for a moment:
 * the kernel follows a failed readahead with a read of the same page, which
 * must fail alike without a second lookup in every store and a second log
 * line.
 */
struct objslot {
	int32_t fd;
	uint32_t refs;
	uint32_t prev, next;
	int32_t err;		/* -errno of the last failed open */
	uint32_t failed_until;	/* monotonic seconds */
};

static uint32_t now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)ts.tv_sec;
}

int objcache_init(struct objcache *c, uint64_t nobj, uint32_t max)
{
	uint32_t i;

	if (nobj >= NONE)
		return -ENOMEM;
	c->slot = calloc(nobj ? nobj : 1, sizeof(*c->slot));	/* calloc: no size overflow */
	if (!c->slot)
		return -ENOMEM;
	for (i = 0; i < nobj; i++)
		c->slot[i] = (struct objslot){ .fd = -1, .prev = NONE, .next = NONE };
	c->nobj = (uint32_t)nobj;
	c->open = 0;
	c->max = max ? max : 1;
	c->head = c->tail = NONE;
	if (pthread_mutex_init(&c->lock, NULL)) {
		free(c->slot);
		c->slot = NULL;
		return -ENOMEM;
	}
	return 0;
}

static void idle_unlink(struct objcache *c, uint32_t i)
{
	struct objslot *s = &c->slot[i];

	if (s->prev != NONE)
		c->slot[s->prev].next = s->next;
	else
		c->head = s->next;
	if (s->next != NONE)
		c->slot[s->next].prev = s->prev;
	else
		c->tail = s->prev;
	s->prev = s->next = NONE;
}

static void idle_push(struct objcache *c, uint32_t i)
{
	struct objslot *s = &c->slot[i];

	s->prev = NONE;
	s->next = c->head;
	if (c->head != NONE)
		c->slot[c->head].prev = i;
	else
		c->tail = i;
	c->head = i;
}

/* Takes a reference on an open slot (off the idle list while in use). */
static int take(struct objcache *c, uint32_t i)
{
	struct objslot *s = &c->slot[i];

	if (s->refs++ == 0)
		idle_unlink(c, i);
	return s->fd;
}

/* Closes idle fds, oldest first, until at most max are open. */
static void evict(struct objcache *c)
{
	while (c->open > c->max && c->tail != NONE) {
		uint32_t victim = c->tail;

		idle_unlink(c, victim);
		close(c->slot[victim].fd);
		c->slot[victim].fd = -1;
		c->open--;
	}
}

int objcache_lookup(struct objcache *c, uint64_t obj)
{
	struct objslot *s;
	int fd = -ENOENT;

	if (obj >= c->nobj)
		return -ENOENT;
	pthread_mutex_lock(&c->lock);
	s = &c->slot[obj];
	if (s->fd >= 0)
		fd = take(c, (uint32_t)obj);
	else if (s->err && (int32_t)(s->failed_until - now_seconds()) > 0)
		fd = s->err;
	pthread_mutex_unlock(&c->lock);
	return fd;
}

void objcache_failed(struct objcache *c, uint64_t obj, int err)
{
	if (obj >= c->nobj)
		return;
	pthread_mutex_lock(&c->lock);
	c->slot[obj].err = err;
	c->slot[obj].failed_until = now_seconds() + FAILURE_TTL;
	pthread_mutex_unlock(&c->lock);
}

int objcache_insert(struct objcache *c, uint64_t obj, int fd)
{
	struct objslot *s;
	int got;

	if (obj >= c->nobj) {
		close(fd);
		return -EIO;
	}
	pthread_mutex_lock(&c->lock);
	s = &c->slot[obj];
	if (s->fd >= 0) {
		got = take(c, (uint32_t)obj);
	} else {
		s->fd = fd;
		s->refs = 1;
		s->err = 0;	/* it opened: forget an earlier failure */
		c->open++;
		got = fd;
		evict(c);
	}
	pthread_mutex_unlock(&c->lock);
	if (got != fd)
		close(fd);	/* another reader opened it first */
	return got;
}

void objcache_put(struct objcache *c, uint64_t obj)
{
	if (obj >= c->nobj)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->slot[obj].refs && --c->slot[obj].refs == 0) {
		idle_push(c, (uint32_t)obj);
		evict(c);
	}
	pthread_mutex_unlock(&c->lock);
}
