/*
** fs.c: upkit._fs, the native half of upkit.fs. Atomic, verified file
** copies (temporary file, fsync, rename, fsync of the folder), batched
** copies for mirrors (one durability pass per batch), a tree scan, and the
** small helpers a procedure needs. Options, defaults, progress display
** and the mirror's decisions live in lua/upkit/fs.lua.
*/
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "platform_fs.h"
#include "digest.h"

#define BUFSZ ((size_t)4 << 20)  /* bytes per pipeline buffer */
#define NBUF 4                   /* pipeline depth */
#define THREAD_MIN (BUFSZ * 2)   /* smaller files are hashed inline */
#define TICK_EVERY 0.2           /* seconds between progress calls */
#define CHECKSUM_MISMATCH (-1)   /* pseudo errno of a failed readback */

static void pushhex(lua_State *L, const unsigned char *d, unsigned n) {
  char buf[EVP_MAX_MD_SIZE * 2];
  upk_hex(d, n, buf);
  lua_pushlstring(L, buf, 2 * (size_t)n);
}

/* ---------------------------------------------------------------------- */
/* Progress: a Lua function called from C, protected, at most every 0.2 s */

typedef struct Prog {
  lua_State *L;
  int fn;          /* stack index of the progress function, or 0 */
  int errref;      /* the function's error, LUA_NOREF when none */
  double last;
  uint64_t base;   /* bytes done before the current file */
} Prog;

static void prog_init(Prog *p, lua_State *L, int fn) {
  p->L = L;
  p->fn = fn;
  p->errref = LUA_NOREF;
  p->last = upk_now();
  p->base = 0;
}

/* Call the progress function with the bytes done; non-zero means stop. */
static int prog_tick(void *arg, uint64_t done) {
  Prog *p = arg;
  if (upk_interrupted || p->errref != LUA_NOREF) return 1;
  if (!p->fn) return 0;
  double now = upk_now();
  if (now - p->last < TICK_EVERY) return 0;
  p->last = now;
  lua_pushvalue(p->L, p->fn);
  lua_pushinteger(p->L, (lua_Integer)(p->base + done));
  if (lua_pcall(p->L, 1, 0, 0) != LUA_OK) {
    p->errref = luaL_ref(p->L, LUA_REGISTRYINDEX);
    return 1;
  }
  return 0;
}

/* Raise the progress function's error or INTERRUPTED, if either happened. */
static void prog_raise(Prog *p, const char *what) {
  if (p->errref != LUA_NOREF) {
    lua_rawgeti(p->L, LUA_REGISTRYINDEX, p->errref);
    luaL_unref(p->L, LUA_REGISTRYINDEX, p->errref);
    p->errref = LUA_NOREF;
    lua_error(p->L);
  }
  upk_check_interrupt(p->L, what);
}

/* ---------------------------------------------------------------------- */
/* Hashing copy: the reader/writer and a hashing thread overlap            */

typedef struct Bufs {
  unsigned char *b[NBUF];
} Bufs;

static void bufs_free(Bufs *B) {
  for (int i = 0; i < NBUF; i++) { free(B->b[i]); B->b[i] = NULL; }
}

static int bufs_get(Bufs *B, int n) {
  for (int i = 0; i < n; i++)
    if (!B->b[i] && !(B->b[i] = malloc(BUFSZ))) return ENOMEM;
  return 0;
}

typedef struct Pipe {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  Bufs *B;
  size_t len[NBUF];
  uint64_t produced, consumed;
  int closed;
  EVP_MD_CTX *ctx;
} Pipe;

static void *hasher_main(void *arg) {
  Pipe *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (p->consumed == p->produced && !p->closed) pthread_cond_wait(&p->cv, &p->mu);
    if (p->consumed == p->produced) {
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    int slot = (int)(p->consumed % NBUF);
    size_t n = p->len[slot];
    pthread_mutex_unlock(&p->mu);
    EVP_DigestUpdate(p->ctx, p->B->b[slot], n);
    pthread_mutex_lock(&p->mu);
    p->consumed++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
  }
}

