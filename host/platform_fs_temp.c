/*
** platform_fs_temp.c: the names of upkit's temporary files (platform_fs.h),
** the same on every system; the Linux and Windows implementations use them.
*/
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

int upk_fs_drop_stale_temp(int dirfd, const char *name, int *removed) {
  *removed = 0;
  return upk_fs_is_temp_name(name) ? upk_fs_clean_temps(dirfd, removed) : 0;
}
