/*
** platform_fs_linux.c: Linux implementation of platform_fs.h (copy_file_range, sendfile,
** sync_file_range, syncfs, renameat2, getrandom, /proc for stale temporaries).
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "platform_fs.h"

_Static_assert(UPK_FS_CWD == AT_FDCWD, "UPK_FS_CWD is AT_FDCWD here");

#define CHUNK ((size_t)16 << 20)  /* bytes per kernel copy call */
#define RW_BUF ((size_t)1 << 20)  /* read/write fallback buffer */

static void fill(UpkStat *st, const struct stat *s) {
  st->type = S_ISREG(s->st_mode) ? UPK_FT_FILE : S_ISDIR(s->st_mode) ? UPK_FT_DIR
           : S_ISLNK(s->st_mode) ? UPK_FT_LINK : UPK_FT_OTHER;
  st->size = (uint64_t)s->st_size;
  st->mtime_ns = (int64_t)s->st_mtim.tv_sec * 1000000000 + s->st_mtim.tv_nsec;
  st->ctime_ns = (int64_t)s->st_ctim.tv_sec * 1000000000 + s->st_ctim.tv_nsec;
  st->mode = s->st_mode & 07777;
  st->attrs = 0;
  st->blocks512 = (uint64_t)s->st_blocks;
}

int upk_fs_lstat(const char *path, UpkStat *st) {
  struct stat s;
  if (lstat(path, &s) != 0) return errno;
  fill(st, &s);
  return 0;
}

