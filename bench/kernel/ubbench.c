// SPDX-License-Identifier: Apache-2.0
/*
 * ubbench: the guest-side timer of bench/kernel (gcc -static; the initramfs has only
 * busybox).  Each command times only the work itself, in-process, with CLOCK_MONOTONIC,
 * and prints one line of KEY=VALUE pairs, "us=" being the elapsed microseconds.
 * --cold first syncs and drops the page, dentry and inode caches (drop_caches=3), then
 * starts the clock.
 *
 *   ubbench walk [--cold] DIR         stat of every entry: getdents64 + fstatat(AT_SYMLINK_
 *                                     NOFOLLOW) relative to the open directory, as find(1)
 *                                     does; "entries=N dirs=N us=T"
 *   ubbench readall [--cold] DIR      an untimed walk collects the regular files (walk
 *                                     order), then times open + read(64 KiB) to EOF + close
 *                                     of each, by path; "files=N bytes=N us=T"
 *   ubbench openall [--cold] DIR      the same list, timing open + close only (no read)
 *   ubbench seq [--cold] FILE         read(1 MiB) to EOF; "bytes=N us=T"
 *   ubbench rand [--cold] FILE N      N pread()s of 4 KiB at random 4 KiB-aligned offsets
 *                                     (fixed seed); "reads=N bytes=N us=T"
 *   ubbench par [--cold] DIR THREADS  readall split over THREADS pthreads (file i goes to
 *                                     thread i % THREADS); "threads=N files=N bytes=N us=T"
 *   ubbench mount [--cold] TYPE SRC DIR [DATA]
 *                                     mount(2) read-only; "us=T" (ERR on failure)
 *   ubbench spawn-mount [--cold] DIR CMD [ARG...]
 *                                     run CMD (a FUSE server that daemonizes, its stdout
 *                                     sent to stderr) and time from the fork until it has
 *                                     returned and DIR is a mount whose root answers
 *                                     stat(2); "us=T" (ERR if CMD fails or 30 s pass)
 *   ubbench umount DIR                umount(2)
 *   ubbench remount-cycle [--cold] DEV DIR TYPE
 *                                     umount DIR, then time mount(DEV, DIR, TYPE, ro)
 *   ubbench drop                      sync + drop_caches=3
 *   ubbench serial-dev SERIAL         /dev/nvmeXnY of the NVMe namespace whose controller
 *                                     has that serial number
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what, const char *arg)
{
	printf("ERR %s %s %s\n", what, arg, strerror(errno));
	exit(1);
}

static void drop_caches(void)
{
	int fd;

	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd < 0 || write(fd, "3", 1) != 1)
		die("drop_caches", "");
	close(fd);
}

struct linux_dirent64 {
	unsigned long long d_ino;
	long long d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static long long n_entries, n_dirs, n_errors;
static char **files;
static size_t n_files, cap_files;

static void add_file(const char *path, size_t plen, const char *name)
{
	size_t nlen = strlen(name);
	char *p = malloc(plen + nlen + 2);

	memcpy(p, path, plen);
	p[plen] = '/';
	memcpy(p + plen + 1, name, nlen + 1);
	if (n_files == cap_files) {
		cap_files = cap_files ? 2 * cap_files : 4096;
		files = realloc(files, cap_files * sizeof(*files));
	}
	files[n_files++] = p;
}

/* Walk the open directory DFD (closed here); PATH is only kept to collect file names. */
static void walk(int dfd, char *path, size_t plen, int collect, int depth)
{
	char *buf = malloc(32768);
	long n;

	n_dirs++;
	while ((n = syscall(SYS_getdents64, dfd, buf, 32768)) > 0) {
		for (long off = 0; off < n;) {
			struct linux_dirent64 *de = (void *)(buf + off);
			const char *name = de->d_name;
			struct stat st;

			off += de->d_reclen;
			if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
				continue;
			n_entries++;
			if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
				n_errors++;
				continue;
			}
			if (S_ISREG(st.st_mode) && collect)
				add_file(path, plen, name);
			if (S_ISDIR(st.st_mode) && depth < 256) {
				int cfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				size_t nlen = strlen(name);

				if (cfd < 0) {
					n_errors++;
					continue;
				}
				if (collect) {
					path[plen] = '/';
					memcpy(path + plen + 1, name, nlen + 1);
				}
				walk(cfd, path, collect ? plen + 1 + nlen : 0, collect, depth + 1);
				if (collect)
					path[plen] = 0;
			}
		}
	}
	if (n < 0)
		n_errors++;
	free(buf);
	close(dfd);
}

