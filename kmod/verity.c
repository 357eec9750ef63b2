// SPDX-License-Identifier: GPL-2.0-only
/*
 * fs-verity digests: of the blob (digest=) and of objects (verity=).
 *
 * Where the file has fs-verity and the kernel exports fsverity_get_digest()
 * (6.4+), the digest is the one fs-verity measured when verity was enabled
 * and costs nothing.  Otherwise (no verity on the file, or 6.1 where the
 * function is not exported) we compute it: SHA-256 Merkle tree over 4096-byte
 * blocks, no salt, then SHA-256 of the 256-byte descriptor, exactly what
 * `fsverity digest` prints.  That reads the whole file once.
 */
#include <linux/fsverity.h>
#include <linux/slab.h>
#include <linux/sched/signal.h>
#include <crypto/hash.h>
#include "internal.h"

#define UBFS_MERKLE_BLOCK	4096
#define UBFS_HASHES_PER_BLOCK	(UBFS_MERKLE_BLOCK / UB_DIGEST_SIZE)
#define UBFS_MERKLE_MAX_LEVELS	12	/* 128^8 blocks already exceed 2^63 bytes */
#define UBFS_READ_CHUNK		(16 * UBFS_MERKLE_BLOCK)

/* The fs-verity descriptor whose SHA-256 is the file digest. */
struct ubfs_verity_descriptor {
	u8 version;		/* 1 */
	u8 hash_algorithm;	/* 1 = SHA-256 */
	u8 log_blocksize;	/* 12 */
	u8 salt_size;		/* 0 */
	__le32 sig_size;	/* 0: not part of the digest */
	__le64 data_size;
	u8 root_hash[64];
	u8 salt[32];
	u8 reserved[144];
};
static_assert(sizeof(struct ubfs_verity_descriptor) == 256);

/*
 * Streaming Merkle tree: level l collects the hashes of level l-1's blocks
 * (level 0: of data blocks); a full 4096-byte block of hashes is hashed
 * into level l+1.  The top level is the one that will hold a single hash.
 */
struct ubfs_merkle {
	struct crypto_shash *tfm;
	unsigned int top;			/* levels below the root */
	u32 fill[UBFS_MERKLE_MAX_LEVELS];	/* bytes in each level's block */
	u8 *blocks;				/* top * 4096 bytes */
	u8 root[UB_DIGEST_SIZE];
};

/* Levels of hashes needed above @nblocks data blocks (0 when one block). */
static int ubfs_merkle_levels(u64 nblocks)
{
	int levels = 0;

	while (nblocks > 1) {
		nblocks = DIV_ROUND_UP_ULL(nblocks, UBFS_HASHES_PER_BLOCK);
		if (++levels > UBFS_MERKLE_MAX_LEVELS)
			return -EFBIG;
	}
	return levels;
}

static int ubfs_merkle_add(struct ubfs_merkle *m, unsigned int level,
			   const u8 *hash)
{
	u8 h[UB_DIGEST_SIZE];
	u8 *block;
	int err;

	for (;;) {
		if (level == m->top) {
			memcpy(m->root, hash, UB_DIGEST_SIZE);
			return 0;
		}
		block = m->blocks + level * UBFS_MERKLE_BLOCK;
		memcpy(block + m->fill[level], hash, UB_DIGEST_SIZE);
		m->fill[level] += UB_DIGEST_SIZE;
		if (m->fill[level] < UBFS_MERKLE_BLOCK)
			return 0;
		err = crypto_shash_tfm_digest(m->tfm, block, UBFS_MERKLE_BLOCK, h);
		if (err)
			return err;
		m->fill[level] = 0;
		hash = h;
		level++;
	}
}

