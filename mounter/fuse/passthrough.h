/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE passthrough (Linux 6.9+) for a libfuse that predates it (3.14 has no
 * FUSE_CAP_PASSTHROUGH; 3.16 does).  With it, reads and mmaps of an external
 * file go from the kernel straight to its object in the store, at the speed
 * of the store's own filesystem, and never reach this server.
 *
 * libfuse lets a server bring its own device I/O (fuse_session_custom_io).
 * Ours passes every message through unchanged except two replies:
 *   - INIT: asks for FUSE_PASSTHROUGH when the kernel offers it;
 *   - OPEN: marks the file FOPEN_PASSTHROUGH with the backing id that
 *     op_open registered for its object (FUSE_DEV_IOC_BACKING_OPEN).
 * A request is read, handled and answered by one thread, so the thread
 * remembers the opcode and unique of the request it read last.
 */
#ifndef UNIONBLOB_PASSTHROUGH_H
#define UNIONBLOB_PASSTHROUGH_H

#include <stdint.h>

struct fuse_session;

/*
 * Installs the I/O hooks on a mounted session.  0, or -errno (then the
 * session keeps libfuse's own I/O and nothing is passed through).
 */
int pt_install(struct fuse_session *se);

/* Whether the kernel's INIT offered passthrough (known in the init callback). */
int pt_offered(void);

/* Whether the kernel agreed to passthrough at INIT (and it still works). */
int pt_active(void);

/*
 * Registers @fd as a backing file; returns its backing id (> 0), or 0 when
 * this file cannot be passed through (the caller then serves reads itself).
 */
int pt_backing_open(int fd);
void pt_backing_close(int id);

/*
 * The file handle of an external file: its object fd, plus the backing id
 * when passed through (the OPEN reply hook finds it there).
 */
#define PT_FH_FLAG (1ULL << 63)
static inline uint64_t pt_fh(int fd, int id)
{
	return id > 0 ? PT_FH_FLAG | (uint64_t)(uint32_t)id << 32 | (uint32_t)fd : (uint32_t)fd;
}
static inline int pt_fh_fd(uint64_t fh) { return (int)(uint32_t)fh; }
static inline int pt_fh_id(uint64_t fh) { return fh & PT_FH_FLAG ? (int)((fh >> 32) & 0x7fffffff) : 0; }

#endif
