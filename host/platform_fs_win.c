/*
** platform_fs_win.c: Windows implementation of platform_fs.h.
**
** Descriptors are C runtime descriptors wrapping Windows handles
** (_open_osfhandle), so the seam keeps its int fds; every call works on the
** handle. A directory descriptor is a directory handle (backup semantics);
** the *at functions join the path it was opened with and the name. Paths are UTF-8 with '/' at the seam, UTF-16 "\\?\" paths at every
** Windows call. Modes: Windows has none; a file is 0644, or 0444 when
** read-only, a folder 0755; chmod sets or clears the read-only attribute.
** Folders need no fsync on Windows (NTFS journals its metadata, and renames
** use MOVEFILE_WRITE_THROUGH), so syncing a folder descriptor succeeds.
*/
#include <errno.h>
#include <io.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>
#include <bcrypt.h>
#include <winioctl.h>

#include "platform_fs.h"
#include "win.h"

#define RW_BUF ((size_t)1 << 20)            /* bytes per read/write of a copy */
#define EPOCH_DIFF 116444736000000000LL     /* 1601-01-01 to 1970-01-01 in 100 ns */

static HANDLE fd_handle(int fd) {
  return (HANDLE)_get_osfhandle(fd);
}

static int last_errno(void) {
  return upk_win_errno(GetLastError());
}

/* A handle as a descriptor; closes it when that fails. */
static int wrap(HANDLE h, int flags, int *fd) {
  *fd = _open_osfhandle((intptr_t)h, flags);
  if (*fd < 0) {
    CloseHandle(h);
    return EMFILE;
  }
  return 0;
}

/*
** The path each directory descriptor was opened with (fs.c's workers use
** them from several threads). Asking the handle for its path
** (GetFinalPathNameByHandleW) is the fallback; Wine fails it beyond MAX_PATH.
*/
typedef struct DirPath { int fd; wchar_t *path; } DirPath;
static DirPath *dirs;
static size_t ndirs, capdirs;
static SRWLOCK dirs_lock = SRWLOCK_INIT;

static void dir_remember(int fd, const wchar_t *path) {
  wchar_t *copy = _wcsdup(path);
  if (copy == NULL) return;  /* the fallback still works */
  AcquireSRWLockExclusive(&dirs_lock);
  if (ndirs == capdirs) {
    size_t cap = capdirs ? capdirs * 2 : 16;
    DirPath *d = realloc(dirs, cap * sizeof *d);
    if (d) { dirs = d; capdirs = cap; }
  }
  if (ndirs < capdirs) dirs[ndirs++] = (DirPath){ fd, copy };
  else free(copy);
  ReleaseSRWLockExclusive(&dirs_lock);
}

static void dir_forget(int fd) {
  AcquireSRWLockExclusive(&dirs_lock);
  for (size_t i = 0; i < ndirs; i++)
    if (dirs[i].fd == fd) { free(dirs[i].path); dirs[i] = dirs[--ndirs]; break; }
  ReleaseSRWLockExclusive(&dirs_lock);
}

