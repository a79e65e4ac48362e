/*
** proc.c: upkit._proc, the native half of upkit.proc. Starts programs
** from an argv array (no shell) in their own process group (a job on
** Windows), pumps their pipes through the waits of platform_proc.h,
** captures output up to a limit (keeping the tail), hands lines to
** callbacks, feeds stdin, and kills the whole tree on timeout.
** Options, environment merging, exit-code checks and redaction live in
** lua/upkit/proc.lua.
*/
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform_proc.h"
#include "upkit.h"

#define PROCESS_MT "upkit.proc.Process"
#define READ_CHUNK 65536
#define MAX_LINE ((size_t)1 << 20)   /* a longer line is handed over in pieces */
#define LINGER 5.0                   /* default seconds of reading after the exit (option linger) */
#define LATE_ROUNDS 64               /* looks without waiting once the deadline has passed (see pump) */

/* Output of one stream: a ring holding the last `limit` bytes, and a partial line. */
typedef struct Stream {
  int open;        /* upkit's end of the pipe is open */
  char *ring;
  size_t cap, start, len, limit;
  int truncated;
  char *line;
  size_t llen, lcap;
  int lines;       /* 1: split into lines (callback or :lines()) */
  int capture;     /* 1: keep in the ring */
} Stream;

typedef struct Proc {
  UpkChild *c;
  long pid;
  int reaped, code, sig, timed_out;
  int lingered;    /* the pipes were still held open (by a grandchild) when linger ran out */
  double t0, t_exit, linger;
  int in_open;     /* the stdin pipe is open */
  int in_keep;     /* stdin = { pipe = true }: it stays open for process:write until close_stdin */
  int in_err;      /* why feeding stdin stopped early (EPIPE), or 0 */
  const char *in_data;   /* what is left to write (uservalue 1 keeps the string) */
  size_t in_len, in_off;
  Stream s[2];     /* stdout, stderr */
  int has_cb[2];
  int cberr;       /* registry ref of a callback's error, or LUA_NOREF */
  int open;
  char what[32];
} Proc;

/* ---------------------------------------------------------------------- */
/* Ring buffer and lines                                                   */

static int ring_put(Stream *st, const char *d, size_t n) {
  if (!st->capture) return 0;
  if (st->limit == 0) { st->truncated |= n > 0; return 0; }
  if (n >= st->limit) {
    d += n - st->limit;
    n = st->limit;
    st->start = st->len = 0;
    st->truncated = 1;
  }
  if (st->len + n > st->cap && st->cap < st->limit) {
    size_t cap = st->cap ? st->cap : 65536;
    while (cap < st->len + n && cap < st->limit) cap *= 2;
    if (cap > st->limit) cap = st->limit;
    char *r = malloc(cap);
    if (!r) return ENOMEM;
    for (size_t i = 0; i < st->len; i++) r[i] = st->ring[(st->start + i) % st->cap];
    free(st->ring);
    st->ring = r;
    st->cap = cap;
    st->start = 0;
  }
  if (st->len + n > st->cap) {
    size_t drop = st->len + n - st->cap;
    st->start = (st->start + drop) % st->cap;
    st->len -= drop;
    st->truncated = 1;
  }
  size_t pos = (st->start + st->len) % st->cap;
  size_t first = st->cap - pos < n ? st->cap - pos : n;
  memcpy(st->ring + pos, d, first);
  memcpy(st->ring, d + first, n - first);
  st->len += n;
  return 0;
}

static void push_ring(lua_State *L, Stream *st) {
  luaL_Buffer b;
  size_t first = st->cap - st->start < st->len ? st->cap - st->start : st->len;
  luaL_buffinit(L, &b);
  if (st->len) {
    luaL_addlstring(&b, st->ring + st->start, first);
    luaL_addlstring(&b, st->ring, st->len - first);
  }
  luaL_pushresult(&b);
}