static int open_root(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		die("open", dir);
	return fd;
}

static int cmd_walk(const char *dir, int cold)
{
	long long t0;
	int fd;

	if (cold)
		drop_caches();
	t0 = now_us();
	fd = open_root(dir);
	walk(fd, NULL, 0, 0, 0);
	printf("entries=%lld dirs=%lld errors=%lld us=%lld\n", n_entries, n_dirs, n_errors,
	       now_us() - t0);
	return 0;
}

static int cmd_readall(const char *dir, int cold, int read_data)
{
	static char buf[1 << 16];
	static char path[1 << 16];
	long long t0, bytes = 0;
	size_t i;
	ssize_t n;

	snprintf(path, sizeof(path), "%s", dir);
	walk(open_root(dir), path, strlen(path), 1, 0);
	if (cold)
		drop_caches();
	t0 = now_us();
	for (i = 0; i < n_files; i++) {
		int fd = open(files[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0) {
			n_errors++;
			continue;
		}
		while (read_data && (n = read(fd, buf, sizeof(buf))) > 0)
			bytes += n;
		if (read_data && n < 0)
			n_errors++;
		close(fd);
	}
	printf("files=%zu bytes=%lld errors=%lld us=%lld\n", n_files, bytes, n_errors, now_us() - t0);
	return 0;
}

static int cmd_seq(const char *file, int cold)
{
	static char buf[1 << 20];
	long long t0, bytes = 0;
	ssize_t n;
	int fd;

	if (cold)
		drop_caches();
	t0 = now_us();
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open", file);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		bytes += n;
	if (n < 0)
		die("read", file);
	close(fd);
	printf("bytes=%lld us=%lld\n", bytes, now_us() - t0);
	return 0;
}

static int cmd_rand(const char *file, long count, int cold)
{
	static char buf[4096];
	unsigned long long x = 0x9e3779b97f4a7c15ULL;
	long long t0, bytes = 0, blocks;
	struct stat st;
	int fd;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st))
		die("open", file);
	blocks = st.st_size / 4096;
	if (blocks < 1)
		die("rand: file smaller than 4 KiB", file);
	if (cold)
		drop_caches();
	t0 = now_us();
	for (long i = 0; i < count; i++) {
		/* xorshift64: the same offsets in every config */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ssize_t n = pread(fd, buf, sizeof(buf), (off_t)(x % blocks) * 4096);
		if (n < 0)
			die("pread", file);
		bytes += n;
	}
	printf("reads=%ld bytes=%lld us=%lld\n", count, bytes, now_us() - t0);
	close(fd);
	return 0;
}

struct reader {
	pthread_t tid;
	size_t first, step;
	long long bytes, errors;
};

