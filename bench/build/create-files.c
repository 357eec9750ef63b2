// create-files DIR N SIZE [MODE]: the kernel's cost of creating N object files of SIZE bytes in
// DIR/objects/XX/ on its own, in C. Prints wall, user and sys seconds as JSON. MODE:
//   rename   (default) the store writer's way: open O_CREAT|O_EXCL a temp name in DIR/objects,
//            write, close, rename into DIR/objects/XX/ (full paths, as from Node)
//   renameat the same with names relative to descriptors of objects/ and of each XX/ (openat,
//            renameat: no path walk from / per call)
//   tmpfile  O_TMPFILE in DIR/objects/XX/, write, linkat() to its name (AT_SYMLINK_FOLLOW of
//            /proc/self/fd/N, no privilege needed), close: no temp name to add, look up, remove
//   direct   open O_CREAT|O_EXCL the final name, write, close: the floor, NOT crash-safe (a
//            killed writer leaves a short file under an object's name)
//   cc -O2 -o /tmp/create-files bench/build/create-files.c && /tmp/create-files DIR 5117 40960
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int writeAll(int fd, const char *buf, long size) {
  for (long done = 0; done < size; ) { ssize_t w = write(fd, buf + done, size - done); if (w <= 0) { perror("write"); return -1; } done += w; }
  return 0;
}
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: create-files DIR N SIZE [rename|renameat|tmpfile|direct]\n"); return 2; }
  const char *dir = argv[1]; long n = atol(argv[2]); long size = atol(argv[3]);
  const char *mode = argc > 4 ? argv[4] : "rename";
  char *buf = malloc(size ? size : 1); memset(buf, 'x', size);
  char p[4096], q[4096];
  int fans[256];
  double t0 = now();
  snprintf(p, sizeof p, "%s/objects", dir); mkdir(dir, 0755); mkdir(p, 0755);
  int objfd = open(p, O_DIRECTORY | O_RDONLY);
  for (int i = 0; i < 256; i++) {
    snprintf(p, sizeof p, "%s/objects/%02x", dir, i); mkdir(p, 0755);
    fans[i] = open(p, O_DIRECTORY | O_RDONLY);
  }
  for (long i = 0; i < n; i++) {
    int fan = (i * 2654435761u) & 255;
    memcpy(buf, &i, sizeof i);
    if (!strcmp(mode, "rename") || !strcmp(mode, "renameat")) {
      int at = !strcmp(mode, "renameat");
      if (at) snprintf(p, sizeof p, ".tmp-%ld", i); else snprintf(p, sizeof p, "%s/objects/.tmp-%ld", dir, i);
      int fd = at ? openat(objfd, p, O_WRONLY | O_CREAT | O_EXCL, 0444) : open(p, O_WRONLY | O_CREAT | O_EXCL, 0444);
      if (fd < 0) { perror(p); return 1; }
      if (writeAll(fd, buf, size)) return 1;
      close(fd);
      if (at) snprintf(q, sizeof q, "%062lx", i); else snprintf(q, sizeof q, "%s/objects/%02x/%062lx", dir, fan, i);
      if (at ? renameat(objfd, p, fans[fan], q) : rename(p, q)) { perror(q); return 1; }
    } else if (!strcmp(mode, "tmpfile")) {
      int fd = openat(fans[fan], ".", O_WRONLY | O_TMPFILE, 0444);
      if (fd < 0) { perror("O_TMPFILE"); return 1; }
      if (writeAll(fd, buf, size)) return 1;
      snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
      snprintf(q, sizeof q, "%062lx", i);
      if (linkat(AT_FDCWD, p, fans[fan], q, AT_SYMLINK_FOLLOW)) { perror(q); return 1; }
      close(fd);
    } else if (!strcmp(mode, "direct")) {
      snprintf(q, sizeof q, "%s/objects/%02x/%062lx", dir, fan, i);
      int fd = open(q, O_WRONLY | O_CREAT | O_EXCL, 0444);
      if (fd < 0) { perror(q); return 1; }
      if (writeAll(fd, buf, size)) return 1;
      close(fd);
    } else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
  }
  double t1 = now();
  struct rusage ru; getrusage(RUSAGE_SELF, &ru);
  printf("{\"mode\":\"%s\",\"files\":%ld,\"size\":%ld,\"wall\":%.3f,\"user\":%.3f,\"sys\":%.3f,\"usPerFile\":%.1f}\n", mode, n, size, t1 - t0,
         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, (t1 - t0) / n * 1e6);
  return 0;
}