static int line_add(Stream *st, const char *d, size_t n) {
  if (st->llen + n > st->lcap) {
    size_t cap = st->lcap ? st->lcap : 4096;
    while (cap < st->llen + n) cap *= 2;
    char *l = realloc(st->line, cap);
    if (!l) return ENOMEM;
    st->line = l;
    st->lcap = cap;
  }
  memcpy(st->line + st->llen, d, n);
  st->llen += n;
  return 0;
}

/* Length of the first complete line in the partial buffer (with its '\n'), or 0. */
static size_t line_ready(Stream *st, int eof) {
  char *nl = st->llen ? memchr(st->line, '\n', st->llen) : NULL;
  if (nl) return (size_t)(nl - st->line) + 1;
  if (st->llen >= MAX_LINE || (eof && st->llen)) return st->llen;
  return 0;
}

/* Push the first line (without '\n') and remove it from the buffer. */
static void line_pop(lua_State *L, Stream *st, size_t n) {
  size_t keep = n;
  if (keep && st->line[keep - 1] == '\n') keep--;
  if (keep && st->line[keep - 1] == '\r') keep--;
  lua_pushlstring(L, st->line, keep);
  memmove(st->line, st->line + n, st->llen - n);
  st->llen -= n;
}

static void stream_free(Stream *st) {
  st->open = 0;
  free(st->ring);
  free(st->line);
  st->ring = st->line = NULL;
  st->cap = st->len = st->start = st->llen = st->lcap = 0;
}

/* ---------------------------------------------------------------------- */
/* The pump                                                                */

enum { P_DONE, P_LINE, P_WRITTEN, P_TIMEOUT, P_INTERRUPTED, P_CBERROR };
/* What pump waits for: the end (exit and pipes drained), a stdout line, stdin fed. */
enum { W_EXIT, W_LINE, W_WRITTEN };

