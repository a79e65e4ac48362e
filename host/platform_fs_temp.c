/*
** platform_fs_temp.c: the names of upkit's temporary files (platform_fs.h),
** the same on every system; the Linux and Windows implementations use them.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "platform_fs.h"

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