static int allzero(const unsigned char *b, size_t n) {
  static const unsigned char z[4096];
  while (n >= sizeof z) {
    if (memcmp(b, z, sizeof z) != 0) return 0;
    b += sizeof z;
    n -= sizeof z;
  }
  return memcmp(b, z, n) == 0;
}

/*
** Read size bytes of in, hash them with md, and write them to out (unless
** out < 0). Zero blocks of a sparse source become holes. Files larger than
** THREAD_MIN are hashed by a second thread while the next block is read.
*/
static int hash_copy(int in, int out, uint64_t size, int sparse, const EVP_MD *md, Bufs *B,
                     unsigned char *digest, unsigned *dlen, Prog *prog) {
  int threaded = size > THREAD_MIN;
  int err = bufs_get(B, threaded ? NBUF : 1);
  if (err) return err;
  Pipe p;
  memset(&p, 0, sizeof p);
  p.B = B;
  p.ctx = EVP_MD_CTX_new();
  if (!p.ctx || !EVP_DigestInit_ex(p.ctx, md, NULL)) {
    EVP_MD_CTX_free(p.ctx);
    return ENOMEM;
  }
  pthread_t th;
  if (threaded) {
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    if (pthread_create(&th, NULL, hasher_main, &p) != 0) {
      threaded = 0;
      pthread_mutex_destroy(&p.mu);
      pthread_cond_destroy(&p.cv);
    }
  }
  uint64_t off = 0;
  while (off < size && !err) {
    int slot = 0;
    if (threaded) {
      pthread_mutex_lock(&p.mu);
      while (p.produced - p.consumed >= NBUF) pthread_cond_wait(&p.cv, &p.mu);
      slot = (int)(p.produced % NBUF);
      pthread_mutex_unlock(&p.mu);
    }
    size_t want = size - off > BUFSZ ? BUFSZ : (size_t)(size - off);
    size_t got;
    if ((err = upk_fs_pread_full(in, B->b[slot], want, off, &got)) != 0) break;
    if (got < want) { err = EIO; break; }  /* the source shrank under us */
    if (threaded) {
      pthread_mutex_lock(&p.mu);
      p.len[slot] = got;
      p.produced++;
      pthread_cond_broadcast(&p.cv);
      pthread_mutex_unlock(&p.mu);
    } else {
      EVP_DigestUpdate(p.ctx, B->b[slot], got);
    }
    if (out >= 0 && !(sparse && allzero(B->b[slot], got))) {
      err = upk_fs_pwrite_full(out, B->b[slot], got, off);
      if (!err && (off / BUFSZ) % 8 == 7) upk_fs_start_writeback(out);
    }
    off += got;
    if (!err && prog && prog_tick(prog, off)) err = EINTR;
  }
  if (threaded) {
    pthread_mutex_lock(&p.mu);
    p.closed = 1;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    pthread_join(th, NULL);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
  }
  if (!err && out >= 0 && sparse) err = upk_fs_truncate(out, size);
  if (!err) EVP_DigestFinal_ex(p.ctx, digest, dlen);
  EVP_MD_CTX_free(p.ctx);
  return err;
}

/* ---------------------------------------------------------------------- */
/* One file copy into a temporary file beside its destination              */

typedef struct Job {
  const char *src, *dst;
  const char *link;          /* copy a symbolic link with this target instead */
  int64_t link_mtime;
  const EVP_MD *md;          /* hash in the same pass, or NULL */
  int overwrite, readback, commit, clean;
  /* results */
  uint64_t bytes;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned dlen;
  int err;                   /* errno, or CHECKSUM_MISMATCH */
  const char *step;          /* what failed, for the message */
  char *tmppath;             /* the written temporary file (when !commit) */
} Job;