/* Call the stream's callback with each complete line (idx 2 or 3 of the user values). */
static void run_callbacks(lua_State *L, int ud, Proc *p, int k, int eof) {
  Stream *st = &p->s[k];
  size_t n;
  while (p->cberr == LUA_NOREF && (n = line_ready(st, eof)) > 0) {
    lua_getiuservalue(L, ud, 2 + k);
    line_pop(L, st, n);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) p->cberr = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

static void reap_now(Proc *p) {
  if (p->reaped) return;
  if (upk_child_reap(p->c, 0, &p->code, &p->sig)) {
    p->reaped = 1;
    p->t_exit = upk_now();
  }
}

/* Close upkit's end of stdout (k 0) or stderr (1), handing over a last partial line. */
static void stream_end(lua_State *L, int ud, Proc *p, int k) {
  upk_child_close(p->c, k + 1);
  p->s[k].open = 0;
  if (p->s[k].lines && p->has_cb[k]) run_callbacks(L, ud, p, k, 1);
}

static void stdin_end(Proc *p, int err) {
  if (!p->in_open) return;
  upk_child_close(p->c, 0);
  p->in_open = 0;
  if (p->in_off < p->in_len && !p->in_err) p->in_err = err;
  p->in_data = NULL;
  p->in_len = p->in_off = 0;
}

/* Read what stream k has: its end closes it. */
static void take(lua_State *L, int ud, Proc *p, int k, char *buf) {
  long r = upk_child_read(p->c, k + 1, buf, READ_CHUNK);
  if (r == -EAGAIN || r == -EINTR) return;
  if (r <= 0) {
    stream_end(L, ud, p, k);
    return;
  }
  if (ring_put(&p->s[k], buf, (size_t)r)) p->s[k].truncated = 1;
  if (p->s[k].lines) {
    if (line_add(&p->s[k], buf, (size_t)r)) p->s[k].truncated = 1;
    if (p->has_cb[k]) run_callbacks(L, ud, p, k, 0);
  }
}

/* Write what the pipe takes of the stdin data; done (not kept open) or broken closes it. */
static void feed(Proc *p) {
  long w = upk_child_write(p->c, p->in_data + p->in_off, p->in_len - p->in_off);
  if (w > 0) p->in_off += (size_t)w;
  if (w < 0 && w != -EAGAIN && w != -EINTR) stdin_end(p, (int)-w);
  else if (p->in_off >= p->in_len) {
    p->in_data = NULL;
    p->in_len = p->in_off = 0;
    if (!p->in_keep) stdin_end(p, 0);
  }
}

/*
** Move data until what `until` asks for (W_*: P_DONE when the process has
** ended and its pipes are drained, P_LINE when a stdout line is ready in
** :lines() mode, P_WRITTEN when the stdin data is in the pipe), the deadline
** passes, Ctrl-C arrives, or a callback fails.
** The deadline is looked at only when a look without waiting finds nothing
** to do (at most LATE_ROUNDS such looks after it): so wait(0) on a program
** that has ended reads what it left in the pipes and returns its result.
** The rule for grandchildren: the pipes are read until they close, so a
** background process that inherited them keeps its output and never dies
** of SIGPIPE while it writes; but after the child's exit this goes on for
** at most p->linger seconds (and, when `hard`, never past the deadline).
** Then upkit closes its ends, sets lingered, and returns: a grandchild that
** writes forever cannot hold proc.run.
*/
static int pump(lua_State *L, int ud, Proc *p, double deadline, int until, int hard) {
  char buf[READ_CHUNK];
  int late = 0;
  for (;;) {
    if (p->cberr != LUA_NOREF) return P_CBERROR;
    if (until == W_LINE && line_ready(&p->s[0], !p->s[0].open)) return P_LINE;
    if (until == W_LINE && !p->s[0].open) return P_DONE;
    if (until == W_WRITTEN && (!p->in_open || p->in_off >= p->in_len)) return P_WRITTEN;
    reap_now(p);
    if (until == W_EXIT && p->reaped && !p->s[0].open && !p->s[1].open) return P_DONE;
    if (upk_interrupted) return P_INTERRUPTED;
    double now = upk_now();
    /* after the exit, pipes still held open by grandchildren are read for linger seconds */
    if (p->reaped && (now - p->t_exit >= p->linger || (hard && now >= deadline))) {
      for (int k = 0; k < 2; k++)
        if (p->s[k].open) {
          stream_end(L, ud, p, k);
          p->lingered = 1;
        }
      stdin_end(p, EPIPE);
      continue;
    }
    double wait = deadline - now;
    if (p->reaped) wait = fmin(wait, p->linger - (now - p->t_exit));
    int ms = wait <= 0 ? 0 : wait > 1e6 ? 1000000 : (int)ceil(wait * 1000);
    if (now >= deadline && ++late > LATE_ROUNDS) return P_TIMEOUT;
    int want = (p->s[0].open ? UPK_EV_STDOUT : 0) | (p->s[1].open ? UPK_EV_STDERR : 0) |
               (p->in_open && p->in_off < p->in_len ? UPK_EV_STDIN : 0) | (p->reaped ? 0 : UPK_EV_EXIT);
    int ev = upk_child_wait(p->c, want, ms);
    if (ev == -EINTR) continue;
    if (ev < 0) return P_DONE;
    if (ev == 0 && now >= deadline) return P_TIMEOUT;
    for (int k = 0; k < 2; k++)
      if (ev & (k == 0 ? UPK_EV_STDOUT : UPK_EV_STDERR)) take(L, ud, p, k, buf);
    if (ev & UPK_EV_STDIN) feed(p);
  }
}

/* A signal's number from "TERM", "SIGTERM" (-1 when unknown), and its name from the number (or NULL). */
static int signum(const char *name) {
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (int i = 0; upk_proc_signals[i].name; i++)
    if (strcmp(upk_proc_signals[i].name, name) == 0) return upk_proc_signals[i].sig;
  return -1;
}

static const char *signame(int sig) {
  for (int i = 0; upk_proc_signals[i].name; i++)
    if (upk_proc_signals[i].sig == sig) return upk_proc_signals[i].name;
  return NULL;
}

/* End the tree: SIGTERM, then SIGKILL after grace seconds, and reap. */
static void terminate(lua_State *L, int ud, Proc *p, double grace) {
  if (p->reaped) return;
  upk_child_kill(p->c, SIGTERM);
  int saved = upk_interrupted;
  upk_interrupted = 0;
  pump(L, ud, p, upk_now() + grace, W_EXIT, 1);
  if (!p->reaped) {
    upk_child_kill(p->c, SIGKILL);
    upk_interrupted = 0;
    pump(L, ud, p, upk_now() + 5, W_EXIT, 1);
    if (!p->reaped) {
      upk_child_reap(p->c, 1, &p->code, &p->sig);
      p->reaped = 1;
    }
  }
  upk_interrupted = saved;
}

/* ---------------------------------------------------------------------- */
/* Handles                                                                 */

static void release(Proc *p) {
  if (!p->open) return;
  upk_child_free(p->c);  /* kills the tree if the child still runs */
  p->c = NULL;
  p->reaped = 1;
  p->in_open = 0;
  p->in_data = NULL;
  stream_free(&p->s[0]);
  stream_free(&p->s[1]);
  p->open = 0;
}

static Proc *checkproc(lua_State *L) {
  return luaL_checkudata(L, 1, PROCESS_MT);
}

static Proc *checkopen(lua_State *L, const char *fn) {
  Proc *p = checkproc(L);
  if (!p->open) upk_error(L, "CLOSED", "%s: the process handle is closed", fn);
  return p;
}

static void push_result(lua_State *L, Proc *p) {
  lua_createtable(L, 0, 9);
  if (p->sig) {
    lua_pushinteger(L, p->sig);
    lua_setfield(L, -2, "signal");
    const char *name = signame(p->sig);
    if (name) { lua_pushstring(L, name); lua_setfield(L, -2, "signal_name"); }
  } else {
    lua_pushinteger(L, p->code);
    lua_setfield(L, -2, "code");
  }
  push_ring(L, &p->s[0]);
  lua_setfield(L, -2, "stdout");
  push_ring(L, &p->s[1]);
  lua_setfield(L, -2, "stderr");
  lua_pushboolean(L, p->s[0].truncated);
  lua_setfield(L, -2, "stdout_truncated");
  lua_pushboolean(L, p->s[1].truncated);
  lua_setfield(L, -2, "stderr_truncated");
  lua_pushnumber(L, (p->t_exit ? p->t_exit : upk_now()) - p->t0);
  lua_setfield(L, -2, "seconds");
  lua_pushboolean(L, p->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushboolean(L, p->lingered);
  lua_setfield(L, -2, "lingered");
  lua_pushinteger(L, p->pid);
  lua_setfield(L, -2, "pid");
}

/* Raise the callback's error, or INTERRUPTED, after the group is gone. */
static void finish_abnormal(lua_State *L, Proc *p, int r) {
  if (r == P_CBERROR) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->cberr);
    luaL_unref(L, LUA_REGISTRYINDEX, p->cberr);
    p->cberr = LUA_NOREF;
    lua_error(L);
  }
  upk_interrupted = 1;
  upk_check_interrupt(L, p->what);
}