static void *read_share(void *arg)
{
	struct reader *r = arg;
	char *buf = malloc(1 << 16);
	ssize_t n = 0;

	for (size_t i = r->first; i < n_files; i += r->step) {
		int fd = open(files[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0) {
			r->errors++;
			continue;
		}
		while ((n = read(fd, buf, 1 << 16)) > 0)
			r->bytes += n;
		if (n < 0)
			r->errors++;
		close(fd);
	}
	free(buf);
	return NULL;
}

static int cmd_par(const char *dir, int threads, int cold)
{
	static char path[1 << 16];
	struct reader r[64];
	long long t0, bytes = 0, errors = 0;

	if (threads < 1 || threads > 64)
		die("par: threads must be 1..64", dir);
	snprintf(path, sizeof(path), "%s", dir);
	walk(open_root(dir), path, strlen(path), 1, 0);
	if (cold)
		drop_caches();
	t0 = now_us();
	for (int t = 0; t < threads; t++) {
		r[t] = (struct reader){ .first = (size_t)t, .step = (size_t)threads };
		if (pthread_create(&r[t].tid, NULL, read_share, &r[t]))
			die("pthread_create", dir);
	}
	for (int t = 0; t < threads; t++) {
		pthread_join(r[t].tid, NULL);
		bytes += r[t].bytes;
		errors += r[t].errors;
	}
	printf("threads=%d files=%zu bytes=%lld errors=%lld us=%lld\n", threads, n_files, bytes,
	       errors + n_errors, now_us() - t0);
	return 0;
}

static int cmd_mount(const char *type, const char *src, const char *dir, const char *data, int cold)
{
	long long t0, t1;

	if (cold)
		drop_caches();
	t0 = now_us();
	if (mount(src, dir, type, MS_RDONLY, data))
		die("mount", type);
	t1 = now_us();
	printf("us=%lld\n", t1 - t0);
	return 0;
}

/*
 * A FUSE server's mount time, measured alike for every server: from the fork until the
 * server's start-up process has returned (daemonized or failed) and a stat of DIR reaches
 * the new mount (another st_dev than DIR's parent: the FUSE root answered GETATTR).
 */
static int cmd_spawn_mount(const char *dir, char **cmd, int cold)
{
	char up[4096];
	struct stat parent, st;
	long long t0, deadline;
	int status;
	pid_t pid;

	snprintf(up, sizeof(up), "%s/..", dir);
	if (stat(up, &parent))
		die("stat", up);
	if (cold)
		drop_caches();
	t0 = now_us();
	pid = fork();
	if (pid < 0)
		die("fork", cmd[0]);
	if (pid == 0) {
		/* the caller reads our stdout, and its shell's other fds may be pipes or locks: a
		 * daemon must hold none of them open */
		dup2(2, 1);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execvp(cmd[0], cmd);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid", cmd[0]);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		printf("ERR spawn-mount %s exit status %d\n", cmd[0], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return 1;
	}
	deadline = t0 + 30 * 1000000LL;
	while (stat(dir, &st) || st.st_dev == parent.st_dev) {
		if (now_us() > deadline) {
			errno = ETIMEDOUT;
			die("spawn-mount: no mount on", dir);
		}
		usleep(200);
	}
	printf("us=%lld\n", now_us() - t0);
	return 0;
}

static int cmd_serial_dev(const char *serial)
{
	char p[512], s[256];
	struct dirent *de;
	DIR *d = opendir("/sys/block");

	if (!d)
		die("opendir", "/sys/block");
	while ((de = readdir(d)) != NULL) {
		FILE *f;

		if (strncmp(de->d_name, "nvme", 4))
			continue;
		/* device/ is the controller, or the subsystem with native multipath */
		snprintf(p, sizeof(p), "/sys/block/%s/device/serial", de->d_name);
		f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(s, sizeof(s), f)) {
			s[strcspn(s, " \n")] = 0;
			if (!strcmp(s, serial)) {
				printf("/dev/%s\n", de->d_name);
				return 0;
			}
		}
		fclose(f);
	}
	errno = ENOENT;
	die("serial-dev", serial);
	return 1;
}

int main(int argc, char **argv)
{
	int cold = 0;
	const char *cmd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		goto usage;
	cmd = argv[1];
	argv += 2;
	argc -= 2;
	if (argc > 0 && !strcmp(argv[0], "--cold")) {
		cold = 1;
		argv++;
		argc--;
	}
	if (!strcmp(cmd, "walk") && argc == 1)
		return cmd_walk(argv[0], cold);
	if (!strcmp(cmd, "readall") && argc == 1)
		return cmd_readall(argv[0], cold, 1);
	if (!strcmp(cmd, "openall") && argc == 1)
		return cmd_readall(argv[0], cold, 0);
	if (!strcmp(cmd, "seq") && argc == 1)
		return cmd_seq(argv[0], cold);
	if (!strcmp(cmd, "rand") && argc == 2)
		return cmd_rand(argv[0], atol(argv[1]), cold);
	if (!strcmp(cmd, "par") && argc == 2)
		return cmd_par(argv[0], atoi(argv[1]), cold);
	if (!strcmp(cmd, "mount") && (argc == 3 || argc == 4))
		return cmd_mount(argv[0], argv[1], argv[2], argc == 4 ? argv[3] : "", cold);
	if (!strcmp(cmd, "spawn-mount") && argc >= 2)
		return cmd_spawn_mount(argv[0], argv + 1, cold);
	if (!strcmp(cmd, "umount") && argc == 1) {
		if (umount(argv[0]))
			die("umount", argv[0]);
		return 0;
	}
	if (!strcmp(cmd, "remount-cycle") && argc == 3) {
		if (umount(argv[1]))
			die("umount", argv[1]);
		return cmd_mount(argv[2], argv[0], argv[1], "", cold);
	}
	if (!strcmp(cmd, "drop") && argc == 0) {
		drop_caches();
		return 0;
	}
	if (!strcmp(cmd, "serial-dev") && argc == 1)
		return cmd_serial_dev(argv[0]);
usage:
	fprintf(stderr, "usage: see the comment at the top of ubbench.c\n");
	return 2;
}
