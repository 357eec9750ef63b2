// SPDX-License-Identifier: GPL-2.0-only
/*
 * Mount options, the superblock and module setup.
 *
 *   mount -t unionblob -o basedir=STORE[:STORE2...][,digest=HEX][,verity=off|try|require] BLOB DIR
 *
 * BLOB may also be given as descriptor=BLOB (fsconfig users).  The
 * filesystem is always read-only: asking for rw is refused with a message.
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/fs_parser.h>
#include <linux/namei.h>
#include <linux/seq_file.h>
#include <linux/statfs.h>
#include <linux/slab.h>
#include "internal.h"

static struct kmem_cache *ubfs_inode_cachep;

/* ---- inodes ------------------------------------------------------------ */

static void ubfs_inode_init_once(void *ptr)
{
	struct ubfs_inode *ui = ptr;

	mutex_init(&ui->verify_lock);
	inode_init_once(&ui->vfs_inode);
}

static struct inode *ubfs_alloc_inode(struct super_block *sb)
{
	struct ubfs_inode *ui = alloc_inode_sb(sb, ubfs_inode_cachep, GFP_KERNEL);

	if (!ui)
		return NULL;
	memset(&ui->info, 0, sizeof(ui->info));
	ui->verified_dev = 0;
	ui->verified_ino = 0;
	ui->verified_gen = 0;
	ui->object = (struct path){};
	return &ui->vfs_inode;
}

static void ubfs_evict_inode(struct inode *inode)
{
	struct ubfs_inode *ui = UBFS_I(inode);

	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	/* the object an open remembered (data.c) */
	path_put(&ui->object);
	ui->object = (struct path){};
}

static void ubfs_free_inode(struct inode *inode)
{
	kmem_cache_free(ubfs_inode_cachep, UBFS_I(inode));
}

/* ---- superblock -------------------------------------------------------- */

static int ubfs_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	struct super_block *sb = dentry->d_sb;
	const struct ub_blob *b = &UBFS_SB(sb)->blob;
	u64 id = huge_encode_dev(sb->s_dev);

	buf->f_type = UNIONBLOB_SUPER_MAGIC;
	buf->f_bsize = UB_BLOCK_SIZE;
	buf->f_frsize = UB_BLOCK_SIZE;
	/*
	 * What the image holds: file data plus the blob itself.  data_bytes is
	 * the header's word (not checked against anything): rounded up without
	 * DIV_ROUND_UP, whose addition wraps for a value near 2^64.
	 */
	buf->f_blocks = (b->data_bytes >> UB_BLOCK_SIZE_LOG2) +
			!!(b->data_bytes & (UB_BLOCK_SIZE - 1)) +
			(b->size >> UB_BLOCK_SIZE_LOG2);
	buf->f_bfree = 0;
	buf->f_bavail = 0;
	buf->f_files = b->inode_count;
	buf->f_ffree = 0;
	buf->f_namelen = UB_NAME_MAX;
	buf->f_fsid = u64_to_fsid(id);
	return 0;
}

static const char *const ubfs_verity_names[] = {
	[UBFS_VERITY_OFF] = "off",
	[UBFS_VERITY_TRY] = "try",
	[UBFS_VERITY_REQUIRE] = "require",
};

static int ubfs_show_options(struct seq_file *m, struct dentry *root)
{
	struct ubfs_sb_info *sbi = UBFS_SB(root->d_sb);

	if (sbi->basedir)
		seq_show_option(m, "basedir", sbi->basedir);
	if (sbi->has_digest)
		seq_printf(m, ",digest=%*phN", UB_DIGEST_SIZE, sbi->digest);
	seq_printf(m, ",verity=%s", ubfs_verity_names[sbi->verity]);
	return 0;
}

static const struct super_operations ubfs_sops = {
	.alloc_inode	= ubfs_alloc_inode,
	.free_inode	= ubfs_free_inode,
	.evict_inode	= ubfs_evict_inode,
	.statfs		= ubfs_statfs,
	.show_options	= ubfs_show_options,
};

/* Resolve basedir=A:B:C; each must be a directory. */
static int ubfs_get_stores(struct fs_context *fc, struct super_block *sb,
			   struct ubfs_sb_info *sbi)
{
	char *list, *cur, *name;
	int depth = 0, err = 0;

	if (!sbi->basedir)
		return 0;
	list = kstrdup(sbi->basedir, GFP_KERNEL);
	if (!list)
		return -ENOMEM;
	cur = list;
	while ((name = strsep(&cur, ":")) != NULL) {
		struct path *p;

		if (!*name)
			continue;
		if (sbi->nr_stores == UBFS_MAX_STORES) {
			err = invalfc(fc, "at most %d stores in basedir=", UBFS_MAX_STORES);
			break;
		}
		p = &sbi->stores[sbi->nr_stores];
		err = kern_path(name, LOOKUP_FOLLOW | LOOKUP_DIRECTORY, p);
		if (err) {
			errorfc(fc, "basedir %s: %d", name, err);
			break;
		}
		sbi->nr_stores++;
		depth = max(depth, p->mnt->mnt_sb->s_stack_depth);
	}
	kfree(list);
	if (err)
		return err;
	if (!sbi->nr_stores)
		return invalfc(fc, "basedir= names no directory");
	sb->s_stack_depth = max(sb->s_stack_depth, depth + 1);
	return 0;
}