/*
** process:wait([timeout [, grace]]) -> result, or nil when timeout passes
** (wait(0) on a program that has ended returns its result: pump reads what
** is left in the pipes first). With grace (as proc.run does), a timeout ends
** the process group instead: SIGTERM, SIGKILL after grace seconds, and the
** result says timed_out; the timeout then also bounds the linger.
*/
static int proc_wait(lua_State *L) {
  Proc *p = checkopen(L, "process:wait");
  double timeout = luaL_optnumber(L, 2, HUGE_VAL);
  int kill_on_timeout = !lua_isnoneornil(L, 3);
  double grace = luaL_optnumber(L, 3, 5);
  double deadline = upk_now() + (timeout < 0 ? 0 : timeout);
  int r = pump(L, 1, p, deadline, W_EXIT, kill_on_timeout);
  if (r == P_TIMEOUT && !kill_on_timeout) {
    lua_pushnil(L);
    return 1;
  }
  if (r == P_TIMEOUT) p->timed_out = 1;
  if (r != P_DONE) terminate(L, 1, p, r == P_TIMEOUT ? grace : fmin(grace, 2));
  if (r == P_INTERRUPTED || r == P_CBERROR) finish_abnormal(L, p, r);
  if (p->has_cb[0]) run_callbacks(L, 1, p, 0, 1);
  if (p->has_cb[1]) run_callbacks(L, 1, p, 1, 1);
  if (p->cberr != LUA_NOREF) finish_abnormal(L, p, P_CBERROR);
  push_result(L, p);
  return 1;
}

