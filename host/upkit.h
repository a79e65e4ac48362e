/*
** upkit.h: what every native module of upkit shares.
** Error objects, handle tracking, option checking, interruption.
*/
#ifndef UPKIT_H
#define UPKIT_H

#include <signal.h>
#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>

#define UPKIT_VERSION "0.1.0"

/* metatable of raised error objects */
#define UPK_ERROR_MT "upkit.Error"

/*
** Push an error object { code = code, message = <formatted> } with the
** upkit.Error metatable. The caller may add fields, then lua_error().
*/
void upk_pusherror(lua_State *L, const char *code, const char *fmt, ...);
void upk_vpusherror(lua_State *L, const char *code, const char *fmt, va_list ap);

/* Push and raise an error object. Never returns. */
int upk_error(lua_State *L, const char *code, const char *fmt, ...);

/*
** Raise an error object for a failed system call: code is the errno's
** name (ENOENT), message is "<formatted>: <strerror>", field errno.
*/
int upk_errno_error(lua_State *L, int err, const char *fmt, ...);

/*
** The code of an errno, as docs/errors.md lists it: "ENOENT" for ENOENT,
** "TIMEOUT" for ETIMEDOUT, "EIO" for an errno the list does not name.
*/
const char *upk_errno_name(int err);
/* Set field errno of the error object on top of the stack. */
void upk_seterrno(lua_State *L, int err);

/*
** luaL_setfuncs/luaL_newlib for native modules: every function but the
** metamethods is wrapped so that lauxlib's plain-string argument errors
** become EINVAL error objects naming "<prefix>.<name>" (prefix "hasher:"
** gives "hasher:name"), and memory errors ENOMEM.
*/
void upk_setfuncs(lua_State *L, const luaL_Reg *l, const char *prefix);
void upk_newlib(lua_State *L, const luaL_Reg *l, const char *prefix);
/*
** Create the metatable tname of a class: its metamethods, and its methods
** (wrapped as by upk_setfuncs) as __index. Leaves the methods table on the stack.
*/
void upk_newclass(lua_State *L, const char *tname, const luaL_Reg *metameth, const luaL_Reg *meth,
                  const char *prefix);

/*
** Open-handle tracking: every native handle calls upk_track when it opens
** and upk_untrack when it closes, so the test runner can assert that no
** handle is left open. tname is the handle's metatable name.
*/
void upk_track(lua_State *L, const void *p, const char *tname);
void upk_untrack(lua_State *L, const void *p);
/* Push an array with the type name of every open handle. */
int upk_open_handles(lua_State *L);

/*
** Raise EINVAL naming the key when the options table at idx (absent or nil
** is fine) has a key that is not in keys (NULL-terminated).
*/
void upk_checkopts(lua_State *L, int idx, const char *fn, const char *const keys[]);

/*
** Options: read field k of the table at idx, or the default when absent.
** A present field of the wrong type raises EINVAL naming fn and k.
*/
lua_Integer upk_optinteger(lua_State *L, int idx, const char *fn, const char *k, lua_Integer def);
lua_Number upk_optnumber(lua_State *L, int idx, const char *fn, const char *k, lua_Number def);
int upk_optboolean(lua_State *L, int idx, const char *fn, const char *k, int def);
const char *upk_optstring(lua_State *L, int idx, const char *fn, const char *k, const char *def);

/* Set by SIGINT; long-running C loops poll it and raise INTERRUPTED. */
extern volatile sig_atomic_t upk_interrupted;
/* Raise INTERRUPTED (clearing the flag) when it is set. */
void upk_check_interrupt(lua_State *L, const char *what);

/* Lower-case hex of n bytes into out (exactly 2n chars, no NUL); returns out + 2n. */
char *upk_hex(const unsigned char *d, size_t n, char *out);
/* The value of hex digit c (either case), or -1. */
static inline int upk_hexval(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Seconds from a monotonic clock. */
double upk_now(void);

#endif
