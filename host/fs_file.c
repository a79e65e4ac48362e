/*
** fs_file.c: the file helpers of upkit._fs: atomic write, read, stat,
** folders, and the temporary-file scheme other modules share (fs.temp_path,
** fs.commit, fs.discard, fs.rename).
*/
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fs_private.h"

/* dirname and basename of dst; refuses names ending in '/'. */
int upk_fs_split(const char *dst, char *dir, size_t size, const char **base) {
  const char *slash = strrchr(dst, '/');
  if (!slash) {
    strcpy(dir, ".");
    *base = dst;
  } else {
    size_t n = (size_t)(slash - dst);
    if (n == 0) n = 1;  /* "/name" */
    if (n >= size) return ENAMETOOLONG;
    memcpy(dir, dst, n);
    dir[n] = '\0';
    *base = slash + 1;
  }
  if (**base == '\0' || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0) return EISDIR;
  return 0;
}

/* Open the folder of path into *dirfd; base receives the final name. */
static int open_parent(const char *path, char *dir, size_t size, const char **base, int *dirfd) {
  int err = upk_fs_split(path, dir, size, base);
  return err ? err : upk_fs_open_dir(dir, dirfd);
}

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

/*
** fs.write(path, data [, mode]) -> bytes
** Atomic: temporary file, fsync, rename, fsync of the folder. mode is an
** integer (default 0644).
*/
int fs_write(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  unsigned mode = (unsigned)luaL_optinteger(L, 3, 0644);
  char dir[PATH_MAX], tmp[NAME_MAX + 80];
  const char *base;
  const char *step = "destination";
  int dirfd = -1, fd = -1;
  int err = open_parent(path, dir, sizeof dir, &base, &dirfd);
  if (!err) {
    int removed;
    upk_fs_clean_temps(dirfd, &removed);
    step = "temporary file";
    err = upk_fs_create_temp(dirfd, base, tmp, sizeof tmp, &fd);
  }
  if (fd >= 0) {
    step = "write";
    err = upk_fs_fchmod(fd, mode);
    if (!err) err = upk_fs_write_full(fd, data, len);
    if (!err) { step = "fsync"; err = upk_fs_fsync(fd); }
    int cerr = upk_fs_close(fd);
    if (!err) err = cerr;
    if (!err) { step = "rename"; err = upk_fs_rename(dirfd, tmp, dirfd, base, 0); }
    if (err) upk_fs_unlinkat(dirfd, tmp);
    upk_fs_temp_release(dirfd);
    if (!err) { step = "folder fsync"; err = upk_fs_fsync(dirfd); }
  }
  if (dirfd >= 0) upk_fs_close(dirfd);
  if (err) return upk_errno_error(L, err, "fs.write: '%s': %s", path, step);
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* fs.read(path) -> data */
int fs_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd;
  UpkStat st;
  int err = upk_fs_open_read(path, &fd);
  if (err) return upk_errno_error(L, err, "fs.read: '%s'", path);
  if ((err = upk_fs_fstat(fd, &st)) == 0 && st.type == UPK_FT_DIR) err = EISDIR;
  size_t cap = (err || st.size == 0) ? 65536 : (size_t)st.size + 1, len = 0;
  char *buf = err ? NULL : malloc(cap);
  if (!err && !buf) err = ENOMEM;
  while (!err) {
    size_t got;
    if ((err = upk_fs_pread_full(fd, buf + len, cap - len, len, &got)) != 0) break;
    len += got;
    if (len < cap) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) { err = ENOMEM; break; }
    buf = nb;
    cap *= 2;
  }
  upk_fs_close(fd);
  if (err) {
    free(buf);
    return upk_errno_error(L, err, "fs.read: '%s'", path);
  }
  lua_pushlstring(L, buf, len);
  free(buf);
  return 1;
}

static void push_stat(lua_State *L, const UpkStat *st) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, upk_fs_typename(st->type));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st->size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (lua_Number)st->mtime_ns / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st->mtime_ns);
  lua_setfield(L, -2, "mtime_ns");
  lua_pushinteger(L, (lua_Integer)st->mode);
  lua_setfield(L, -2, "mode");
  if (st->attrs & UPK_ATTR_HIDDEN) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "hidden");
  }
  if (st->attrs & UPK_ATTR_SYSTEM) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "system");
  }
}