/* process:read_line([timeout]) -> next stdout line, nil at the end (false on timeout) */
static int proc_read_line(lua_State *L) {
  Proc *p = checkopen(L, "process:lines");
  Stream *st = &p->s[0];
  if (!st->lines || p->has_cb[0])
    return upk_error(L, "EINVAL", "process:lines: stdout is not a pipe read by lines");
  double deadline = upk_now() + luaL_optnumber(L, 2, HUGE_VAL);
  int r = pump(L, 1, p, deadline, W_LINE, 0);
  if (r == P_INTERRUPTED || r == P_CBERROR) {
    terminate(L, 1, p, 2);
    finish_abnormal(L, p, r);
  }
  size_t n = line_ready(st, !st->open);
  if (n) line_pop(L, st, n);
  else if (r == P_TIMEOUT) lua_pushboolean(L, 0);
  else lua_pushnil(L);
  return 1;
}

static int lines_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(2));
  proc_read_line(L);
  if (lua_isboolean(L, -1))
    return upk_error(L, "TIMEOUT", "process:lines: no line within %f s", lua_tonumber(L, 2));
  return 1;
}

/* process:lines([timeout]) -> iterator over stdout lines; TIMEOUT when one takes longer */
static int proc_lines(lua_State *L) {
  checkopen(L, "process:lines");
  lua_settop(L, 2);
  lua_pushcclosure(L, lines_next, 2);
  return 1;
}

/* process:kill([signal]) -> true when sent; signal is "TERM", "SIGKILL" or a number */
static int proc_kill(lua_State *L) {
  Proc *p = checkopen(L, "process:kill");
  int sig = SIGTERM;
  if (lua_type(L, 2) == LUA_TSTRING) {
    sig = signum(lua_tostring(L, 2));
    if (sig < 0) return upk_error(L, "EINVAL", "process:kill: unknown signal '%s'", lua_tostring(L, 2));
  } else if (!lua_isnoneornil(L, 2)) {
    sig = (int)luaL_checkinteger(L, 2);
  }
  reap_now(p);
  if (p->reaped) {
    lua_pushboolean(L, 0);
    return 1;
  }
  int err = upk_child_kill(p->c, sig);
  if (err) return upk_errno_error(L, err, "process:kill: pid %d", (int)p->pid);
  lua_pushboolean(L, 1);
  return 1;
}

