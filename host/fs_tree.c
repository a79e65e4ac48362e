/*
** fs_tree.c: the tree side of upkit._fs: the walk behind fs.scan and
** fs.scan_pair (both trees of a mirror at once), and fs.remove.
*/
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fs_private.h"

/* ---------------------------------------------------------------------- */
/* Tree scan                                                               */

typedef struct Names {
  char **v;
  size_t n, cap;
  int dirfd, clean;  /* names_add: remove stale temporary files of dirfd on the way */
} Names;

/* Every name, upkit's temporary files included (for removal). */
static int names_add_all(void *arg, const char *name) {
  Names *ns = arg;
  if (ns->n == ns->cap) {
    size_t cap = ns->cap ? ns->cap * 2 : 64;
    char **v = realloc(ns->v, cap * sizeof *v);
    if (!v) return 1;
    ns->v = v;
    ns->cap = cap;
  }
  if (!(ns->v[ns->n] = strdup(name))) return 1;
  ns->n++;
  return 0;
}

static int names_add(void *arg, const char *name) {
  Names *ns = arg;
  if (!ns->clean || !upk_fs_is_temp_name(name)) return names_add_all(arg, name);
  int removed;
  upk_fs_clean_temps(ns->dirfd, &removed);
  return 0;
}

static void names_free(Names *ns) {
  for (size_t i = 0; i < ns->n; i++) free(ns->v[i]);
  free(ns->v);
}

