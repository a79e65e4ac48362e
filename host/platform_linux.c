/*
** platform_linux.c: Linux implementation of platform.h (the executable from /proc/self/exe).
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "platform.h"

int upk_exe_path(char *buf, size_t size) {
  ssize_t n = readlink("/proc/self/exe", buf, size - 1);
  if (n < 0 || (size_t)n >= size - 1) return -1;
  buf[n] = '\0';
  return 0;
}

int upk_share_dir(char *buf, size_t size) {
  int n = snprintf(buf, size, "%s", UPKIT_SHARE);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

int upk_isatty(int fd) {
  return isatty(fd);
}

int upk_hostname(char *buf, size_t size) {
  if (size == 0 || gethostname(buf, size) != 0) return -1;
  buf[size - 1] = '\0';
  return 0;
}

int upk_user_dir(char *buf, size_t size) {
  const char *xdg = getenv("XDG_DATA_HOME");
  const char *home = getenv("HOME");
  int n;
  if (xdg && *xdg) n = snprintf(buf, size, "%s/upkit", xdg);
  else if (home && *home) n = snprintf(buf, size, "%s/.local/share/upkit", home);
  else return -1;
  return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

int upk_isfile(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

void upk_on_sigint(void (*onint)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = onint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  /* no SA_RESTART: blocking waits see EINTR and poll the flag */
  sigaction(SIGINT, &sa, NULL);
}

void upk_sleep(double seconds) {
  if (seconds <= 0) return;
  struct timespec ts;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
}
