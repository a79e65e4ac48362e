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

#include "fs_private.h"
#include "digest.h"

#define BUFSZ ((size_t)4 << 20)  /* bytes per pipeline buffer */
#define NBUF 4                   /* pipeline depth */
#define THREAD_MIN (BUFSZ * 2)   /* smaller files are hashed inline */
#define TICK_EVERY 0.2           /* seconds between progress calls */
#define CHECKSUM_MISMATCH (-1)   /* pseudo errno of a failed readback */
#define SOURCE_CHANGED UPK_SOURCE_CHANGED  /* the source changed during the copy (twice: an error) */

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
  p->last = upk_now() - TICK_EVERY;  /* the first block is reported at once */
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
    if (got < want) { err = SOURCE_CHANGED; break; }  /* the source shrank under us */
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

int upk_hash_fd(int fd, uint64_t size, const EVP_MD *md, unsigned char *digest, unsigned *dlen) {
  Bufs B = {{NULL}};
  Prog prog;
  prog_init(&prog, NULL, 0);  /* no progress function: it only stops on Ctrl-C */
  upk_fs_advise_sequential(fd);
  int err = hash_copy(fd, -1, size, 0, md, &B, digest, dlen, &prog);
  bufs_free(&B);
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
  int err;                   /* errno, CHECKSUM_MISMATCH or SOURCE_CHANGED */
  int changed;               /* the source changed during a first attempt (copied again) */
  const char *step;          /* what failed, for the message */
  char *tmppath;             /* the written temporary file (when !commit) */
} Job;

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
  if ((err = upk_fs_split(j->dst, dir, sizeof dir, &base)) != 0) return job_fail(j, err, "destination");
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
      err = upk_fs_temp_name(dirfd, base, tmp, sizeof tmp);
      if (!err) err = upk_fs_symlinkat(j->link, dirfd, tmp);
      if ((err != EEXIST && err != ENOENT) || tries > 16) break;
    }
    if (err) return job_fail(j, err, "symbolic link");
    upk_fs_set_times_at(dirfd, tmp, j->link_mtime);
  } else for (int attempt = 0;; attempt++) {
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
    if (!err || err == SOURCE_CHANGED) {
      /* a torn copy: the source's size or times moved while it was read */
      UpkStat after;
      if (upk_fs_fstat(in, &after) == 0 && (after.size != st.size || after.mtime_ns != st.mtime_ns ||
                                            after.ctime_ns != st.ctime_ns))
        err = SOURCE_CHANGED;
      if (err == SOURCE_CHANGED) {
        upk_fs_close(out);
        upk_fs_close(in);
        upk_fs_unlinkat(dirfd, tmp);
        j->changed = 1;
        if (attempt == 0) continue;
        upk_fs_temp_release(dirfd);
        return job_fail(j, SOURCE_CHANGED, "copy");
      }
    }
    if (!err) { step = "metadata"; err = upk_fs_set_meta(out, &st); }
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
      upk_fs_temp_release(dirfd);
      return job_fail(j, err, step);
    }
    break;
  }
  if (j->commit) {
    err = upk_fs_rename(dirfd, tmp, dirfd, base, !j->overwrite);
    if (err) upk_fs_unlinkat(dirfd, tmp);
    upk_fs_temp_release(dirfd);
    if (err) return job_fail(j, err, "rename");
    if ((err = upk_fs_fsync(dirfd)) != 0) return job_fail(j, err, "folder fsync");
  } else {
    size_t n = strlen(dir) + strlen(tmp) + 2;
    j->tmppath = malloc(n);
    if (!j->tmppath) {
      upk_fs_unlinkat(dirfd, tmp);
      upk_fs_temp_release(dirfd);
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
  if (j->err == SOURCE_CHANGED) {
    upk_pusherror(L, "SOURCE_CHANGED",
                  "%s: '%s' -> '%s': the source changed while it was copied, twice; nothing was written",
                  fn, src, j->dst);
    lua_pushstring(L, src);
    lua_setfield(L, -2, "path");
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
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)j.bytes);
  lua_setfield(L, -2, "bytes");
  lua_pushboolean(L, j.changed);
  lua_setfield(L, -2, "changed");
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
    if (!j->src && !j->link) upk_error(L, "EINVAL", "%s: item %d has neither src nor link", what, (int)i);
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
    /* the private folder goes when empty: once per folder of the batch */
    char *slash = strrchr(j->tmppath, '/');
    *slash = '\0';
    if (i + 1 == n || !jobs[i + 1].tmppath || strncmp(jobs[i + 1].tmppath, j->tmppath, (size_t)(slash - j->tmppath)) != 0)
      upk_fs_rmdir(j->tmppath);
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
      lua_createtable(L, 0, 3);
      lua_pushinteger(L, (lua_Integer)j->bytes);
      lua_setfield(L, -2, "bytes");
      if (j->changed) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "changed");
      }
      if (alg && j->dlen) {
        pushhex(L, j->digest, j->dlen);
        lua_setfield(L, -2, alg);
      }
    }
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
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
  {"temp_path", fs_temp_path},
  {"commit", fs_commit},
  {"discard", fs_discard},
  {"rename", fs_rename},
  {"sync", fs_sync},
  {NULL, NULL}
};

int luaopen_upkit_fs(lua_State *L) {
  upk_newlib(L, fs_funcs, "fs");
  return 1;
}