static int cmpname(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

const char *upk_fs_typename(int type) {
  switch (type) {
    case UPK_FT_FILE: return "file";
    case UPK_FT_DIR: return "dir";
    case UPK_FT_LINK: return "link";
    default: return "other";
  }
}

/* One entry or failure found by a walk; kept in C so a walk can run in a thread. */
typedef struct WalkItem {
  char *rel, *target, *message;  /* message: failures only */
  int type, err;                 /* err != 0: a failure */
  uint64_t size;
  int64_t mtime_ns;
  unsigned mode;
} WalkItem;

typedef struct Walk {
  const char *root, *fn;
  int clean;
  WalkItem *v;
  size_t n, cap;
  int oom;
} Walk;

static WalkItem *walk_add(Walk *W) {
  if (W->n == W->cap) {
    size_t cap = W->cap ? W->cap * 2 : 256;
    WalkItem *v = realloc(W->v, cap * sizeof *v);
    if (!v) { W->oom = 1; return NULL; }
    W->v = v;
    W->cap = cap;
  }
  WalkItem *it = &W->v[W->n++];
  memset(it, 0, sizeof *it);
  return it;
}

static void walk_fail(Walk *W, const char *rel, const char *full, int err) {
  WalkItem *it = walk_add(W);
  if (!it) return;
  it->err = err;
  it->rel = strdup(rel);
  size_t len = strlen(W->fn) + strlen(full) + strlen(strerror(err)) + 8;
  if ((it->message = malloc(len)) != NULL) snprintf(it->message, len, "%s: '%s': %s", W->fn, full, strerror(err));
  if (!it->rel || !it->message) W->oom = 1;
}

/* Walk root/rel (rel "" for the root) depth first, children sorted by name. */
static void walk_dir(Walk *W, const char *rel) {
  char full[PATH_MAX];
  if (snprintf(full, sizeof full, "%s%s%s", W->root, *rel ? "/" : "", rel) >= (int)sizeof full) {
    walk_fail(W, rel, full, ENAMETOOLONG);
    return;
  }
  /* one open folder: its entries are listed, looked at and read relative to it */
  int dfd;
  int err = upk_fs_open_dir(full, &dfd);
  if (err) {
    walk_fail(W, rel, full, err);
    return;
  }
  /* one pass over the folder: its names, and with clean its stale temporary files removed */
  Names ns = {NULL, 0, 0, dfd, W->clean};
  err = upk_fs_list_fd(dfd, names_add, &ns);
  if (err) {
    names_free(&ns);
    upk_fs_close(dfd);
    walk_fail(W, rel, full, err);
    return;
  }
  if (ns.n) qsort(ns.v, ns.n, sizeof *ns.v, cmpname);
  /* every child looked at while the folder is open; closed before going down,
     so that a deep tree does not hold a descriptor per level */
  struct Child { UpkStat st; char *target; int err; } *ch = calloc(ns.n ? ns.n : 1, sizeof *ch);
  if (!ch) W->oom = 1;
  for (size_t i = 0; ch && i < ns.n; i++) {
    ch[i].err = upk_fs_lstat_at(dfd, ns.v[i], &ch[i].st);
    if (!ch[i].err && ch[i].st.type == UPK_FT_LINK) {
      char target[PATH_MAX];
      if (upk_fs_readlink_at(dfd, ns.v[i], target, sizeof target) == 0 && !(ch[i].target = strdup(target))) W->oom = 1;
    }
  }
  upk_fs_close(dfd);
  size_t rlen = strlen(rel), flen = strlen(full);
  for (size_t i = 0; ch && i < ns.n && !W->oom; i++) {
    char crel[PATH_MAX];
    size_t nlen = strlen(ns.v[i]);
    if (rlen + nlen + 2 > sizeof crel || flen + nlen + 2 > PATH_MAX) {
      walk_fail(W, ns.v[i], full, ENAMETOOLONG);
      continue;
    }
    size_t k = 0;
    if (rlen) { memcpy(crel, rel, rlen); crel[rlen] = '/'; k = rlen + 1; }
    memcpy(crel + k, ns.v[i], nlen + 1);
    if (ch[i].err) {
      if (ch[i].err != ENOENT) {
        char cfull[PATH_MAX];  /* flen + nlen + 2 <= PATH_MAX, checked above */
        memcpy(cfull, full, flen);
        cfull[flen] = '/';
        memcpy(cfull + flen + 1, ns.v[i], nlen + 1);
        walk_fail(W, crel, cfull, ch[i].err);
      }
      continue;
    }
    WalkItem *it = walk_add(W);
    if (!it) break;
    if (!(it->rel = strdup(crel))) { W->oom = 1; break; }
    it->type = ch[i].st.type;
    it->size = ch[i].st.size;
    it->mtime_ns = ch[i].st.mtime_ns;
    it->mode = ch[i].st.mode;
    it->target = ch[i].target;
    ch[i].target = NULL;
    if (it->type == UPK_FT_DIR) walk_dir(W, crel);
  }
  for (size_t i = 0; ch && i < ns.n; i++) free(ch[i].target);
  free(ch);
  names_free(&ns);
}

static void walk_free(Walk *W) {
  for (size_t i = 0; i < W->n; i++) {
    free(W->v[i].rel);
    free(W->v[i].target);
    free(W->v[i].message);
  }
  free(W->v);
  W->v = NULL;
  W->n = W->cap = 0;
}

/* Push the walk's entries and failures as two arrays; frees the walk. */
static void walk_push(lua_State *L, Walk *W) {
  lua_Integer nout = 0, nfail = 0;
  lua_createtable(L, (int)W->n, 0);
  lua_newtable(L);  /* [entries, failures] */
  for (size_t i = 0; i < W->n; i++) {
    WalkItem *it = &W->v[i];
    if (it->err) {
      lua_createtable(L, 0, 3);
      lua_pushstring(L, it->rel ? it->rel : "");
      lua_setfield(L, -2, "path");
      lua_pushstring(L, upk_errno_name(it->err));
      lua_setfield(L, -2, "code");
      lua_pushstring(L, it->message ? it->message : strerror(it->err));
      lua_setfield(L, -2, "message");
      lua_rawseti(L, -2, ++nfail);
      continue;
    }
    lua_createtable(L, 0, 6);
    lua_pushstring(L, it->rel);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, upk_fs_typename(it->type));
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)it->size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)it->mtime_ns);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)it->mode);
    lua_setfield(L, -2, "mode");
    if (it->target) {
      lua_pushstring(L, it->target);
      lua_setfield(L, -2, "target");
    }
    lua_rawseti(L, -3, ++nout);
  }
  walk_free(W);
}

static void *walk_thread(void *arg) {
  Walk *W = arg;
  walk_dir(W, "");
  return NULL;
}

/* Raise unless root is an existing folder. */
static void check_root(lua_State *L, const char *root, const char *fn) {
  UpkStat st;
  int err = upk_fs_stat(root, &st);
  if (err) upk_errno_error(L, err, "%s: '%s'", fn, root);
  if (st.type != UPK_FT_DIR) upk_errno_error(L, ENOTDIR, "%s: '%s'", fn, root);
}