/*
** fs.stat(path [, follow]) -> { type, size, mtime, mtime_ns, mode } or nil
** when nothing is there; on Windows also hidden = true and system = true
** when the file has those attributes. Links are not followed unless follow is true.
*/
int fs_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  UpkStat st;
  int err = lua_toboolean(L, 2) ? upk_fs_stat(path, &st) : upk_fs_lstat(path, &st);
  if (err == ENOENT || err == ENOTDIR) {
    lua_pushnil(L);
    return 1;
  }
  if (err) return upk_errno_error(L, err, "fs.stat: '%s'", path);
  push_stat(L, &st);
  return 1;
}

/* fs.mkdirs(path [, mode]) -> true when it created the folder */
int fs_mkdirs(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  unsigned mode = (unsigned)luaL_optinteger(L, 2, 0755);
  char buf[PATH_MAX];
  if (len == 0 || len >= sizeof buf) return upk_errno_error(L, len ? ENAMETOOLONG : ENOENT, "fs.mkdirs: '%s'", path);
  memcpy(buf, path, len + 1);
  int created = 0;
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char c = buf[i];
    buf[i] = '\0';
    int err = upk_fs_mkdir(buf, mode);
    if (err == 0) created = 1;
    else {
      UpkStat st;
      if (err != EEXIST) return upk_errno_error(L, err, "fs.mkdirs: '%s'", buf);
      if (upk_fs_stat(buf, &st) != 0 || st.type != UPK_FT_DIR)
        return upk_errno_error(L, ENOTDIR, "fs.mkdirs: '%s'", buf);
    }
    buf[i] = c;
  }
  lua_pushboolean(L, created);
  return 1;
}

/* fs.free(path) -> bytes available on that file system */
int fs_free(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uint64_t bytes;
  int err = upk_fs_free(path, &bytes);
  if (err) return upk_errno_error(L, err, "fs.free: '%s'", path);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 1;
}

/* fs.tempdir([prefix]) -> path of a fresh private folder under TMPDIR */
int fs_tempdir(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, "upkit");
  char tmpl[PATH_MAX];
  if (strchr(prefix, '/')) return upk_error(L, "EINVAL", "fs.tempdir: prefix '%s' contains '/'", prefix);
  if (snprintf(tmpl, sizeof tmpl, "%s/%s.XXXXXX", upk_fs_tmproot(), prefix) >= (int)sizeof tmpl)
    return upk_errno_error(L, ENAMETOOLONG, "fs.tempdir");
  int err = upk_fs_mkdtemp(tmpl);
  if (err) return upk_errno_error(L, err, "fs.tempdir: '%s'", tmpl);
  lua_pushstring(L, tmpl);
  return 1;
}

/* fs.realpath(path) -> canonical absolute path */
int fs_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  int err = upk_fs_realpath(path, buf, sizeof buf);
  if (err) return upk_errno_error(L, err, "fs.realpath: '%s'", path);
  lua_pushstring(L, buf);
  return 1;
}

/* fs.cwd() -> the current folder */
int fs_cwd(lua_State *L) {
  char buf[PATH_MAX];
  int err = upk_fs_getcwd(buf, sizeof buf);
  if (err) return upk_errno_error(L, err, "fs.cwd");
  lua_pushstring(L, buf);
  return 1;
}

/* fs.mkdir(path, mode): one folder; raises EEXIST when something is there */
int fs_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int err = upk_fs_mkdir(path, (unsigned)luaL_optinteger(L, 2, 0755));
  if (err) return upk_errno_error(L, err, "fs.mkdir: '%s'", path);
  return 0;
}

/* fs.setmeta(path, mode, mtime_ns): mode (nil for links) and time, not following links */
int fs_setmeta(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int err = 0;
  if (!lua_isnil(L, 2)) err = upk_fs_chmod(path, (unsigned)luaL_checkinteger(L, 2));
  if (!err) err = upk_fs_set_times(path, (int64_t)luaL_checkinteger(L, 3));
  if (err) return upk_errno_error(L, err, "fs.setmeta: '%s'", path);
  return 0;
}

/* fsync what is at path (a file or a folder); 0 or an errno */
static int sync_path(const char *path) {
  int fd;
  int err = upk_fs_open_read(path, &fd);
  if (!err) {
    err = upk_fs_fsync(fd);
    upk_fs_close(fd);
  }
  return err;
}

/* ---------------------------------------------------------------------- */
/* Temporary files: one scheme for every module (platform_fs.h, UPK_TMP_DIR) */

