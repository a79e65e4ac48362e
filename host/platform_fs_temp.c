/*
** platform_fs_temp.c: the names of upkit's temporary files (platform_fs.h),
** the same on every system; the Linux and Windows implementations use them.
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform_fs.h"

int upk_fs_temp_name(int dirfd, const char *name, char *tmpname, size_t size) {
  uint32_t r;
  int err = upk_fs_temp_dir(dirfd);
  if (!err) err = upk_fs_random(&r, sizeof r);
  if (err) return err;
  /* keep the name short enough for NAME_MAX whatever the final name */
  int n = snprintf(tmpname, size, "%s/%.*s.%ld-%08x", UPK_TMP_DIR, 180, name, (long)getpid(), r);
  return n < 0 || (size_t)n >= size ? ENAMETOOLONG : 0;
}

long upk_fs_temp_pid(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot || dot == name) return -1;
  char *end;
  long pid = strtol(dot + 1, &end, 10);
  if (end == dot + 1 || *end != '-' || strlen(end + 1) != 8) return -1;
  for (const char *h = end + 1; *h; h++)
    if (!((*h >= '0' && *h <= '9') || (*h >= 'a' && *h <= 'f'))) return -1;
  return pid;
}

int upk_fs_is_temp_name(const char *name) {
  return strcmp(name, UPK_TMP_DIR) == 0;
}

typedef struct Cleaning {
  int dirfd, removed, err;
} Cleaning;

static int clean_one(void *arg, const char *name) {
  Cleaning *c = arg;
  long pid = upk_fs_temp_pid(name);
  if (pid <= 0 || upk_fs_pid_alive(pid)) return 0;
  int err = upk_fs_unlinkat(c->dirfd, name);
  if (err == 0) c->removed++;
  else if (err != ENOENT) c->err = err;
  return 0;
}

int upk_fs_clean_listed(int fd, int *removed) {
  Cleaning c = {fd, 0, 0};
  int err = upk_fs_list_fd(fd, clean_one, &c);
  *removed = c.removed;
  return err ? err : c.err;
}