static int ubfs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct ubfs_fs_context *ctx = fc->fs_private;
	struct ubfs_sb_info *sbi;
	struct inode *root;
	int err;

	sbi = kzalloc(sizeof(*sbi), GFP_KERNEL);
	if (!sbi)
		return -ENOMEM;
	sb->s_fs_info = sbi;
	/* The context's strings move to the superblock. */
	sbi->blob_name = ctx->blob_name;
	ctx->blob_name = NULL;
	sbi->basedir = ctx->basedir;
	ctx->basedir = NULL;
	sbi->verity = ctx->verity;
	sbi->has_digest = ctx->has_digest;
	memcpy(sbi->digest, ctx->digest, UB_DIGEST_SIZE);
	sbi->creds = prepare_creds();
	if (!sbi->creds)
		return -ENOMEM;

	sb->s_flags |= SB_RDONLY | SB_NOATIME | SB_NODIRATIME;
#ifdef CONFIG_FS_POSIX_ACL
	sb->s_flags |= SB_POSIXACL;
#endif
	sb->s_magic = UNIONBLOB_SUPER_MAGIC;
	sb->s_op = &ubfs_sops;
	sb->s_xattr = ubfs_xattr_handlers;
	sb->s_maxbytes = MAX_LFS_FILESIZE;
	sb->s_blocksize = UB_BLOCK_SIZE;
	sb->s_blocksize_bits = UB_BLOCK_SIZE_LOG2;
	sb->s_time_gran = 1;

	err = ubfs_blob_open(sb, sbi, fc);
	if (err)
		return err;
	sbi->handle_gen = ub_handle_generation(&sbi->blob);
	sb->s_export_op = &ubfs_export_ops;
	/* Reading the blob goes through its filesystem: count it as stacking. */
	sb->s_stack_depth = file_inode(sbi->blob_file)->i_sb->s_stack_depth + 1;

	err = ubfs_get_stores(fc, sb, sbi);
	if (err)
		return err;
	if (!sbi->nr_stores && sbi->blob.sect[UB_SECT_DIGESTS].count)
		return invalfc(fc, "the blob names objects: basedir= is required");
	if (sb->s_stack_depth > FILESYSTEM_MAX_STACK_DEPTH)
		return invalfc(fc, "maximum fs stacking depth exceeded");

	root = ubfs_iget(sb, sbi->blob.root_ino);
	if (IS_ERR(root))
		return PTR_ERR(root);
	if (!S_ISDIR(root->i_mode)) {
		iput(root);
		ubfs_err(sb, "root inode is not a directory");
		return -EUCLEAN;
	}
	sb->s_root = d_make_root(root);
	if (!sb->s_root)
		return -ENOMEM;
	return 0;
}

/* ---- fs_context -------------------------------------------------------- */

enum { Opt_descriptor, Opt_basedir, Opt_digest, Opt_verity };

static const struct constant_table ubfs_param_verity[] = {
	{ "off",	UBFS_VERITY_OFF },
	{ "try",	UBFS_VERITY_TRY },
	{ "require",	UBFS_VERITY_REQUIRE },
	{}
};

/* "source" is left to the VFS, which stores it in fc->source. */
static const struct fs_parameter_spec ubfs_fs_parameters[] = {
	fsparam_string("descriptor",	Opt_descriptor),
	fsparam_string("basedir",	Opt_basedir),
	fsparam_string("digest",	Opt_digest),
	fsparam_enum("verity",		Opt_verity, ubfs_param_verity),
	{}
};

static int ubfs_parse_digest(struct fs_context *fc, const char *hex,
			     struct ubfs_fs_context *ctx)
{
	if (strlen(hex) != 2 * UB_DIGEST_SIZE ||
	    hex2bin(ctx->digest, hex, UB_DIGEST_SIZE))
		return invalfc(fc, "digest= wants %d hex digits", 2 * UB_DIGEST_SIZE);
	ctx->has_digest = true;
	return 0;
}

static int ubfs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct ubfs_fs_context *ctx = fc->fs_private;
	struct fs_parse_result result;
	int opt;

	opt = fs_parse(fc, ubfs_fs_parameters, param, &result);
	if (opt < 0)
		return opt;

	switch (opt) {
	case Opt_descriptor:
		kfree(ctx->blob_name);
		ctx->blob_name = param->string;
		param->string = NULL;
		break;
	case Opt_basedir:
		kfree(ctx->basedir);
		ctx->basedir = param->string;
		param->string = NULL;
		break;
	case Opt_digest:
		return ubfs_parse_digest(fc, param->string, ctx);
	case Opt_verity:
		ctx->verity = result.uint_32;
		break;
	}
	return 0;
}