/*
** fs.temp_path(path [, resumable [, nocreate]]) -> a temporary path for
** path, in the private folder beside it (made when missing; stale
** temporaries there removed). A fresh name is reserved by creating it
** empty (0600), or with nocreate only chosen (for a writer that must
** create the file itself, as SQLite's VACUUM INTO). With resumable, the
** name is "<name>.part", the same in every run, not created, and never
** taken for stale.
*/
int fs_temp_path(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int resumable = lua_toboolean(L, 2), nocreate = lua_toboolean(L, 3);
  char dir[PATH_MAX], tmp[NAME_MAX + 80];
  const char *base;
  int dirfd, fd, removed;
  int err = open_parent(path, dir, sizeof dir, &base, &dirfd);
  if (err) return upk_errno_error(L, err, "fs.temp_path: '%s'", path);
  upk_fs_clean_temps(dirfd, &removed);
  if (resumable) {
    err = upk_fs_temp_dir(dirfd);
    if (!err && snprintf(tmp, sizeof tmp, "%s/%.*s.part", UPK_TMP_DIR, 200, base) >= (int)sizeof tmp)
      err = ENAMETOOLONG;
  } else if (nocreate) {
    err = upk_fs_temp_name(dirfd, base, tmp, sizeof tmp);
  } else if ((err = upk_fs_create_temp(dirfd, base, tmp, sizeof tmp, &fd)) == 0) {
    upk_fs_close(fd);
  }
  upk_fs_close(dirfd);
  if (err) return upk_errno_error(L, err, "fs.temp_path: '%s'", path);
  lua_pushfstring(L, "%s/%s", dir, tmp);
  return 1;
}

/*
** fs.commit(tmp, path [, overwrite = true]): rename tmp to path, remove the
** private folder when it is empty, and make the folder durable. A failed
** step (rename, folder fsync) raises its errno code naming the step.
*/
int fs_commit(lua_State *L) {
  const char *tmp = luaL_checkstring(L, 1), *path = luaL_checkstring(L, 2);
  int overwrite = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
  char dir[PATH_MAX];
  const char *base, *step = "destination";
  int dirfd;
  int err = open_parent(path, dir, sizeof dir, &base, &dirfd);
  if (!err) {
    step = "rename";
    err = upk_fs_rename(UPK_FS_CWD, tmp, dirfd, base, !overwrite);
    upk_fs_temp_release(dirfd);
    if (!err) { step = "folder fsync"; err = upk_fs_fsync(dirfd); }
    upk_fs_close(dirfd);
  }
  if (err) return upk_errno_error(L, err, "fs.commit: '%s' -> '%s': %s", tmp, path, step);
  return 0;
}

/* fs.discard(tmp): remove a temporary (nothing there is fine) and its private folder when empty. */
int fs_discard(lua_State *L) {
  const char *tmp = luaL_checkstring(L, 1);
  char dir[PATH_MAX];
  const char *base;
  int err = upk_fs_unlink(tmp);
  if (err && err != ENOENT) return upk_errno_error(L, err, "fs.discard: '%s'", tmp);
  if (upk_fs_split(tmp, dir, sizeof dir, &base) == 0) {
    const char *slash = strrchr(dir, '/');
    if (strcmp(slash ? slash + 1 : dir, UPK_TMP_DIR) == 0) upk_fs_rmdir(dir);
  }
  return 0;
}

/*
** fs.rename(old, new): rename, then make both folders durable; a failed
** folder fsync raises (the rename happened, but may not survive a crash).
*/
int fs_rename(lua_State *L) {
  const char *old = luaL_checkstring(L, 1), *path = luaL_checkstring(L, 2);
  char odir[PATH_MAX], ndir[PATH_MAX];
  const char *obase, *nbase, *step = "rename";
  int err = upk_fs_split(old, odir, sizeof odir, &obase);
  if (!err) err = upk_fs_split(path, ndir, sizeof ndir, &nbase);
  if (!err) err = upk_fs_rename_path(old, path);
  if (!err) {
    step = "folder fsync";
    err = sync_path(ndir);
    if (!err && strcmp(odir, ndir) != 0) err = sync_path(odir);
  }
  if (err) return upk_errno_error(L, err, "fs.rename: '%s' -> '%s': %s", old, path, step);
  return 0;
}

/* fs.sync(path): flush a file's (or a folder's) data and metadata to stable storage */
int fs_sync(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int err = sync_path(path);
  if (err) return upk_errno_error(L, err, "fs.sync: '%s'", path);
  return 0;
}