/*
** process:write(s [, timeout]) -> true once s is in the stdin pipe (stdin =
** { pipe = true }); false and the bytes taken when timeout passes first.
** The output pipes are read meanwhile (a program writing its stdout while
** upkit writes its stdin cannot deadlock). EPIPE when the program no longer
** reads its stdin, CLOSED after process:close_stdin().
*/
static int proc_write(lua_State *L) {
  Proc *p = checkopen(L, "process:write");
  size_t len;
  luaL_checklstring(L, 2, &len);
  double timeout = luaL_optnumber(L, 3, HUGE_VAL);
  if (!p->in_keep)
    return upk_error(L, "EINVAL", "process:write: stdin is not a pipe (spawn with stdin = { pipe = true })");
  if (!p->in_open) {
    if (p->in_err)
      return upk_errno_error(L, p->in_err, "process:write: pid %d no longer reads its stdin", (int)p->pid);
    return upk_error(L, "CLOSED", "process:write: stdin is closed");
  }
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);  /* keeps the string while it is written */
  lua_getiuservalue(L, 1, 1);
  p->in_data = lua_tostring(L, -1);
  p->in_len = len;
  p->in_off = 0;
  int r = pump(L, 1, p, upk_now() + (timeout < 0 ? 0 : timeout), W_WRITTEN, 0);
  if (r == P_INTERRUPTED || r == P_CBERROR) {
    terminate(L, 1, p, 2);
    finish_abnormal(L, p, r);
  }
  size_t done = p->in_off;
  int err = p->in_err;
  p->in_data = NULL;
  p->in_len = p->in_off = 0;
  if (r == P_TIMEOUT) {
    lua_pushboolean(L, 0);
    lua_pushinteger(L, (lua_Integer)done);
    return 2;
  }
  if (err) return upk_errno_error(L, err, "process:write: pid %d no longer reads its stdin", (int)p->pid);
  lua_pushboolean(L, 1);
  return 1;
}

/* process:close_stdin(): the program sees the end of its input after what was written; idempotent */
static int proc_close_stdin(lua_State *L) {
  stdin_end(checkopen(L, "process:close_stdin"), 0);
  return 0;
}

/* process:pid() -> number */
static int proc_pid(lua_State *L) {
  Proc *p = checkproc(L);
  lua_pushinteger(L, p->pid);
  return 1;
}

/* process:running() -> boolean */
static int proc_running(lua_State *L) {
  Proc *p = checkproc(L);
  if (p->open) reap_now(p);
  lua_pushboolean(L, p->open && !p->reaped);
  return 1;
}

/* process:close(): kills the group with SIGKILL if still running, reaps; idempotent */
static int proc_close(lua_State *L) {
  Proc *p = checkproc(L);
  if (p->open) {
    release(p);
    if (p->cberr != LUA_NOREF) {
      luaL_unref(L, LUA_REGISTRYINDEX, p->cberr);
      p->cberr = LUA_NOREF;
    }
    upk_untrack(L, p);
  }
  return 0;
}

static int proc_tostring(lua_State *L) {
  Proc *p = checkproc(L);
  lua_pushfstring(L, "upkit.proc.Process (pid %d, %s)", (int)p->pid,
                  !p->open ? "closed" : p->reaped ? "ended" : "running");
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Spawning                                                                */

/* Array of the strings in table idx, NULL-terminated (pointers into Lua strings). */
static char **string_array(lua_State *L, int idx, const char *fn, const char *what) {
  lua_Integer n = luaL_len(L, idx);
  char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      upk_error(L, "EINVAL", "%s: %s[%d] must be a string, got %s", fn, what, (int)i, luaL_typename(L, -1));
    v[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);  /* the table keeps the string alive */
  }
  v[n] = NULL;
  return v;
}

static int stream_mode(lua_State *L, int opts, const char *k, const char *fn) {
  const char *m = upk_optstring(L, opts, fn, k, "pipe");
  if (strcmp(m, "pipe") == 0) return 0;
  if (strcmp(m, "null") == 0) return 1;
  if (strcmp(m, "inherit") == 0) return 2;
  return upk_error(L, "EINVAL", "%s: option '%s' must be \"pipe\", \"null\" or \"inherit\"", fn, k);
}