/* Only an explicit "rw" (fsconfig, or remount without ro) sets the mask. */
static bool ubfs_rw_requested(const struct fs_context *fc)
{
	return (fc->sb_flags_mask & SB_RDONLY) && !(fc->sb_flags & SB_RDONLY);
}

static int ubfs_get_tree(struct fs_context *fc)
{
	struct ubfs_fs_context *ctx = fc->fs_private;

	if (ubfs_rw_requested(fc)) {
		errorfc(fc, "unionblob is read-only: mount it ro");
		return -EROFS;
	}
	fc->sb_flags |= SB_RDONLY;

	/*
	 * descriptor= wins over the source, which is then just the name shown
	 * in /proc/mounts: tools like busybox mount turn a regular-file source
	 * into a loop device, so they must pass the blob as an option.
	 */
	if (!ctx->blob_name && fc->source) {
		ctx->blob_name = kstrdup(fc->source, GFP_KERNEL);
		if (!ctx->blob_name)
			return -ENOMEM;
	}
	if (!ctx->blob_name)
		return invalfc(fc, "no blob: give it as the source or descriptor=");
	return get_tree_nodev(fc, ubfs_fill_super);
}

/*
 * Options cannot change on remount (mount(8) passes the current ones back,
 * so they are accepted and ignored); rw is refused.
 */
static int ubfs_reconfigure(struct fs_context *fc)
{
	if (ubfs_rw_requested(fc)) {
		errorfc(fc, "unionblob is read-only: cannot remount rw");
		return -EROFS;
	}
	fc->sb_flags |= SB_RDONLY;
	return 0;
}

static void ubfs_free_fc(struct fs_context *fc)
{
	struct ubfs_fs_context *ctx = fc->fs_private;

	if (!ctx)
		return;
	kfree(ctx->blob_name);
	kfree(ctx->basedir);
	kfree(ctx);
}

static const struct fs_context_operations ubfs_context_ops = {
	.parse_param	= ubfs_parse_param,
	.get_tree	= ubfs_get_tree,
	.reconfigure	= ubfs_reconfigure,
	.free		= ubfs_free_fc,
};

static int ubfs_init_fs_context(struct fs_context *fc)
{
	struct ubfs_fs_context *ctx;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	ctx->verity = UBFS_VERITY_OFF;
	fc->fs_private = ctx;
	fc->ops = &ubfs_context_ops;
	return 0;
}

static void ubfs_kill_sb(struct super_block *sb)
{
	struct ubfs_sb_info *sbi = UBFS_SB(sb);
	unsigned int i;

	kill_anon_super(sb);
	if (!sbi)
		return;
	ubfs_blob_close(sbi);
	for (i = 0; i < sbi->nr_stores; i++)
		path_put(&sbi->stores[i]);
	if (sbi->creds)
		put_cred(sbi->creds);
	kfree(sbi->blob_name);
	kfree(sbi->basedir);
	kfree(sbi);
	sb->s_fs_info = NULL;
}

struct file_system_type ubfs_fs_type = {
	.owner		= THIS_MODULE,
	.name		= "unionblob",
	.init_fs_context = ubfs_init_fs_context,
	.parameters	= ubfs_fs_parameters,
	.kill_sb	= ubfs_kill_sb,
	/*
	 * Idmapped mounts (a container's user namespace over a shared image): ownership is only
	 * read, and the VFS maps it through the mount in getattr, permission and ACL checks.
	 */
	.fs_flags	= FS_ALLOW_IDMAP,
};
MODULE_ALIAS_FS("unionblob");

static int __init ubfs_init(void)
{
	int err;

	ubfs_inode_cachep = kmem_cache_create("unionblob_inode",
					      sizeof(struct ubfs_inode), 0,
					      SLAB_RECLAIM_ACCOUNT | SLAB_ACCOUNT,
					      ubfs_inode_init_once);
	if (!ubfs_inode_cachep)
		return -ENOMEM;
	err = register_filesystem(&ubfs_fs_type);
	if (err)
		kmem_cache_destroy(ubfs_inode_cachep);
	return err;
}

static void __exit ubfs_exit(void)
{
	unregister_filesystem(&ubfs_fs_type);
	/* Inodes are freed after an RCU grace period. */
	rcu_barrier();
	kmem_cache_destroy(ubfs_inode_cachep);
}

module_init(ubfs_init);
module_exit(ubfs_exit);
MODULE_DESCRIPTION("unionblob: read-only container image filesystem (metadata blob + object store)");
MODULE_LICENSE("GPL");