/* Zero-pad and hash the partial block of every level, bottom up. */
static int ubfs_merkle_finish(struct ubfs_merkle *m)
{
	u8 h[UB_DIGEST_SIZE];
	unsigned int level;
	int err;

	for (level = 0; level < m->top; level++) {
		u8 *block = m->blocks + level * UBFS_MERKLE_BLOCK;

		if (!m->fill[level])
			continue;
		memset(block + m->fill[level], 0, UBFS_MERKLE_BLOCK - m->fill[level]);
		err = crypto_shash_tfm_digest(m->tfm, block, UBFS_MERKLE_BLOCK, h);
		if (err)
			return err;
		m->fill[level] = 0;
		err = ubfs_merkle_add(m, level + 1, h);
		if (err)
			return err;
	}
	return 0;
}

/* Hash every data block of @file (zero-padding the last) into the tree. */
static int ubfs_merkle_feed(struct ubfs_merkle *m, struct file *file, u64 size,
			    u8 *buf)
{
	u8 h[UB_DIGEST_SIZE];
	loff_t pos = 0;
	int err;

	while (pos < size) {
		size_t want = min_t(u64, UBFS_READ_CHUNK, size - pos);
		size_t done, off;
		ssize_t n;

		for (done = 0; done < want; done += n) {
			loff_t at = pos + done;

			n = kernel_read(file, buf + done, want - done, &at);
			if (n < 0)
				return n;
			if (n == 0)
				return -EIO;	/* shrank under us */
		}
		memset(buf + want, 0, round_up(want, UBFS_MERKLE_BLOCK) - want);
		for (off = 0; off < want; off += UBFS_MERKLE_BLOCK) {
			err = crypto_shash_tfm_digest(m->tfm, buf + off,
						      UBFS_MERKLE_BLOCK, h);
			if (!err)
				err = ubfs_merkle_add(m, 0, h);
			if (err)
				return err;
		}
		pos += want;
		if (fatal_signal_pending(current))
			return -EINTR;
		cond_resched();
	}
	return 0;
}

static int ubfs_hash_descriptor(struct crypto_shash *tfm, u64 size,
				const u8 *root, u8 digest[UB_DIGEST_SIZE])
{
	struct ubfs_verity_descriptor desc = {
		.version = 1,
		.hash_algorithm = 1,
		.log_blocksize = 12,
		.data_size = cpu_to_le64(size),
	};

	memcpy(desc.root_hash, root, UB_DIGEST_SIZE);
	return crypto_shash_tfm_digest(tfm, (const u8 *)&desc, sizeof(desc), digest);
}

static int ubfs_compute_buffered(struct file *file, u8 digest[UB_DIGEST_SIZE])
{
	u64 size = i_size_read(file_inode(file));
	u64 nblocks = DIV_ROUND_UP_ULL(size, UBFS_MERKLE_BLOCK);
	struct ubfs_merkle m = {};
	u8 *buf = NULL;
	int levels, err;

	levels = ubfs_merkle_levels(nblocks);
	if (levels < 0)
		return levels;
	m.top = levels;
	m.tfm = crypto_alloc_shash("sha256", 0, 0);
	if (IS_ERR(m.tfm))
		return PTR_ERR(m.tfm);
	err = -ENOMEM;
	buf = kvmalloc(UBFS_READ_CHUNK, GFP_KERNEL);
	if (levels)
		m.blocks = kvmalloc_array(levels, UBFS_MERKLE_BLOCK, GFP_KERNEL);
	if (!buf || (levels && !m.blocks))
		goto out;

	/* An empty file's root hash is all zeros. */
	err = ubfs_merkle_feed(&m, file, size, buf);
	if (!err)
		err = ubfs_merkle_finish(&m);
	if (!err)
		err = ubfs_hash_descriptor(m.tfm, size, m.root, digest);
out:
	kvfree(m.blocks);
	kvfree(buf);
	crypto_free_shash(m.tfm);
	return err;
}

int ubfs_compute_verity_digest(struct file *file, u8 digest[UB_DIGEST_SIZE])
{
	struct file *twin;
	int err;

	if (!(file->f_flags & O_DIRECT))
		return ubfs_compute_buffered(file, digest);
	/* O_DIRECT wants aligned reads; hash through a buffered twin instead. */
	twin = dentry_open(&file->f_path, O_RDONLY | O_LARGEFILE, file->f_cred);
	if (IS_ERR(twin))
		return PTR_ERR(twin);
	err = ubfs_compute_buffered(twin, digest);
	fput(twin);
	return err;
}