/* A malloc'd copy of dirfd's path with room for extra more characters, or NULL. */
static wchar_t *dir_path(int dirfd, size_t extra, int *err) {
  wchar_t *w = NULL;
  AcquireSRWLockShared(&dirs_lock);
  for (size_t i = 0; i < ndirs; i++) {
    if (dirs[i].fd != dirfd) continue;
    size_t n = wcslen(dirs[i].path);
    if ((w = malloc((n + extra + 1) * sizeof *w)) != NULL) wcscpy(w, dirs[i].path);
    else *err = ENOMEM;
    ReleaseSRWLockShared(&dirs_lock);
    return w;
  }
  ReleaseSRWLockShared(&dirs_lock);
  HANDLE h = fd_handle(dirfd);
  if (h == INVALID_HANDLE_VALUE) { *err = EBADF; return NULL; }
  if ((w = malloc((32768 + extra) * sizeof *w)) == NULL) { *err = ENOMEM; return NULL; }
  DWORD n = GetFinalPathNameByHandleW(h, w, 32768, FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
  if (n == 0 || n >= 32768) {
    *err = n == 0 ? last_errno() : ENAMETOOLONG;
    free(w);
    return NULL;
  }
  return w;
}

/* The UTF-16 path of name in dirfd (UPK_FS_CWD: relative to the current folder); malloc'd. */
static wchar_t *at_path(int dirfd, const char *name, int *err) {
  if (dirfd == UPK_FS_CWD || (name[0] == '/' || (name[0] && name[1] == ':'))) {
    wchar_t *w = upk_wpath(name);
    if (w == NULL) *err = errno;
    return w;
  }
  wchar_t *wname = upk_w(name);
  if (wname == NULL) { *err = errno; return NULL; }
  wchar_t *w = dir_path(dirfd, wcslen(wname) + 2, err);
  if (w) {
    wcscat(w, L"\\");
    wcscat(w, wname);
    for (wchar_t *p = w; *p; p++) if (*p == L'/') *p = L'\\';
  }
  free(wname);
  return w;
}

static wchar_t *wpath(const char *path, int *err) {
  return at_path(UPK_FS_CWD, path, err);
}

static int64_t ft_ns(LARGE_INTEGER t) {
  return (t.QuadPart - EPOCH_DIFF) * 100;
}

static LARGE_INTEGER ns_ft(int64_t ns) {
  LARGE_INTEGER t;
  t.QuadPart = ns / 100 + EPOCH_DIFF;
  return t;
}

/* Fill st from an open handle (the handle of a link describes the link). */
static int fill(HANDLE h, UpkStat *st) {
  FILE_BASIC_INFO b;
  FILE_STANDARD_INFO s;
  FILE_ATTRIBUTE_TAG_INFO tag;
  if (!GetFileInformationByHandleEx(h, FileBasicInfo, &b, sizeof b) ||
      !GetFileInformationByHandleEx(h, FileStandardInfo, &s, sizeof s))
    return last_errno();
  if (!GetFileInformationByHandleEx(h, FileAttributeTagInfo, &tag, sizeof tag)) tag.ReparseTag = 0;
  int link = (b.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) &&
             (tag.ReparseTag == IO_REPARSE_TAG_SYMLINK || tag.ReparseTag == IO_REPARSE_TAG_MOUNT_POINT);
  DWORD type = GetFileType(h);
  st->type = link ? UPK_FT_LINK : s.Directory ? UPK_FT_DIR
           : type == FILE_TYPE_DISK ? UPK_FT_FILE : UPK_FT_OTHER;
  st->size = s.Directory ? 0 : (uint64_t)s.EndOfFile.QuadPart;
  st->mtime_ns = ft_ns(b.LastWriteTime);
  st->ctime_ns = ft_ns(b.ChangeTime);
  st->mode = s.Directory ? 0755 : (b.FileAttributes & FILE_ATTRIBUTE_READONLY) ? 0444 : 0644;
  st->attrs = ((b.FileAttributes & FILE_ATTRIBUTE_HIDDEN) ? UPK_ATTR_HIDDEN : 0) |
              ((b.FileAttributes & FILE_ATTRIBUTE_SYSTEM) ? UPK_ATTR_SYSTEM : 0);
  st->blocks512 = (uint64_t)s.AllocationSize.QuadPart / 512;
  return 0;
}

/* Open a path for its metadata; nofollow opens a link itself. */
static HANDLE open_meta(const wchar_t *w, DWORD access, int nofollow) {
  return CreateFileW(w, access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                     OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | (nofollow ? FILE_FLAG_OPEN_REPARSE_POINT : 0),
                     NULL);
}

static int stat_w(const wchar_t *w, UpkStat *st, int nofollow) {
  HANDLE h = open_meta(w, FILE_READ_ATTRIBUTES, nofollow);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  int err = fill(h, st);
  CloseHandle(h);
  return err;
}

static int stat_at(int dirfd, const char *name, UpkStat *st, int nofollow) {
  int err = 0;
  wchar_t *w = at_path(dirfd, name, &err);
  if (w == NULL) return err;
  err = stat_w(w, st, nofollow);
  free(w);
  return err;
}

int upk_fs_lstat(const char *path, UpkStat *st) { return stat_at(UPK_FS_CWD, path, st, 1); }
int upk_fs_lstat_at(int dirfd, const char *name, UpkStat *st) { return stat_at(dirfd, name, st, 1); }
int upk_fs_stat(const char *path, UpkStat *st) { return stat_at(UPK_FS_CWD, path, st, 0); }

int upk_fs_fstat(int fd, UpkStat *st) {
  HANDLE h = fd_handle(fd);
  return h == INVALID_HANDLE_VALUE ? EBADF : fill(h, st);
}

int upk_fs_open_read(const char *path, int *fd) {
  int err = 0;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  HANDLE h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                         OPEN_EXISTING, FILE_FLAG_SEQUENTIAL_SCAN | FILE_FLAG_BACKUP_SEMANTICS, NULL);
  err = h == INVALID_HANDLE_VALUE ? last_errno() : 0;
  free(w);
  if (err) return err;
  BY_HANDLE_FILE_INFORMATION i;
  if (GetFileInformationByHandle(h, &i) && (i.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    CloseHandle(h);
    return EISDIR;
  }
  return wrap(h, _O_RDONLY, fd);
}

/* Open the folder w as a descriptor (nofollow: a link is not followed) and remember its path. */
static int open_dir_w(const wchar_t *w, int nofollow, int *fd) {
  HANDLE h = open_meta(w, FILE_LIST_DIRECTORY | FILE_READ_ATTRIBUTES | SYNCHRONIZE, nofollow);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  BY_HANDLE_FILE_INFORMATION i;
  if (!GetFileInformationByHandle(h, &i) || !(i.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    CloseHandle(h);
    return ENOTDIR;
  }
  int err = wrap(h, _O_RDONLY, fd);
  if (!err) dir_remember(*fd, w);
  return err;
}

int upk_fs_open_dir(const char *path, int *fd) {
  int err = 0;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  err = open_dir_w(w, 0, fd);
  free(w);
  return err;
}

int upk_fs_close(int fd) {
  dir_forget(fd);
  return _close(fd) != 0 ? errno : 0;
}

int upk_fs_random(void *buf, size_t n) {
  return BCRYPT_SUCCESS(BCryptGenRandom(NULL, buf, (ULONG)n, BCRYPT_USE_SYSTEM_PREFERRED_RNG)) ? 0 : EIO;
}

static int mkdir_w(const wchar_t *w) {
  return CreateDirectoryW(w, NULL) ? 0 : last_errno();
}

int upk_fs_temp_dir(int dirfd) {
  int err = 0;
  wchar_t *w = at_path(dirfd, UPK_TMP_DIR, &err);
  if (w == NULL) return err;
  err = mkdir_w(w);
  if (err == EEXIST) {
    UpkStat st;
    err = stat_w(w, &st, 1);
    if (!err && st.type != UPK_FT_DIR) err = ENOTDIR;
  }
  free(w);
  return err;
}

int upk_fs_create_temp(int dirfd, const char *name, char *tmpname, size_t size, int *fd) {
  for (int tries = 0; tries < 16; tries++) {
    int err = upk_fs_temp_name(dirfd, name, tmpname, size);
    if (err) return err;
    wchar_t *w = at_path(dirfd, tmpname, &err);
    if (w == NULL) return err;
    HANDLE h = CreateFileW(w, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_DELETE, NULL,
                           CREATE_NEW, FILE_ATTRIBUTE_NORMAL, NULL);
    err = h == INVALID_HANDLE_VALUE ? last_errno() : 0;
    free(w);
    if (!err) return wrap(h, 0, fd);
    if (err != EEXIST && err != ENOENT) return err;
  }
  return EEXIST;
}

static int remove_w(const wchar_t *w, int dir) {
  if (dir ? RemoveDirectoryW(w) : DeleteFileW(w)) return 0;
  int err = last_errno();
  DWORD a = GetFileAttributesW(w);
  if (a == INVALID_FILE_ATTRIBUTES) return err;
  /* a link to a folder is removed as a folder; a read-only file is removable, as on POSIX */
  if (!dir && (a & FILE_ATTRIBUTE_DIRECTORY) && (a & FILE_ATTRIBUTE_REPARSE_POINT))
    return RemoveDirectoryW(w) ? 0 : last_errno();
  if (!dir && (a & FILE_ATTRIBUTE_DIRECTORY)) return EISDIR;
  if (!dir && (a & FILE_ATTRIBUTE_READONLY) && SetFileAttributesW(w, a & ~FILE_ATTRIBUTE_READONLY))
    return DeleteFileW(w) ? 0 : last_errno();
  return err;
}

static int remove_at(int dirfd, const char *name, int dir) {
  int err = 0;
  wchar_t *w = at_path(dirfd, name, &err);
  if (w == NULL) return err;
  err = remove_w(w, dir);
  free(w);
  return err;
}

void upk_fs_temp_release(int dirfd) {
  remove_at(dirfd, UPK_TMP_DIR, 1);  /* fails while it holds anything: fine */
}

int upk_fs_unlinkat(int dirfd, const char *name) {
  return remove_at(dirfd, name, 0);
}

int upk_fs_pid_alive(long pid) {
  if ((DWORD)pid == GetCurrentProcessId()) return 1;
  HANDLE h = OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
  if (h == NULL) return GetLastError() != ERROR_INVALID_PARAMETER;  /* denied: it exists */
  int alive = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
  CloseHandle(h);
  return alive;
}

int upk_fs_clean_temps(int dirfd, int *removed) {
  *removed = 0;
  UpkStat st;
  int err = stat_at(dirfd, UPK_TMP_DIR, &st, 1);
  if (err) return err == ENOENT || err == ENOTDIR ? 0 : err;
  if (st.type != UPK_FT_DIR) return 0;
  wchar_t *w = at_path(dirfd, UPK_TMP_DIR, &err);
  if (w == NULL) return err;
  int fd;
  err = open_dir_w(w, 1, &fd);
  free(w);
  if (err) return err;
  err = upk_fs_clean_listed(fd, removed);
  upk_fs_close(fd);
  upk_fs_temp_release(dirfd);
  return err;
}

/* One positioned read or write of at most 1 GiB; *done gets the bytes moved. */
static int rw_at(int fd, void *buf, size_t n, uint64_t off, int write, DWORD *done) {
  HANDLE h = fd_handle(fd);
  if (h == INVALID_HANDLE_VALUE) return EBADF;
  OVERLAPPED o;
  memset(&o, 0, sizeof o);
  o.Offset = (DWORD)off;
  o.OffsetHigh = (DWORD)(off >> 32);
  DWORD k = n > 0x40000000u ? 0x40000000u : (DWORD)n;
  BOOL ok = write ? WriteFile(h, buf, k, done, &o) : ReadFile(h, buf, k, done, &o);
  if (ok) return 0;
  if (!write && GetLastError() == ERROR_HANDLE_EOF) { *done = 0; return 0; }
  return last_errno();
}

int upk_fs_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got) {
  size_t total = 0;
  while (total < n) {
    DWORD k = 0;
    int err = rw_at(fd, (char *)buf + total, n - total, off + total, 0, &k);
    if (err) return err;
    if (k == 0) break;
    total += k;
  }
  *got = total;
  return 0;
}

int upk_fs_pwrite_full(int fd, const void *buf, size_t n, uint64_t off) {
  const char *p = buf;
  while (n > 0) {
    DWORD k = 0;
    int err = rw_at(fd, (void *)p, n, off, 1, &k);
    if (err) return err;
    if (k == 0) return EIO;
    p += k;
    n -= k;
    off += k;
  }
  return 0;
}

int upk_fs_write_full(int fd, const void *buf, size_t n) {
  HANDLE h = fd_handle(fd);
  if (h == INVALID_HANDLE_VALUE) return EBADF;
  const char *p = buf;
  while (n > 0) {
    DWORD k = 0, want = n > 0x40000000u ? 0x40000000u : (DWORD)n;
    if (!WriteFile(h, p, want, &k, NULL)) return last_errno();
    if (k == 0) return EIO;
    p += k;
    n -= k;
  }
  return 0;
}

int upk_fs_truncate(int fd, uint64_t size) {
  FILE_END_OF_FILE_INFO e;
  e.EndOfFile.QuadPart = (LONGLONG)size;
  return SetFileInformationByHandle(fd_handle(fd), FileEndOfFileInfo, &e, sizeof e) ? 0 : last_errno();
}

/*
** Set or clear the read-only attribute from the owner's write bit (0200);
** attrs (UPK_ATTR_*, or -1 to leave them) sets the hidden and system ones.
*/
static int set_readonly(HANDLE h, unsigned mode, int attrs, LARGE_INTEGER *mtime) {
  FILE_BASIC_INFO b;
  if (!GetFileInformationByHandleEx(h, FileBasicInfo, &b, sizeof b)) return last_errno();
  if (!(b.FileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    if (mode & 0200) b.FileAttributes &= ~(DWORD)FILE_ATTRIBUTE_READONLY;
    else b.FileAttributes |= FILE_ATTRIBUTE_READONLY;
    if (attrs >= 0) {
      b.FileAttributes &= ~(DWORD)(FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM | FILE_ATTRIBUTE_NORMAL);
      if (attrs & UPK_ATTR_HIDDEN) b.FileAttributes |= FILE_ATTRIBUTE_HIDDEN;
      if (attrs & UPK_ATTR_SYSTEM) b.FileAttributes |= FILE_ATTRIBUTE_SYSTEM;
    }
    if (b.FileAttributes == 0) b.FileAttributes = FILE_ATTRIBUTE_NORMAL;
  }
  if (mtime) b.LastWriteTime = b.LastAccessTime = *mtime;
  b.CreationTime.QuadPart = b.ChangeTime.QuadPart = 0;  /* 0: unchanged */
  return SetFileInformationByHandle(h, FileBasicInfo, &b, sizeof b) ? 0 : last_errno();
}

int upk_fs_fchmod(int fd, unsigned mode) {
  return set_readonly(fd_handle(fd), mode, -1, NULL);
}

int upk_fs_copy_data(int in, int out, uint64_t size, int sparse,
                     int (*tick)(void *arg, uint64_t done), void *arg) {
  char *buf = malloc(RW_BUF);
  if (buf == NULL) return ENOMEM;
  uint64_t off = 0;
  int err = 0;
  while (off < size) {
    size_t want = size - off > RW_BUF ? RW_BUF : (size_t)(size - off), got;
    if ((err = upk_fs_pread_full(in, buf, want, off, &got)) != 0) break;
    if (got == 0) { err = EIO; break; }  /* the source shrank under us */
    if ((err = upk_fs_pwrite_full(out, buf, got, off)) != 0) break;
    off += got;
    if (tick && tick(arg, off)) { err = EINTR; break; }
  }
  free(buf);
  if (!err && sparse) err = upk_fs_truncate(out, size);
  return err;
}

int upk_fs_set_meta(int fd, const UpkStat *st) {
  LARGE_INTEGER t = ns_ft(st->mtime_ns);
  return set_readonly(fd_handle(fd), st->mode, (int)st->attrs, &t);
}

static int set_times_w(const wchar_t *w, int64_t mtime_ns) {
  HANDLE h = open_meta(w, FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES, 1);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  FILE_BASIC_INFO b;
  memset(&b, 0, sizeof b);  /* zero times and attributes: unchanged */
  b.LastWriteTime = b.LastAccessTime = ns_ft(mtime_ns);
  int err = SetFileInformationByHandle(h, FileBasicInfo, &b, sizeof b) ? 0 : last_errno();
  CloseHandle(h);
  return err;
}

int upk_fs_set_times_at(int dirfd, const char *name, int64_t mtime_ns) {
  int err = 0;
  wchar_t *w = at_path(dirfd, name, &err);
  if (w == NULL) return err;
  err = set_times_w(w, mtime_ns);
  free(w);
  return err;
}

int upk_fs_set_times(const char *path, int64_t mtime_ns) {
  return upk_fs_set_times_at(UPK_FS_CWD, path, mtime_ns);
}

int upk_fs_fsync(int fd) {
  HANDLE h = fd_handle(fd);
  if (h == INVALID_HANDLE_VALUE) return EBADF;
  BY_HANDLE_FILE_INFORMATION i;
  if (GetFileInformationByHandle(h, &i) && (i.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) return 0;
  return FlushFileBuffers(h) ? 0 : last_errno();
}

void upk_fs_advise_sequential(int fd) {
  (void)fd;  /* FILE_FLAG_SEQUENTIAL_SCAN is given at open */
}

void upk_fs_start_writeback(int fd) {
  (void)fd;  /* no asynchronous writeback call; the final FlushFileBuffers does the work */
}

/* Windows lets only administrators flush a volume: the file's own data is flushed. */
int upk_fs_syncfs(int fd) {
  return upk_fs_fsync(fd);
}

static int move_w(const wchar_t *from, const wchar_t *to, int noreplace) {
  DWORD flags = MOVEFILE_WRITE_THROUGH | (noreplace ? 0 : MOVEFILE_REPLACE_EXISTING);
  return MoveFileExW(from, to, flags) ? 0 : last_errno();
}

int upk_fs_rename(int olddir, const char *old, int newdir, const char *newname, int noreplace) {
  int err = 0;
  wchar_t *from = at_path(olddir, old, &err), *to = from ? at_path(newdir, newname, &err) : NULL;
  if (to) err = move_w(from, to, noreplace);
  free(from);
  free(to);
  return err;
}

int upk_fs_rename_path(const char *old, const char *newpath) {
  return upk_fs_rename(UPK_FS_CWD, old, UPK_FS_CWD, newpath, 0);
}

int upk_fs_symlinkat(const char *target, int dirfd, const char *name) {
  int err = 0;
  wchar_t *w = at_path(dirfd, name, &err);
  if (w == NULL) return err;
  wchar_t *t = upk_w(target);
  if (t == NULL) { free(w); return errno; }
  for (wchar_t *p = t; *p; p++) if (*p == L'/') *p = L'\\';
  DWORD flags = 0x2;  /* SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE (developer mode) */
  UpkStat st;
  if (upk_fs_stat(target, &st) == 0 && st.type == UPK_FT_DIR) flags |= SYMBOLIC_LINK_FLAG_DIRECTORY;
  if (!CreateSymbolicLinkW(w, t, flags)) err = last_errno();
  free(w);
  free(t);
  return err;
}

/* The reparse data of a symbolic link or junction (winnt.h leaves it to the DDK). */
typedef struct {
  ULONG tag;
  USHORT length, reserved;
  USHORT subst_off, subst_len, print_off, print_len;
  ULONG flags;  /* symbolic links only; junctions start their path buffer here */
} ReparseHead;

static int readlink_w(const wchar_t *w, char *buf, size_t size) {
  HANDLE h = open_meta(w, FILE_READ_ATTRIBUTES, 1);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  union { ReparseHead head; unsigned char raw[MAXIMUM_REPARSE_DATA_BUFFER_SIZE]; } *r = malloc(sizeof *r);
  DWORD got = 0;
  int err = 0;
  if (r == NULL) err = ENOMEM;
  else if (!DeviceIoControl(h, FSCTL_GET_REPARSE_POINT, NULL, 0, r, sizeof *r, &got, NULL))
    err = GetLastError() == ERROR_NOT_A_REPARSE_POINT ? EINVAL : last_errno();
  CloseHandle(h);
  if (!err) {
    size_t base = r->head.tag == IO_REPARSE_TAG_SYMLINK ? sizeof(ReparseHead)
                : r->head.tag == IO_REPARSE_TAG_MOUNT_POINT ? offsetof(ReparseHead, flags) : 0;
    if (base == 0) err = EINVAL;
    else {
      USHORT off = r->head.print_len ? r->head.print_off : r->head.subst_off;
      USHORT len = r->head.print_len ? r->head.print_len : r->head.subst_len;
      wchar_t *t = calloc((size_t)len / 2 + 1, sizeof *t);
      if (t == NULL) err = ENOMEM;
      else {
        memcpy(t, r->raw + base + off, len);
        if (wcsncmp(t, L"\\??\\", 4) == 0) t[1] = L'\\';  /* an NT path as a \\?\ one */
        err = upk_utf8_path(t, buf, size);
        free(t);
      }
    }
  }
  free(r);
  return err;
}

int upk_fs_readlink_at(int dirfd, const char *name, char *buf, size_t size) {
  int err = 0;
  wchar_t *w = at_path(dirfd, name, &err);
  if (w == NULL) return err;
  err = readlink_w(w, buf, size);
  free(w);
  return err;
}

int upk_fs_mkdir(const char *path, unsigned mode) {
  int err = 0;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  err = mkdir_w(w);
  free(w);
  return err;
}

int upk_fs_chmod(const char *path, unsigned mode) {
  int err = 0;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  HANDLE h = open_meta(w, FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES, 0);
  free(w);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  err = set_readonly(h, mode, -1, NULL);
  CloseHandle(h);
  return err;
}

int upk_fs_rmdir(const char *path) { return remove_at(UPK_FS_CWD, path, 1); }
int upk_fs_unlink(const char *path) { return remove_at(UPK_FS_CWD, path, 0); }

int upk_fs_free(const char *path, uint64_t *bytes) {
  int err = 0;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  size_t n = wcslen(w) + 2;
  wchar_t *root = malloc(n * sizeof *root);
  ULARGE_INTEGER avail;
  if (root == NULL) err = ENOMEM;
  else if (GetFileAttributesW(w) == INVALID_FILE_ATTRIBUTES) err = last_errno();
  else if (!GetVolumePathNameW(w, root, (DWORD)n) || !GetDiskFreeSpaceExW(root, &avail, NULL, NULL))
    err = last_errno();
  else *bytes = avail.QuadPart;
  free(root);
  free(w);
  return err;
}

/* List the folder whose UTF-16 path is w (FindFirstFileExW, large fetch). */
static int list_w(const wchar_t *w, int (*each)(void *arg, const char *name), void *arg) {
  size_t n = wcslen(w);
  wchar_t *pat = malloc((n + 3) * sizeof *pat);
  if (pat == NULL) return ENOMEM;
  wcscpy(pat, w);
  wcscat(pat, n > 0 && w[n - 1] == L'\\' ? L"*" : L"\\*");
  WIN32_FIND_DATAW d;
  HANDLE h = FindFirstFileExW(pat, FindExInfoBasic, &d, FindExSearchNameMatch, NULL, FIND_FIRST_EX_LARGE_FETCH);
  free(pat);
  if (h == INVALID_HANDLE_VALUE) {
    int err = last_errno();
    if (err == ENOENT && GetFileAttributesW(w) != INVALID_FILE_ATTRIBUTES) err = ENOTDIR;
    return err;
  }
  int err = 0;
  do {
    if (wcscmp(d.cFileName, L".") == 0 || wcscmp(d.cFileName, L"..") == 0) continue;
    char *name = upk_utf8(d.cFileName);
    if (name == NULL) { err = errno; break; }
    int stop = each(arg, name);
    free(name);
    if (stop) break;
  } while (FindNextFileW(h, &d));
  if (!err && GetLastError() != ERROR_NO_MORE_FILES && GetLastError() != ERROR_SUCCESS) err = last_errno();
  FindClose(h);
  return err;
}

int upk_fs_list(const char *path, int (*each)(void *arg, const char *name), void *arg) {
  UpkStat st;
  int err = upk_fs_stat(path, &st);
  if (err) return err;
  if (st.type != UPK_FT_DIR) return ENOTDIR;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  err = list_w(w, each, arg);
  free(w);
  return err;
}

int upk_fs_list_fd(int dirfd, int (*each)(void *arg, const char *name), void *arg) {
  int err = 0;
  wchar_t *w = at_path(dirfd, ".", &err);
  if (w == NULL) return err;
  size_t n = wcslen(w);
  if (n >= 2) w[n - 2] = L'\0';  /* drop the "\." */
  err = list_w(w, each, arg);
  free(w);
  return err;
}

int upk_fs_getcwd(char *buf, size_t size) {
  wchar_t w[32768];
  DWORD n = GetCurrentDirectoryW(sizeof w / sizeof w[0], w);
  if (n == 0 || n >= sizeof w / sizeof w[0]) return n == 0 ? last_errno() : ENAMETOOLONG;
  return upk_utf8_path(w, buf, size);
}

int upk_fs_realpath(const char *path, char *buf, size_t size) {
  int err = 0;
  wchar_t *w = wpath(path, &err);
  if (w == NULL) return err;
  HANDLE h = open_meta(w, FILE_READ_ATTRIBUTES, 0);
  free(w);
  if (h == INVALID_HANDLE_VALUE) return last_errno();
  wchar_t out[32768];
  DWORD n = GetFinalPathNameByHandleW(h, out, sizeof out / sizeof out[0], FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
  err = n == 0 ? last_errno() : n >= sizeof out / sizeof out[0] ? ENAMETOOLONG : 0;
  CloseHandle(h);
  return err ? err : upk_utf8_path(out, buf, size);
}

const char *upk_fs_tmproot(void) {
  static char root[32768 * 3];
  wchar_t w[32768];
  DWORD n = GetTempPathW(sizeof w / sizeof w[0], w);
  if (n == 0 || n >= sizeof w / sizeof w[0] || upk_utf8_path(w, root, sizeof root) != 0) return "C:/Windows/Temp";
  size_t len = strlen(root);
  if (len > 3 && root[len - 1] == '/') root[len - 1] = '\0';
  return root;
}

int upk_fs_mkdtemp(char *tmpl) {
  size_t n = strlen(tmpl);
  if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0) return EINVAL;
  for (int tries = 0; tries < 100; tries++) {
    unsigned char r[6];
    int err = upk_fs_random(r, sizeof r);
    if (err) return err;
    for (int i = 0; i < 6; i++) tmpl[n - 6 + i] = "abcdefghijklmnopqrstuvwxyz0123456789"[r[i] % 36];
    err = upk_fs_mkdir(tmpl, 0700);
    if (err != EEXIST) return err;
  }
  return EEXIST;
}