int upk_fs_lstat_at(int dirfd, const char *name, UpkStat *st) {
  struct stat s;
  if (fstatat(dirfd, name, &s, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  fill(st, &s);
  return 0;
}

int upk_fs_stat(const char *path, UpkStat *st) {
  struct stat s;
  if (stat(path, &s) != 0) return errno;
  fill(st, &s);
  return 0;
}

int upk_fs_fstat(int fd, UpkStat *st) {
  struct stat s;
  if (fstat(fd, &s) != 0) return errno;
  fill(st, &s);
  return 0;
}

int upk_fs_open_read(const char *path, int *fd) {
  *fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  return *fd < 0 ? errno : 0;
}

int upk_fs_open_dir(const char *path, int *fd) {
  *fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  return *fd < 0 ? errno : 0;
}

int upk_fs_close(int fd) {
  return close(fd) != 0 && errno != EINTR ? errno : 0;
}

/*
** Repeat op (a read, write or getrandom of at most n bytes at buf, done bytes
** already moved) until n bytes have moved, retrying on EINTR; *got gets the
** bytes moved, fewer than n when op returned 0 (end of file).
*/
typedef ssize_t (*IoOp)(void *ctx, char *buf, size_t n, size_t done);

static int io_full(IoOp op, void *ctx, char *buf, size_t n, size_t *got) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = op(ctx, buf + done, n - done, done);
    if (r < 0) {
      if (errno == EINTR) continue;
      *got = done;
      return errno;
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  *got = done;
  return 0;
}

static ssize_t random_op(void *ctx, char *buf, size_t n, size_t done) {
  return getrandom(buf, n, 0);
}

int upk_fs_random(void *buf, size_t n) {
  size_t got = 0;
  int err = io_full(random_op, NULL, buf, n, &got);
  return err ? err : got < n ? EIO : 0;
}

/* Make sure dirfd holds the private folder of temporary files (never a link to elsewhere). */
int upk_fs_temp_dir(int dirfd) {
  if (mkdirat(dirfd, UPK_TMP_DIR, 0700) == 0) return 0;
  if (errno != EEXIST) return errno;
  struct stat s;
  if (fstatat(dirfd, UPK_TMP_DIR, &s, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  return S_ISDIR(s.st_mode) ? 0 : ENOTDIR;
}

int upk_fs_create_temp(int dirfd, const char *name, char *tmpname, size_t size, int *fd) {
  for (int tries = 0; tries < 16; tries++) {
    int err = upk_fs_temp_name(dirfd, name, tmpname, size);
    if (err) return err;
    *fd = openat(dirfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd >= 0) return 0;
    /* EEXIST: another name; ENOENT: another process removed the empty folder meanwhile */
    if (errno != EEXIST && errno != ENOENT) return errno;
  }
  return EEXIST;
}

void upk_fs_temp_release(int dirfd) {
  unlinkat(dirfd, UPK_TMP_DIR, AT_REMOVEDIR);  /* fails while it holds anything: fine */
}

int upk_fs_unlinkat(int dirfd, const char *name) {
  return unlinkat(dirfd, name, 0) != 0 ? errno : 0;
}

/* A zombie no longer writes anything. */
int upk_fs_pid_alive(long pid) {
  if (pid == (long)getpid()) return 1;
  if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *paren = strrchr(buf, ')');
  return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

int upk_fs_clean_temps(int dirfd, int *removed) {
  *removed = 0;
  int fd = openat(dirfd, UPK_TMP_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ENOTDIR || errno == ELOOP ? 0 : errno;
  int err = upk_fs_clean_listed(fd, removed);
  close(fd);
  upk_fs_temp_release(dirfd);
  return err;
}

typedef struct PreadAt {
  int fd;
  uint64_t off;
} PreadAt;

static ssize_t pread_op(void *ctx, char *buf, size_t n, size_t done) {
  PreadAt *at = ctx;
  return pread(at->fd, buf, n, (off_t)(at->off + done));
}

int upk_fs_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got) {
  PreadAt at = {fd, off};
  return io_full(pread_op, &at, buf, n, got);
}

static ssize_t write_op(void *ctx, char *buf, size_t n, size_t done) {
  return write(*(int *)ctx, buf, n);
}

int upk_fs_write_full(int fd, const void *buf, size_t n) {
  size_t got = 0;
  int err = io_full(write_op, &fd, (char *)buf, n, &got);  /* write_op only reads buf */
  return err ? err : got < n ? EIO : 0;
}

int upk_fs_pwrite_full(int fd, const void *buf, size_t n, uint64_t off) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, (off_t)off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

int upk_fs_fchmod(int fd, unsigned mode) {
  return fchmod(fd, (mode_t)mode) != 0 ? errno : 0;
}

int upk_fs_truncate(int fd, uint64_t size) {
  return ftruncate(fd, (off_t)size) != 0 ? errno : 0;
}

enum { M_CFR, M_SENDFILE, M_RW };

/*
** Copy [off, off + len) of in to the same offset of out, downgrading the
** method when the kernel refuses one.
*/
static int copy_range(int in, int out, uint64_t off, uint64_t len, int *method,
                      int (*tick)(void *, uint64_t), void *arg, uint64_t *done) {
  char *buf = NULL;
  uint64_t end = off + len;
  int err = 0;
  while (off < end) {
    size_t want = end - off > CHUNK ? CHUNK : (size_t)(end - off);
    ssize_t n = -1;
    if (*method == M_CFR) {
      loff_t oi = (loff_t)off, oo = (loff_t)off;
      n = copy_file_range(in, &oi, out, &oo, want, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
                    errno == EINVAL || errno == EBADF || errno == EPERM)) {
        *method = M_SENDFILE;
        continue;
      }
    } else if (*method == M_SENDFILE) {
      off_t oi = (off_t)off;
      if (lseek(out, (off_t)off, SEEK_SET) < 0) { err = errno; break; }
      n = sendfile(out, in, &oi, want);
      if (n < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        *method = M_RW;
        continue;
      }
    } else {
      if (!buf && !(buf = malloc(RW_BUF))) { err = ENOMEM; break; }
      size_t got;
      err = upk_fs_pread_full(in, buf, want > RW_BUF ? RW_BUF : want, off, &got);
      if (err) break;
      n = (ssize_t)got;
      if (got > 0) {
        if (lseek(out, (off_t)off, SEEK_SET) < 0) { err = errno; break; }
        if ((err = upk_fs_write_full(out, buf, got)) != 0) break;
      }
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) { err = EIO; break; }  /* the source shrank under us */
    off += (uint64_t)n;
    *done += (uint64_t)n;
    /* large files: start writing back what is copied, so a final fsync has less to wait for */
    if (end > CHUNK) sync_file_range(out, (off_t)(off - (uint64_t)n), (off_t)n, SYNC_FILE_RANGE_WRITE);
    if (tick && tick(arg, *done)) { err = EINTR; break; }
  }
  free(buf);
  return err;
}

int upk_fs_copy_data(int in, int out, uint64_t size, int sparse,
                     int (*tick)(void *arg, uint64_t done), void *arg) {
  int method = M_CFR;
  uint64_t done = 0;
  int err = 0;
  if (!sparse) {
    err = copy_range(in, out, 0, size, &method, tick, arg, &done);
  } else {
    uint64_t pos = 0;
    while (pos < size && !err) {
      off_t data = lseek(in, (off_t)pos, SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;            /* only a hole is left */
        if (errno != EINVAL) return errno;
        data = (off_t)pos;                    /* no SEEK_DATA: copy it all */
      }
      off_t hole = lseek(in, data, SEEK_HOLE);
      if (hole < 0 || (uint64_t)hole > size) hole = (off_t)size;
      err = copy_range(in, out, (uint64_t)data, (uint64_t)(hole - data), &method, tick, arg, &done);
      pos = (uint64_t)hole;
    }
  }
  if (!err && sparse) err = upk_fs_truncate(out, size);
  return err;
}

/* The times for futimens/utimensat: access time untouched, modification time mtime_ns. */
static void mtime_times(struct timespec ts[2], int64_t mtime_ns) {
  ts[0].tv_sec = 0;
  ts[0].tv_nsec = UTIME_OMIT;
  ts[1].tv_sec = (time_t)(mtime_ns / 1000000000);
  ts[1].tv_nsec = (long)(mtime_ns % 1000000000);
  if (ts[1].tv_nsec < 0) { ts[1].tv_nsec += 1000000000; ts[1].tv_sec--; }
}

int upk_fs_set_meta(int fd, const UpkStat *st) {
  if (fchmod(fd, (mode_t)st->mode) != 0) return errno;
  struct timespec ts[2];
  mtime_times(ts, st->mtime_ns);
  return futimens(fd, ts) != 0 ? errno : 0;
}

int upk_fs_set_times_at(int dirfd, const char *name, int64_t mtime_ns) {
  struct timespec ts[2];
  mtime_times(ts, mtime_ns);
  return utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) != 0 ? errno : 0;
}

int upk_fs_fsync(int fd) {
  return fsync(fd) != 0 ? errno : 0;
}

void upk_fs_advise_sequential(int fd) {
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
}

void upk_fs_start_writeback(int fd) {
  sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

int upk_fs_syncfs(int fd) {
  return syncfs(fd) != 0 ? errno : 0;
}

int upk_fs_rename(int olddir, const char *old, int newdir, const char *newname, int noreplace) {
  if (!noreplace) return renameat(olddir, old, newdir, newname) != 0 ? errno : 0;
  if (renameat2(olddir, old, newdir, newname, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  /* no RENAME_NOREPLACE here: link refuses an existing name atomically */
  if (linkat(olddir, old, newdir, newname, 0) != 0) return errno;
  unlinkat(olddir, old, 0);
  return 0;
}

int upk_fs_rename_path(const char *old, const char *newpath) {
  return rename(old, newpath) != 0 ? errno : 0;
}

int upk_fs_symlinkat(const char *target, int dirfd, const char *name) {
  return symlinkat(target, dirfd, name) != 0 ? errno : 0;
}

int upk_fs_readlink_at(int dirfd, const char *name, char *buf, size_t size) {
  ssize_t n = readlinkat(dirfd, name, buf, size - 1);
  if (n < 0) return errno;
  if ((size_t)n >= size - 1) return ENAMETOOLONG;
  buf[n] = '\0';
  return 0;
}

int upk_fs_mkdir(const char *path, unsigned mode) {
  return mkdir(path, (mode_t)mode) != 0 ? errno : 0;
}

int upk_fs_chmod(const char *path, unsigned mode) {
  return chmod(path, (mode_t)mode) != 0 ? errno : 0;
}

int upk_fs_set_times(const char *path, int64_t mtime_ns) {
  return upk_fs_set_times_at(AT_FDCWD, path, mtime_ns);
}

int upk_fs_rmdir(const char *path) {
  return rmdir(path) != 0 ? errno : 0;
}

int upk_fs_unlink(const char *path) {
  return unlink(path) != 0 ? errno : 0;
}

int upk_fs_free(const char *path, uint64_t *bytes) {
  struct statvfs v;
  if (statvfs(path, &v) != 0) return errno;
  *bytes = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
  return 0;
}

int upk_fs_list(const char *path, int (*each)(void *arg, const char *name), void *arg) {
  int fd, err = upk_fs_open_dir(path, &fd);
  if (err) return err;
  err = upk_fs_list_fd(fd, each, arg);
  close(fd);
  return err;
}

int upk_fs_list_fd(int dirfd, int (*each)(void *arg, const char *name), void *arg) {
  int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return errno;
  DIR *d = fdopendir(fd);
  if (!d) {
    int err = errno;
    close(fd);
    return err;
  }
  rewinddir(d);
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (each(arg, e->d_name)) break;
    errno = 0;
  }
  int err = errno;
  closedir(d);
  return err;
}

int upk_fs_getcwd(char *buf, size_t size) {
  return getcwd(buf, size) ? 0 : errno;
}

int upk_fs_realpath(const char *path, char *buf, size_t size) {
  char *r = realpath(path, NULL);
  if (!r) return errno;
  int err = 0;
  if (strlen(r) >= size) err = ENAMETOOLONG;
  else strcpy(buf, r);
  free(r);
  return err;
}

const char *upk_fs_tmproot(void) {
  const char *t = getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

int upk_fs_mkdtemp(char *tmpl) {
  return mkdtemp(tmpl) ? 0 : errno;
}