/*
** fs.scan(root [, clean [, fn]]) -> entries, failures
** Every entry under root, depth first, names sorted bytewise, symbolic
** links not followed: { path = relative, type = "file"|"dir"|"link"|"other",
** size, mtime = ns, mode, target }. upkit's temporary files are left out;
** with clean, stale ones are removed. Unreadable folders become failures
** { path, code, message }. A missing root raises.
*/
int fs_scan(lua_State *L) {
  const char *root = luaL_checkstring(L, 1);
  Walk W = {root, luaL_optstring(L, 3, "fs.scan"), lua_toboolean(L, 2), NULL, 0, 0, 0};
  check_root(L, root, W.fn);
  walk_dir(&W, "");
  if (W.oom) { walk_free(&W); return upk_error(L, "ENOMEM", "%s: '%s': out of memory", W.fn, root); }
  walk_push(L, &W);
  return 2;
}

/* fs.check_dir(path [, fn]): raise unless path is an existing folder */
int fs_check_dir(lua_State *L) {
  check_root(L, luaL_checkstring(L, 1), luaL_optstring(L, 2, "fs.check_dir"));
  return 0;
}

/*
** fs.scan_pair(src, dst [, fn]) -> src entries, src failures, dst entries, dst failures
** Both trees walked at once (dst in a second thread, its stale temporary
** files removed): a mirror's two scans cost one.
*/
int fs_scan_pair(lua_State *L) {
  const char *src = luaL_checkstring(L, 1), *dst = luaL_checkstring(L, 2);
  const char *fn = luaL_optstring(L, 3, "fs.scan");
  check_root(L, src, fn);
  check_root(L, dst, fn);
  Walk A = {src, fn, 0, NULL, 0, 0, 0}, B = {dst, fn, 1, NULL, 0, 0, 0};
  pthread_t t;
  int threaded = pthread_create(&t, NULL, walk_thread, &B) == 0;
  walk_dir(&A, "");
  if (threaded) pthread_join(t, NULL);
  else walk_dir(&B, "");
  if (A.oom || B.oom) {
    walk_free(&A);
    walk_free(&B);
    return upk_error(L, "ENOMEM", "%s: '%s' -> '%s': out of memory", fn, src, dst);
  }
  walk_push(L, &A);
  walk_push(L, &B);
  return 4;
}

/* Remove path and, for a folder, everything under it; never follows links. */
static int remove_tree(const char *path, char *failed, size_t fsize) {
  UpkStat st;
  int err = upk_fs_lstat(path, &st);
  if (err) return err == ENOENT ? 0 : (snprintf(failed, fsize, "%s", path), err);
  if (st.type != UPK_FT_DIR) {
    err = upk_fs_unlink(path);
    if (err && err != ENOENT) snprintf(failed, fsize, "%s", path);
    return err == ENOENT ? 0 : err;
  }
  Names ns = {NULL, 0, 0, -1, 0};
  err = upk_fs_list(path, names_add_all, &ns);
  for (size_t i = 0; i < ns.n && !err; i++) {
    char child[PATH_MAX];
    if (snprintf(child, sizeof child, "%s/%s", path, ns.v[i]) >= (int)sizeof child) err = ENAMETOOLONG;
    else err = remove_tree(child, failed, fsize);
  }
  names_free(&ns);
  if (!err) err = upk_fs_rmdir(path);
  if (err && !*failed) snprintf(failed, fsize, "%s", path);
  return err;
}

/*
** fs.remove(path [, recursive]) -> true, or false when nothing was there.
** (The Lua facade refuses /, the home folder and the current folder's
** ancestors before this is called.)
*/
int fs_remove(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int recursive = lua_toboolean(L, 2);
  UpkStat st;
  int err = upk_fs_lstat(path, &st);
  if (err == ENOENT) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (err) return upk_errno_error(L, err, "fs.remove: '%s'", path);
  char failed[PATH_MAX] = "";
  if (st.type == UPK_FT_DIR) err = recursive ? remove_tree(path, failed, sizeof failed) : upk_fs_rmdir(path);
  else err = upk_fs_unlink(path);
  if (err) return upk_errno_error(L, err, "fs.remove: '%s'", *failed ? failed : path);
  lua_pushboolean(L, 1);
  return 1;
}