/*
** proc.spawn(argv, opts) -> process
** opts: cwd, env (array of "K=V", replaces the environment), stdin (string,
** { file = path }, or { pipe = true }: open for process:write until
** process:close_stdin), stdout/stderr ("pipe", "null", "inherit"),
** capture_limit (bytes per stream), on_stdout/on_stderr (line callbacks),
** lines (stdout is read with :lines()), what (name for messages), linger
** (seconds the pipes are still read after the exit, default 5: see pump).
*/
static int proc_spawn(lua_State *L) {
  static const char *const keys[] = {"cwd", "env", "stdin", "stdout", "stderr", "capture_limit",
                                     "on_stdout", "on_stderr", "lines", "what", "linger", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  upk_checkopts(L, 2, "proc.spawn", keys);
  const char *fn = upk_optstring(L, 2, "proc.spawn", "what", "proc.spawn");
  if (luaL_len(L, 1) < 1) return upk_error(L, "EINVAL", "%s: argv is empty", fn);
  char **argv = string_array(L, 1, fn, "argv");
  char **envp = NULL;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "env") == LUA_TTABLE) {
    envp = string_array(L, lua_gettop(L), fn, "env");
  }
  const char *cwd = upk_optstring(L, 2, fn, "cwd", NULL);
  lua_Integer limit = upk_optinteger(L, 2, fn, "capture_limit", (lua_Integer)64 << 20);
  if (limit < 0) return upk_error(L, "EINVAL", "%s: capture_limit must be >= 0", fn);
  int lines = upk_optboolean(L, 2, fn, "lines", 0);
  double linger = upk_optnumber(L, 2, fn, "linger", LINGER);
  if (!(linger >= 0)) return upk_error(L, "EINVAL", "%s: linger must be >= 0", fn);
  int mode[2] = {stream_mode(L, 2, "stdout", fn), stream_mode(L, 2, "stderr", fn)};
  int cbs[2] = {0, 0};
  static const char *const cbkeys[2] = {"on_stdout", "on_stderr"};
  for (int k = 0; k < 2; k++) {
    if (lua_istable(L, 2) && lua_getfield(L, 2, cbkeys[k]) != LUA_TNIL) {
      if (!lua_isfunction(L, -1)) return upk_error(L, "EINVAL", "%s: option '%s' must be a function", fn, cbkeys[k]);
      if (mode[k] != 0) return upk_error(L, "EINVAL", "%s: '%s' needs the stream to be a pipe", fn, cbkeys[k]);
      cbs[k] = lua_gettop(L);
    } else lua_pop(L, 1);
  }
  int stdin_str = 0, stdin_pipe = 0;
  const char *stdin_file = NULL;
  if (lua_istable(L, 2)) {
    int t = lua_getfield(L, 2, "stdin");
    if (t == LUA_TSTRING) stdin_str = lua_gettop(L);
    else if (t == LUA_TTABLE) {
      lua_getfield(L, -1, "file");
      stdin_file = lua_tostring(L, -1);
      lua_getfield(L, -2, "pipe");
      stdin_pipe = lua_toboolean(L, -1);
      if (!stdin_file == !stdin_pipe)
        return upk_error(L, "EINVAL", "%s: option 'stdin' must be a string, { file = path } or { pipe = true }", fn);
      lua_pop(L, 1);  /* the stdin table (below) keeps the file name */
    } else if (t != LUA_TNIL) {
      return upk_error(L, "EINVAL", "%s: option 'stdin' must be a string, { file = path } or { pipe = true }", fn);
    } else lua_pop(L, 1);
  }
  Proc *p = lua_newuserdatauv(L, sizeof *p, 3);
  int ud = lua_gettop(L);
  memset(p, 0, sizeof *p);
  p->cberr = LUA_NOREF;
  p->linger = linger;
  snprintf(p->what, sizeof p->what, "%s", fn);
  luaL_setmetatable(L, PROCESS_MT);
  UpkSpawn s = {argv, envp, cwd, {UPK_STDIO_NULL, UPK_STDIO_NULL, UPK_STDIO_NULL}, stdin_file};
  if (stdin_str || stdin_pipe) s.stdio[0] = UPK_STDIO_PIPE;
  else if (stdin_file) s.stdio[0] = UPK_STDIO_FILE;
  for (int k = 0; k < 2; k++) {
    Stream *st = &p->s[k];
    st->limit = (size_t)limit;
    st->capture = !(k == 0 && lines);
    st->lines = cbs[k] != 0 || (k == 0 && lines);
    p->has_cb[k] = cbs[k] != 0;
    s.stdio[k + 1] = mode[k] == 0 ? UPK_STDIO_PIPE : mode[k] == 2 ? UPK_STDIO_INHERIT : UPK_STDIO_NULL;
  }
  int stage = 0;
  p->t0 = upk_now();
  int err = upk_child_spawn(&s, &p->c, &stage);
  if (err) {
    char here[PATH_MAX];
    if (stage == UPK_SPAWN_STDIN)
      return upk_errno_error(L, err, "%s: '%s': stdin file '%s'", fn, argv[0], stdin_file);
    if (!cwd) cwd = getcwd(here, sizeof here) ? here : "?";
    if (stage == UPK_SPAWN_CHDIR)
      return upk_errno_error(L, err, "%s: cannot start '%s': folder '%s'", fn, argv[0], cwd);
    return upk_errno_error(L, err, "%s: cannot start '%s' in '%s'", fn, argv[0], cwd);
  }
  /* no Lua error may happen from here until the handle is tracked */
  p->open = 1;
  p->pid = upk_child_pid(p->c);
  for (int k = 0; k < 2; k++) p->s[k].open = mode[k] == 0;
  p->in_open = stdin_str || stdin_pipe;
  p->in_keep = stdin_pipe;
  if (stdin_str) {
    size_t len;
    p->in_data = lua_tolstring(L, stdin_str, &len);
    p->in_len = len;
    lua_pushvalue(L, stdin_str);
    lua_setiuservalue(L, ud, 1);
    if (len == 0) stdin_end(p, 0);
  }
  for (int k = 0; k < 2; k++)
    if (cbs[k]) {
      lua_pushvalue(L, cbs[k]);
      lua_setiuservalue(L, ud, 2 + k);
    }
  upk_track(L, p, PROCESS_MT);
  lua_pushvalue(L, ud);
  return 1;
}