/* dirname and basename of dst; refuses names ending in '/'. */
static int split(const char *dst, char *dir, size_t size, const char **base) {
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

/* Directory fd cache: consecutive jobs usually share a folder. */
typedef struct DirCache {
  char path[PATH_MAX];
  int fd;
} DirCache;

static int dircache_get(DirCache *dc, const char *dir, int *fd) {
  if (dc->fd >= 0 && strcmp(dc->path, dir) == 0) { *fd = dc->fd; return 0; }
  if (dc->fd >= 0) upk_fs_close(dc->fd);
  dc->fd = -1;
  int err = upk_fs_open_dir(dir, &dc->fd);
  if (err) return err;
  strcpy(dc->path, dir);
  *fd = dc->fd;
  return 0;
}

static int job_fail(Job *j, int err, const char *step) {
  j->err = err;
  j->step = step;
  return err;
}

typedef struct Syncer {
  int fd, err;
} Syncer;

static void *syncer_main(void *arg) {
  Syncer *s = arg;
  s->err = upk_fs_fsync(s->fd);
  return NULL;
}

/* Copy one file (or link) into a temporary name, and commit it when asked. */
static int run_job(Job *j, DirCache *dc, Bufs *B, Prog *prog) {
  char dir[PATH_MAX], tmp[NAME_MAX + 80];
  const char *base;
  int dirfd, in = -1, out = -1, err;
  UpkStat st;
  j->err = 0;
  j->dlen = 0;
  j->bytes = 0;
  if ((err = split(j->dst, dir, sizeof dir, &base)) != 0) return job_fail(j, err, "destination");
  if ((err = dircache_get(dc, dir, &dirfd)) != 0) return job_fail(j, err, "destination folder");
  if (!j->overwrite || j->commit) {
    if (upk_fs_lstat(j->dst, &st) == 0) {
      if (!j->overwrite) return job_fail(j, EEXIST, "destination");
      if (st.type == UPK_FT_DIR) return job_fail(j, EISDIR, "destination");
    }
  }
  if (j->clean) {
    int removed;
    upk_fs_clean_temps(dirfd, &removed);
  }
  if (j->link) {
    for (int tries = 0;; tries++) {
      uint32_t r;
      upk_fs_random(&r, sizeof r);
      snprintf(tmp, sizeof tmp, ".%.*s%s%ld-%08x", 180, base, UPK_TMP_MARK, (long)getpid(), r);
      err = upk_fs_symlinkat(j->link, dirfd, tmp);
      if (err != EEXIST || tries > 16) break;
    }
    if (err) return job_fail(j, err, "symbolic link");
    upk_fs_set_times_at(dirfd, tmp, j->link_mtime);
  } else {
    if ((err = upk_fs_open_read(j->src, &in)) != 0) return job_fail(j, err, "source");
    if ((err = upk_fs_fstat(in, &st)) != 0) { upk_fs_close(in); return job_fail(j, err, "source"); }
    if (st.type != UPK_FT_FILE) {
      upk_fs_close(in);
      return job_fail(j, st.type == UPK_FT_DIR ? EISDIR : EINVAL, "source");
    }
    if ((err = upk_fs_create_temp(dirfd, base, tmp, sizeof tmp, &out)) != 0) {
      upk_fs_close(in);
      return job_fail(j, err, "temporary file");
    }
    int sparse = st.blocks512 * 512 < st.size;
    const char *step = "copy";
    if (j->md) err = hash_copy(in, out, st.size, sparse, j->md, B, j->digest, &j->dlen, prog);
    else err = upk_fs_copy_data(in, out, st.size, sparse, prog ? prog_tick : NULL, prog);
    if (!err) { step = "metadata"; err = upk_fs_set_meta(out, st.mode, st.mtime_ns); }
    /* the fsync runs beside the readback: one waits on the disk, the other hashes */
    Syncer sy = {out, 0};
    pthread_t sth;
    int syncing = !err && j->commit && j->readback && j->md &&
                  pthread_create(&sth, NULL, syncer_main, &sy) == 0;
    if (!err && j->commit && !syncing) { step = "fsync"; err = upk_fs_fsync(out); }
    if (!err && !j->commit && st.size >= THREAD_MIN) upk_fs_start_writeback(out);
    if (!err && j->readback && j->md) {
      int rfd;
      unsigned char again[EVP_MAX_MD_SIZE];
      unsigned alen = 0;
      char tpath[PATH_MAX + NAME_MAX + 80];
      snprintf(tpath, sizeof tpath, "%s/%s", dir, tmp);
      step = "readback";
      if ((err = upk_fs_open_read(tpath, &rfd)) == 0) {
        err = hash_copy(rfd, -1, st.size, 0, j->md, B, again, &alen, NULL);
        upk_fs_close(rfd);
        if (!err && (alen != j->dlen || memcmp(again, j->digest, alen) != 0))
          err = CHECKSUM_MISMATCH;
      }
    }
    if (syncing) {
      pthread_join(sth, NULL);
      if (!err && sy.err) { err = sy.err; step = "fsync"; }
    }
    int cerr = upk_fs_close(out);
    if (!err && cerr) { err = cerr; step = "close"; }
    upk_fs_close(in);
    j->bytes = st.size;
    if (err) {
      upk_fs_unlinkat(dirfd, tmp);
      return job_fail(j, err, step);
    }
  }
  if (j->commit) {
    err = upk_fs_rename(dirfd, tmp, dirfd, base, !j->overwrite);
    if (err) {
      upk_fs_unlinkat(dirfd, tmp);
      return job_fail(j, err, "rename");
    }
    if ((err = upk_fs_fsync(dirfd)) != 0) return job_fail(j, err, "folder fsync");
  } else {
    size_t n = strlen(dir) + strlen(tmp) + 2;
    j->tmppath = malloc(n);
    if (!j->tmppath) {
      upk_fs_unlinkat(dirfd, tmp);
      return job_fail(j, ENOMEM, "copy");
    }
    snprintf(j->tmppath, n, "%s/%s", dir, tmp);
  }
  return 0;
}

/* Push the error object of a failed job: "<fn>: 'src' -> 'dst': <reason>". */
static void push_job_error(lua_State *L, const char *fn, Job *j) {
  const char *src = j->link ? j->link : j->src;
  if (j->err == CHECKSUM_MISMATCH) {
    upk_pusherror(L, "CHECKSUM_MISMATCH",
                  "%s: '%s' -> '%s': the written file does not match the source", fn, src, j->dst);
    return;
  }
  upk_pusherror(L, upk_errno_name(j->err), "%s: '%s' -> '%s': %s: %s", fn, src, j->dst,
                j->step, strerror(j->err));
  upk_seterrno(L, j->err);
}

/*
** fs.copy(src, dst [, opts]) -> { bytes =, seconds =, <alg> = hex }
** opts: overwrite (false), verify (algorithm name), progress (function(bytes)).
*/
static int fs_copy(lua_State *L) {
  static const char *const keys[] = {"overwrite", "verify", "progress", NULL};
  Job j;
  memset(&j, 0, sizeof j);
  j.src = luaL_checkstring(L, 1);
  j.dst = luaL_checkstring(L, 2);
  upk_checkopts(L, 3, "fs.copy", keys);
  j.overwrite = upk_optboolean(L, 3, "fs.copy", "overwrite", 0);
  const char *alg = upk_optstring(L, 3, "fs.copy", "verify", NULL);
  if (alg) j.md = upk_digest_by_name(L, alg, "fs.copy");
  j.readback = j.md != NULL;
  j.commit = 1;
  j.clean = 1;
  int fn = 0;
  if (lua_istable(L, 3) && lua_getfield(L, 3, "progress") != LUA_TNIL) {
    luaL_argexpected(L, lua_isfunction(L, -1), 3, "progress function");
    fn = lua_gettop(L);
  }
  Prog prog;
  prog_init(&prog, L, fn);
  DirCache dc = {.fd = -1};
  Bufs B = {{NULL}};
  double t0 = upk_now();
  int err = run_job(&j, &dc, &B, &prog);
  bufs_free(&B);
  if (dc.fd >= 0) upk_fs_close(dc.fd);
  if (err) {
    prog_raise(&prog, "fs.copy");
    push_job_error(L, "fs.copy", &j);
    return lua_error(L);
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)j.bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushnumber(L, upk_now() - t0);
  lua_setfield(L, -2, "seconds");
  if (alg) {
    pushhex(L, j.digest, j.dlen);
    lua_setfield(L, -2, alg);
  }
  return 1;
}

/*
** fs.copy_batch(items [, opts]) -> results
** items: array of { src =, dst = } or { link = target, dst =, mtime = ns }.
** Writes every item to a temporary file, makes them all durable in one
** pass, then renames them into place (replacing what is there) and makes
** the renames durable. results[i] is { bytes =, <alg> = hex } or
** { code =, message = }. opts: verify (algorithm), readback (with verify:
** read each written file again and compare, CHECKSUM_MISMATCH when it
** differs), progress (function(bytes)), what (name for messages, "fs.mirror").
*/
static int fs_copy_batch(lua_State *L) {
  static const char *const keys[] = {"verify", "readback", "progress", "what", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  upk_checkopts(L, 2, "fs.copy_batch", keys);
  const char *alg = upk_optstring(L, 2, "fs.copy_batch", "verify", NULL);
  int readback = upk_optboolean(L, 2, "fs.copy_batch", "readback", 0);
  const char *what = upk_optstring(L, 2, "fs.copy_batch", "what", "fs.copy_batch");
  const EVP_MD *md = alg ? upk_digest_by_name(L, alg, what) : NULL;
  int fn = 0;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "progress") != LUA_TNIL) {
    luaL_argexpected(L, lua_isfunction(L, -1), 2, "progress function");
    fn = lua_gettop(L);
  }
  lua_Integer n = luaL_len(L, 1);
  /* read every item first: no Lua error can happen once files exist */
  Job *jobs = lua_newuserdatauv(L, sizeof(Job) * (size_t)(n > 0 ? n : 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    Job *j = &jobs[i - 1];
    memset(j, 0, sizeof *j);
    lua_rawgeti(L, 1, i);
    luaL_argexpected(L, lua_istable(L, -1), 1, "array of { src =, dst = } tables");
    lua_getfield(L, -1, "dst");
    j->dst = luaL_checkstring(L, -1);
    lua_getfield(L, -2, "src");
    j->src = lua_tostring(L, -1);
    lua_getfield(L, -3, "link");
    j->link = lua_tostring(L, -1);
    lua_getfield(L, -4, "mtime");
    j->link_mtime = (int64_t)lua_tointeger(L, -1);
    lua_pop(L, 5);  /* strings stay alive in the items table */
    if (!j->src && !j->link) luaL_error(L, "%s: item %d has neither src nor link", what, (int)i);
    j->md = md;
    j->readback = readback && md;
    j->overwrite = 1;
  }
  Prog prog;
  prog_init(&prog, L, fn);
  DirCache dc = {.fd = -1};
  Bufs B = {{NULL}};
  int syncfd = -1;
  uint64_t done = 0;
  int stopped = 0;
  for (lua_Integer i = 0; i < n; i++) {
    Job *j = &jobs[i];
    if (stopped) { job_fail(j, EINTR, "copy"); continue; }
    prog.base = done;
    run_job(j, &dc, &B, &prog);
    done += j->bytes;
    if (j->err == EINTR || prog_tick(&prog, 0)) stopped = 1;
    if (!j->err && syncfd < 0) upk_fs_open_dir(dc.path, &syncfd);
  }
  bufs_free(&B);
  if (dc.fd >= 0) upk_fs_close(dc.fd);
  /* one durability pass for the whole batch, then the renames, then theirs */
  int serr = 0;
  if (syncfd >= 0) serr = upk_fs_syncfs(syncfd);
  for (lua_Integer i = 0; i < n; i++) {
    Job *j = &jobs[i];
    if (!j->tmppath) continue;
    if (!j->err && (stopped || serr)) job_fail(j, stopped ? EINTR : serr, stopped ? "copy" : "sync");
    if (!j->err) {
      int err = upk_fs_rename_path(j->tmppath, j->dst);
      if (err) job_fail(j, err, "rename");
    }
    if (j->err) upk_fs_unlink(j->tmppath);
  }
  if (syncfd >= 0) {
    serr = upk_fs_syncfs(syncfd);
    upk_fs_close(syncfd);
    for (lua_Integer i = 0; i < n && serr; i++)
      if (!jobs[i].err) job_fail(&jobs[i], serr, "sync");
  }
  for (lua_Integer i = 0; i < n; i++) { free(jobs[i].tmppath); jobs[i].tmppath = NULL; }
  if (stopped) prog_raise(&prog, what);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 0; i < n; i++) {
    Job *j = &jobs[i];
    if (j->err) {
      push_job_error(L, what, j);
    } else {
      lua_createtable(L, 0, 2);
      lua_pushinteger(L, (lua_Integer)j->bytes);
      lua_setfield(L, -2, "bytes");
      if (alg && j->dlen) {
        pushhex(L, j->digest, j->dlen);
        lua_setfield(L, -2, alg);
      }
    }
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

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
  if (!upk_fs_is_temp_name(name)) return names_add_all(arg, name);
  int removed;
  if (ns->clean) upk_fs_drop_stale_temp(ns->dirfd, name, &removed);
  return 0;
}

static void names_free(Names *ns) {
  for (size_t i = 0; i < ns->n; i++) free(ns->v[i]);
  free(ns->v);
}

static int cmpname(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *typename_of(int type) {
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
        char cfull[PATH_MAX];
        snprintf(cfull, sizeof cfull, "%s/%s", full, ns.v[i]);
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
    lua_pushstring(L, typename_of(it->type));
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
static int fs_scan(lua_State *L) {
  const char *root = luaL_checkstring(L, 1);
  Walk W = {root, luaL_optstring(L, 3, "fs.scan"), lua_toboolean(L, 2), NULL, 0, 0, 0};
  check_root(L, root, W.fn);
  walk_dir(&W, "");
  if (W.oom) { walk_free(&W); return upk_error(L, "ENOMEM", "%s: '%s': out of memory", W.fn, root); }
  walk_push(L, &W);
  return 2;
}

/* fs.check_dir(path [, fn]): raise unless path is an existing folder */
static int fs_check_dir(lua_State *L) {
  check_root(L, luaL_checkstring(L, 1), luaL_optstring(L, 2, "fs.check_dir"));
  return 0;
}

/*
** fs.scan_pair(src, dst [, fn]) -> src entries, src failures, dst entries, dst failures
** Both trees walked at once (dst in a second thread, its stale temporary
** files removed): a mirror's two scans cost one.
*/
static int fs_scan_pair(lua_State *L) {
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

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

/*
** fs.write(path, data [, mode]) -> bytes
** Atomic: temporary file, fsync, rename, fsync of the folder. mode is an
** integer (default 0644).
*/
static int fs_write(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  unsigned mode = (unsigned)luaL_optinteger(L, 3, 0644);
  char dir[PATH_MAX], tmp[NAME_MAX + 80];
  const char *base;
  const char *step = "destination";
  int dirfd = -1, fd = -1;
  int err = split(path, dir, sizeof dir, &base);
  if (!err) err = upk_fs_open_dir(dir, &dirfd);
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
    else { step = "folder fsync"; err = upk_fs_fsync(dirfd); }
  }
  if (dirfd >= 0) upk_fs_close(dirfd);
  if (err) return upk_errno_error(L, err, "fs.write: '%s': %s", path, step);
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* fs.read(path) -> data */
static int fs_read(lua_State *L) {
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
  lua_pushstring(L, typename_of(st->type));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st->size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (lua_Number)st->mtime_ns / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st->mtime_ns);
  lua_setfield(L, -2, "mtime_ns");
  lua_pushinteger(L, (lua_Integer)st->mode);
  lua_setfield(L, -2, "mode");
}

/*
** fs.stat(path [, follow]) -> { type, size, mtime, mtime_ns, mode } or nil
** when nothing is there. Links are not followed unless follow is true.
*/
static int fs_stat(lua_State *L) {
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
static int fs_mkdirs(lua_State *L) {
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
static int fs_remove(lua_State *L) {
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

/* fs.free(path) -> bytes available on that file system */
static int fs_free(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uint64_t bytes;
  int err = upk_fs_free(path, &bytes);
  if (err) return upk_errno_error(L, err, "fs.free: '%s'", path);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 1;
}

/* fs.tempdir([prefix]) -> path of a fresh private folder under TMPDIR */
static int fs_tempdir(lua_State *L) {
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
static int fs_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  int err = upk_fs_realpath(path, buf, sizeof buf);
  if (err) return upk_errno_error(L, err, "fs.realpath: '%s'", path);
  lua_pushstring(L, buf);
  return 1;
}

/* fs.cwd() -> the current folder */
static int fs_cwd(lua_State *L) {
  char buf[PATH_MAX];
  int err = upk_fs_getcwd(buf, sizeof buf);
  if (err) return upk_errno_error(L, err, "fs.cwd");
  lua_pushstring(L, buf);
  return 1;
}

/* fs.mkdir(path, mode): one folder; raises EEXIST when something is there */
static int fs_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int err = upk_fs_mkdir(path, (unsigned)luaL_optinteger(L, 2, 0755));
  if (err) return upk_errno_error(L, err, "fs.mkdir: '%s'", path);
  return 0;
}

/* fs.setmeta(path, mode, mtime_ns): mode (nil for links) and time, not following links */
static int fs_setmeta(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int err = 0;
  if (!lua_isnil(L, 2)) err = upk_fs_chmod(path, (unsigned)luaL_checkinteger(L, 2));
  if (!err) err = upk_fs_set_times(path, (int64_t)luaL_checkinteger(L, 3));
  if (err) return upk_errno_error(L, err, "fs.setmeta: '%s'", path);
  return 0;
}

/* fs.syncdir(path): make a folder's entries durable */
static int fs_syncdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd;
  int err = upk_fs_open_dir(path, &fd);
  if (!err) {
    err = upk_fs_fsync(fd);
    upk_fs_close(fd);
  }
  if (err) return upk_errno_error(L, err, "fs.syncdir: '%s'", path);
  return 0;
}

static const luaL_Reg fs_funcs[] = {
  {"copy", fs_copy},
  {"copy_batch", fs_copy_batch},
  {"scan", fs_scan},
  {"scan_pair", fs_scan_pair},
  {"check_dir", fs_check_dir},
  {"write", fs_write},
  {"read", fs_read},
  {"stat", fs_stat},
  {"mkdirs", fs_mkdirs},
  {"mkdir", fs_mkdir},
  {"remove", fs_remove},
  {"free", fs_free},
  {"tempdir", fs_tempdir},
  {"realpath", fs_realpath},
  {"cwd", fs_cwd},
  {"setmeta", fs_setmeta},
  {"syncdir", fs_syncdir},
  {NULL, NULL}
};

int luaopen_upkit_fs(lua_State *L) {
  upk_newlib(L, fs_funcs, "fs");
  return 1;
}