/*
 * The fs-verity digest of @file: measured by fs-verity when available
 * (*measured = true), else computed by reading the file.
 */
int ubfs_file_verity_digest(struct file *file, u8 digest[UB_DIGEST_SIZE],
			    bool *measured)
{
#ifdef UBFS_HAVE_FSVERITY_GET_DIGEST
	struct inode *inode = file_inode(file);

	if (IS_VERITY(inode)) {
		u8 raw[FS_VERITY_MAX_DIGEST_SIZE];
		enum hash_algo halg;
		u8 alg;
		int n = fsverity_get_digest(inode, raw, &alg, &halg);

		/* Another hash algorithm: our SHA-256 digest must be computed. */
		if (n == UB_DIGEST_SIZE && alg == FS_VERITY_HASH_ALG_SHA256) {
			memcpy(digest, raw, UB_DIGEST_SIZE);
			*measured = true;
			return 0;
		}
	}
#endif
	*measured = false;
	return ubfs_compute_verity_digest(file, digest);
}

static bool ubfs_already_verified(struct ubfs_inode *ui, struct inode *real)
{
	return ui->verified_ino == real->i_ino &&
	       ui->verified_dev == real->i_sb->s_dev &&
	       ui->verified_gen == real->i_generation;
}

/*
 * verity=try|require: the object must carry the digest the blob names.
 * The object has fs-verity here, so it cannot change and every page read
 * from it is checked against its Merkle tree; a computed digest is kept
 * for the next open of the same object.
 */
static int ubfs_verify_verity_object(struct inode *inode, struct file *real,
				     const u8 want[UB_DIGEST_SIZE])
{
	struct ubfs_inode *ui = UBFS_I(inode);
	struct inode *rinode = file_inode(real);
	u8 got[UB_DIGEST_SIZE];
	bool measured;
	int err = 0;

	/*
	 * Killable: hashing a big object (6.1 has no fs-verity digest to
	 * ask for) may take long, and other openers of the file wait here.
	 */
	if (mutex_lock_killable(&ui->verify_lock))
		return -EINTR;
	if (ubfs_already_verified(ui, rinode))
		goto out;
	err = ubfs_file_verity_digest(real, got, &measured);
	if (err) {
		ubfs_err(inode->i_sb, "inode %lu: cannot get the object's digest: %d",
			 inode->i_ino, err);
		err = -EIO;
		goto out;
	}
	if (memcmp(got, want, UB_DIGEST_SIZE)) {
		ubfs_err(inode->i_sb, "inode %lu: object %*phN has fs-verity digest %*phN",
			 inode->i_ino, UB_DIGEST_SIZE, want, UB_DIGEST_SIZE, got);
		err = -EIO;
		goto out;
	}
	if (!measured) {
		ui->verified_dev = rinode->i_sb->s_dev;
		ui->verified_ino = rinode->i_ino;
		ui->verified_gen = rinode->i_generation;
	}
out:
	mutex_unlock(&ui->verify_lock);
	return err;
}

int ubfs_verify_object(struct inode *inode, struct file *real,
		       const u8 want[UB_DIGEST_SIZE])
{
	struct ubfs_sb_info *sbi = UBFS_SB(inode->i_sb);

	if (sbi->verity == UBFS_VERITY_OFF)
		return 0;
	if (!IS_VERITY(file_inode(real))) {
		if (sbi->verity == UBFS_VERITY_TRY)
			return 0;
		ubfs_err(inode->i_sb, "inode %lu: object %*phN has no fs-verity (verity=require)",
			 inode->i_ino, UB_DIGEST_SIZE, want);
		return -EIO;
	}
	return ubfs_verify_verity_object(inode, real, want);
}