/* proc.environ() -> { "K=V", ... } the inherited environment */
static int proc_environ(lua_State *L) {
  char **e = upk_proc_environ();
  lua_newtable(L);
  for (int i = 0; e && e[i]; i++) {
    lua_pushstring(L, e[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int proc_gc(lua_State *L) {
  return proc_close(L);
}

static const luaL_Reg proc_meth[] = {
  {"wait", proc_wait},
  {"read_line", proc_read_line},
  {"lines", proc_lines},
  {"kill", proc_kill},
  {"write", proc_write},
  {"close_stdin", proc_close_stdin},
  {"pid", proc_pid},
  {"running", proc_running},
  {"close", proc_close},
  {NULL, NULL}
};

static const luaL_Reg proc_metameth[] = {
  {"__index", NULL},
  {"__gc", proc_gc},
  {"__close", proc_gc},
  {"__tostring", proc_tostring},
  {NULL, NULL}
};

/* proc.which(name) -> the program file proc.spawn would start for name, or nil */
static int proc_which(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  int err = upk_proc_which(name, buf, sizeof buf);
  if (err == ENOENT) {
    lua_pushnil(L);
    return 1;
  }
  if (err) return upk_errno_error(L, err, "proc.which: '%s'", name);
  lua_pushstring(L, buf);
  return 1;
}

static const luaL_Reg proc_funcs[] = {
  {"spawn", proc_spawn},
  {"which", proc_which},
  {"environ", proc_environ},
  {NULL, NULL}
};

int luaopen_upkit_proc(lua_State *L) {
  upk_proc_ignore_sigpipe();
  upk_newclass(L, PROCESS_MT, proc_metameth, proc_meth, "process:");
  lua_pop(L, 1);
  upk_newlib(L, proc_funcs, "proc");
  return 1;
}
