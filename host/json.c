/*
** json.c: upkit.json, a strict RFC 8259 decoder and a stable encoder.
**   json.decode(text [, { escape_bytes = bool }]) -> value
**   json.encode(value [, { pretty = bool, escape_bytes = bool }]) -> text
**   json.null                       the null sentinel (also sql.null)
**   json.array(t), json.object(t)   mark a table's JSON kind (for empty tables)
**   json.kind(t)                    "array" | "object" | nil
** Decoding is exact and strict: strings keep every byte (\u0000 included);
** anything RFC 8259 does not allow (a byte order mark, control bytes as
** white space or raw inside strings, 01, 1., -.5, +1, trailing commas,
** NaN, invalid escapes, invalid UTF-8, trailing data) raises BAD_JSON with
** field offset (0-based byte offset) and the offset in the message.
** Decisions where the RFC leaves a choice: a \u escape of a lone surrogate
** is refused (nothing could encode it back as UTF-8); a number too large
** for a double (1e400) is refused; duplicate keys: the last one wins;
** nesting is limited to 1000 levels.
** escape_bytes makes arbitrary byte strings lossless: encode writes each
** byte of a string that is not part of valid UTF-8 as \udcXX (XX = the
** byte, 80 to ff: the lone low surrogates U+DC80..U+DCFF, as Python's
** "surrogateescape"), and decode with the option turns such a lone
** surrogate back into its byte. Without the option encode refuses such a
** string (EINVAL) and decode refuses lone surrogates.
** Decoded integers within 64 bits are Lua integers; other numbers are
** floats, and a float with an integral value up to 2^53 becomes an integer.
** Decoded arrays and objects carry the marks, so an empty one round-trips.
** Keys are encoded sorted, so output is stable.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upkit.h"

#define ARRAY_MT "upkit.json.array"
#define OBJECT_MT "upkit.json.object"
#define BOX_MT "upkit.json.Buffer"
#define MAX_DEPTH 1000
#define EXACT_INT (9007199254740992.0)  /* 2^53 */

/*
** Length of the valid UTF-8 sequence at s[0..n), or 0 when s does not
** start one (overlong forms, surrogates and code points past U+10FFFF are
** invalid). s[0] >= 0x80.
*/
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0], cp;
  size_t len;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
  else return 0;
  if (len > n) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

static char *put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) *o++ = (char)cp;
  else if (cp < 0x800) {
    *o++ = (char)(0xC0 | (cp >> 6));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18));
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* ---------------------------------------------------------------------- */
/* Decoding                                                                */

typedef struct Dec {
  lua_State *L;
  const unsigned char *s;
  size_t n, pos;
  int escape_bytes;
  int scratch;      /* stack index of the scratch userdata */
  size_t scap;      /* its size */
} Dec;

static int dec_fail(Dec *d, size_t at, const char *what) {
  upk_pusherror(d->L, "BAD_JSON", "json.decode: %s at offset %d", what, (int)at);
  lua_pushinteger(d->L, (lua_Integer)at);
  lua_setfield(d->L, -2, "offset");
  return lua_error(d->L);
}

static void skip_ws(Dec *d) {
  while (d->pos < d->n) {
    unsigned char c = d->s[d->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    d->pos++;
  }
}

static char *scratch(Dec *d, size_t need) {
  if (need > d->scap) {
    lua_newuserdatauv(d->L, need, 0);
    lua_replace(d->L, d->scratch);
    d->scap = need;
  }
  return lua_touserdata(d->L, d->scratch);
}

static int hex4(const unsigned char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = upk_hexval(p[i]);
    if (h < 0) return 0;
    v = v << 4 | (unsigned)h;
  }
  *out = v;
  return 1;
}

/* Push the string starting at the opening quote at d->pos. */
static void dec_string(Dec *d) {
  const unsigned char *s = d->s;
  size_t start = ++d->pos, i = start;
  int escaped = 0;
  /* first pass: validate and find the end */
  for (;;) {
    if (i >= d->n) dec_fail(d, start - 1, "unterminated string");
    unsigned c = s[i];
    if (c == '"') break;
    if (c < 0x20) dec_fail(d, i, "raw control character in a string");
    if (c == '\\') {
      escaped = 1;
      if (i + 1 >= d->n) dec_fail(d, start - 1, "unterminated string");
      unsigned e = s[i + 1];
      if (e == 'u') {
        unsigned cp;
        if (i + 6 > d->n || !hex4(s + i + 2, &cp)) dec_fail(d, i, "invalid \\u escape");
        i += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo;
          if (i + 6 <= d->n && s[i] == '\\' && s[i + 1] == 'u' && hex4(s + i + 2, &lo) &&
              lo >= 0xDC00 && lo <= 0xDFFF) {
            i += 6;
            continue;
          }
          dec_fail(d, i - 6, "lone surrogate in a \\u escape");
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF && !(d->escape_bytes && cp >= 0xDC80 && cp <= 0xDCFF))
          dec_fail(d, i - 6, "lone surrogate in a \\u escape");
        continue;
      }
      if (!strchr("\"\\/bfnrt", (int)e) || e == 0) dec_fail(d, i, "invalid escape");
      i += 2;
      continue;
    }
    if (c < 0x80) { i++; continue; }
    size_t len = utf8_seq(s + i, d->n - i);
    if (!len) dec_fail(d, i, "invalid UTF-8 in a string");
    i += len;
  }
  d->pos = i + 1;
  if (!escaped) {
    lua_pushlstring(d->L, (const char *)s + start, i - start);
    return;
  }
  /* second pass: decode escapes (the result is never longer than the source) */
  char *out = scratch(d, i - start), *o = out;
  for (size_t k = start; k < i;) {
    if (s[k] != '\\') { *o++ = (char)s[k++]; continue; }
    unsigned e = s[k + 1];
    k += 2;
    switch (e) {
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        hex4(s + k, &cp);
        k += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          hex4(s + k + 2, &lo);
          k += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC80 && cp <= 0xDCFF) {
          *o++ = (char)(cp - 0xDC00);  /* escape_bytes: the byte itself */
          break;
        }
        o = put_utf8(o, cp);
        break;
      }
      default: *o++ = (char)e; break;
    }
  }
  lua_pushlstring(d->L, out, (size_t)(o - out));
}

static void dec_number(Dec *d) {
  const unsigned char *s = d->s;
  size_t start = d->pos, i = start;
  if (i < d->n && s[i] == '-') i++;
  if (i >= d->n || s[i] < '0' || s[i] > '9') dec_fail(d, start, "invalid number");
  if (s[i] == '0') {
    i++;
    if (i < d->n && s[i] >= '0' && s[i] <= '9') dec_fail(d, start, "leading zero in a number");
  } else {
    while (i < d->n && s[i] >= '0' && s[i] <= '9') i++;
  }
  if (i < d->n && s[i] == '.') {
    i++;
    if (i >= d->n || s[i] < '0' || s[i] > '9') dec_fail(d, start, "no digit after the decimal point");
    while (i < d->n && s[i] >= '0' && s[i] <= '9') i++;
  }
  if (i < d->n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < d->n && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= d->n || s[i] < '0' || s[i] > '9') dec_fail(d, start, "no digit in the exponent");
    while (i < d->n && s[i] >= '0' && s[i] <= '9') i++;
  }
  d->pos = i;
  size_t len = i - start;
  char small[64];
  char *buf = len < sizeof small ? small : scratch(d, len + 1);
  memcpy(buf, s + start, len);
  buf[len] = '\0';
  /* Lua's own conversion: integers stay exact, floats follow the locale-independent rules */
  if (lua_stringtonumber(d->L, buf) == 0) dec_fail(d, start, "invalid number");
  if (lua_isinteger(d->L, -1)) return;
  double v = lua_tonumber(d->L, -1);
  if (!isfinite(v)) dec_fail(d, start, "number out of range");
  if (v == floor(v) && fabs(v) <= EXACT_INT) {
    lua_pop(d->L, 1);
    lua_pushinteger(d->L, (lua_Integer)v);
  }
}

static void dec_literal(Dec *d, const char *word) {
  size_t len = strlen(word);
  if (d->n - d->pos < len || memcmp(d->s + d->pos, word, len) != 0)
    dec_fail(d, d->pos, "invalid literal");
  d->pos += len;
}

static void dec_value(Dec *d, int depth);

static void dec_container(Dec *d, int depth, int object) {
  lua_State *L = d->L;
  size_t open = d->pos;
  if (depth >= MAX_DEPTH) dec_fail(d, open, "nesting deeper than 1000");
  if (!lua_checkstack(L, 8)) dec_fail(d, open, "nesting too deep for the stack");
  char close = object ? '}' : ']';
  d->pos++;
  lua_newtable(L);
  luaL_setmetatable(L, object ? OBJECT_MT : ARRAY_MT);
  skip_ws(d);
  if (d->pos < d->n && d->s[d->pos] == (unsigned char)close) { d->pos++; return; }
  lua_Integer i = 0;
  for (;;) {
    skip_ws(d);
    if (d->pos >= d->n) dec_fail(d, d->n, "unexpected end of input");
    if (object) {
      if (d->s[d->pos] != '"') dec_fail(d, d->pos, "expected a string key");
      dec_string(d);
      skip_ws(d);
      if (d->pos >= d->n) dec_fail(d, d->n, "unexpected end of input");
      if (d->s[d->pos] != ':') dec_fail(d, d->pos, "expected ':'");
      d->pos++;
      dec_value(d, depth + 1);
      lua_rawset(L, -3);
    } else {
      dec_value(d, depth + 1);
      lua_rawseti(L, -2, ++i);
    }
    skip_ws(d);
    if (d->pos >= d->n) dec_fail(d, d->n, "unexpected end of input");
    unsigned char c = d->s[d->pos];
    if (c == (unsigned char)close) { d->pos++; return; }
    if (c != ',') dec_fail(d, d->pos, object ? "expected ',' or '}'" : "expected ',' or ']'");
    d->pos++;
    skip_ws(d);
    if (d->pos < d->n && d->s[d->pos] == (unsigned char)close) dec_fail(d, d->pos, "trailing comma");
  }
}

static void dec_value(Dec *d, int depth) {
  skip_ws(d);
  if (d->pos >= d->n) dec_fail(d, d->n, "unexpected end of input");
  switch (d->s[d->pos]) {
    case '{': dec_container(d, depth, 1); break;
    case '[': dec_container(d, depth, 0); break;
    case '"': dec_string(d); break;
    case 't': dec_literal(d, "true"); lua_pushboolean(d->L, 1); break;
    case 'f': dec_literal(d, "false"); lua_pushboolean(d->L, 0); break;
    case 'n': dec_literal(d, "null"); lua_pushlightuserdata(d->L, NULL); break;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9': dec_number(d); break;
    default:
      if (d->pos == 0 && d->n >= 3 && memcmp(d->s, "\xEF\xBB\xBF", 3) == 0)
        dec_fail(d, 0, "byte order mark");
      dec_fail(d, d->pos, "unexpected character");
  }
}

/*
** json.decode(text [, { escape_bytes = false }]) -> value
*/
static int json_decode(lua_State *L) {
  static const char *const keys[] = {"escape_bytes", NULL};
  if (lua_type(L, 1) != LUA_TSTRING)
    return upk_error(L, "EINVAL", "json.decode: the text must be a string, got %s", luaL_typename(L, 1));
  upk_checkopts(L, 2, "json.decode", keys);
  Dec d;
  memset(&d, 0, sizeof d);
  d.L = L;
  d.escape_bytes = upk_optboolean(L, 2, "json.decode", "escape_bytes", 0);
  d.s = (const unsigned char *)lua_tolstring(L, 1, &d.n);
  lua_settop(L, 2);
  lua_pushnil(L);  /* scratch slot */
  d.scratch = lua_gettop(L);
  dec_value(&d, 0);
  skip_ws(&d);
  if (d.pos < d.n) dec_fail(&d, d.pos, "unexpected data after the value");
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Encoding                                                                */

/* The output buffer: a userdata whose __gc frees it, so a raise never leaks. */
typedef struct Box {
  char *p;
  size_t n, cap;
} Box;

static int box_gc(lua_State *L) {
  Box *b = lua_touserdata(L, 1);
  free(b->p);
  b->p = NULL;
  return 0;
}

typedef struct Enc {
  lua_State *L;
  Box *b;
  int cycles;        /* index of the table of tables being visited */
  int pretty, escape_bytes;
  char err[256];
} Enc;

static int put(Enc *e, const char *s, size_t n) {
  Box *b = e->b;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) { snprintf(e->err, sizeof e->err, "out of memory"); return 0; }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  return 1;
}

#define PUTS(e, lit) put(e, lit, sizeof(lit) - 1)

static int fail(Enc *e, const char *path, const char *what) {
  if (!e->err[0]) snprintf(e->err, sizeof e->err, "%s at %s", what, path);
  return 0;
}

static int newline(Enc *e, int depth) {
  if (!e->pretty) return 1;
  if (!PUTS(e, "\n")) return 0;
  for (int i = 0; i < depth; i++)
    if (!PUTS(e, "  ")) return 0;
  return 1;
}

static int enc_string(Enc *e, const char *s, size_t len, const char *path) {
  static const char hx[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  if (!PUTS(e, "\"")) return 0;
  size_t run = 0;  /* start of the bytes not yet written */
  for (size_t i = 0; i < len;) {
    unsigned c = u[i];
    char esc[8];
    size_t elen = 0, step = 1;
    if (c >= 0x80) {
      size_t l = utf8_seq(u + i, len - i);
      if (l) { i += l; continue; }
      if (!e->escape_bytes) return fail(e, path, "a string that is not valid UTF-8");
      memcpy(esc, "\\udc", 4);
      esc[4] = hx[c >> 4];
      esc[5] = hx[c & 15];
      elen = 6;
    } else if (c == '"' || c == '\\') {
      esc[0] = '\\'; esc[1] = (char)c; elen = 2;
    } else if (c < 0x20) {
      const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" :
                          c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
      if (named) { memcpy(esc, named, 2); elen = 2; }
      else {
        memcpy(esc, "\\u00", 4);
        esc[4] = hx[c >> 4];
        esc[5] = hx[c & 15];
        elen = 6;
      }
    } else {
      i++;
      continue;
    }
    if (!put(e, s + run, i - run) || !put(e, esc, elen)) return 0;
    i += step;
    run = i;
  }
  return put(e, s + run, len - run) && PUTS(e, "\"");
}

static const char *kind_of(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx)) return NULL;
  const char *k = NULL;
  luaL_getmetatable(L, ARRAY_MT);
  if (lua_rawequal(L, -1, -2)) k = "array";
  lua_pop(L, 1);
  if (!k) {
    luaL_getmetatable(L, OBJECT_MT);
    if (lua_rawequal(L, -1, -2)) k = "object";
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return k;
}

typedef struct Key {
  const char *s;
  size_t len;
} Key;

static int cmpkeys(const void *a, const void *b) {
  const Key *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int enc_value(Enc *e, int idx, int depth, const char *path);

static int enc_table(Enc *e, int idx, int depth, const char *path) {
  lua_State *L = e->L;
  if (depth >= MAX_DEPTH) return fail(e, path, "nesting deeper than 1000");
  if (!lua_checkstack(L, 8)) return fail(e, path, "nesting too deep for the stack");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->cycles) != LUA_TNIL) { lua_pop(L, 1); return fail(e, path, "cycle"); }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, e->cycles);

  const char *kind = kind_of(L, idx);
  lua_Integer n = 0, count = 0;
  int has_string = 0, has_other = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_type(L, -1) == LUA_TSTRING) has_string = 1;
    else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0) {
      if (lua_tointeger(L, -1) > n) n = lua_tointeger(L, -1);
    } else has_other = 1;
  }
  int ok = 0;
  char sub[256];
  int as_array = kind ? strcmp(kind, "array") == 0 : (count > 0 && !has_string);
  if (has_other) fail(e, path, "a table key that is neither a string nor a positive integer");
  else if (as_array && has_string) fail(e, path, "an array with string keys");
  else if (as_array && n != count) fail(e, path, "a sparse array (holes are not allowed; use json.null)");
  else if (!as_array && count > 0 && !has_string) fail(e, path, "an object with integer keys");
  else if (!as_array && n > 0) fail(e, path, "a table mixing array items and string keys");
  else if (as_array) {
    ok = PUTS(e, "[");
    for (lua_Integer i = 1; ok && i <= n; i++) {
      if (i > 1) ok = PUTS(e, ",");
      if (ok) ok = newline(e, depth + 1);
      lua_rawgeti(L, idx, i);
      snprintf(sub, sizeof sub, "%s[%lld]", path, (long long)i);
      if (ok) ok = enc_value(e, lua_gettop(L), depth + 1, sub);
      lua_pop(L, 1);
    }
    if (ok && n > 0) ok = newline(e, depth);
    if (ok) ok = PUTS(e, "]");
  } else {
    /* the keys, sorted bytewise; the array lives in a userdata so a raise frees it */
    Key *keys = lua_newuserdatauv(L, sizeof(Key) * (size_t)(count ? count : 1), 0);
    int kidx = lua_gettop(L);
    lua_Integer k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      keys[k].s = lua_tolstring(L, -1, &keys[k].len);  /* stays valid: the table holds it */
      k++;
    }
    qsort(keys, (size_t)k, sizeof *keys, cmpkeys);
    ok = PUTS(e, "{");
    for (lua_Integer i = 0; ok && i < k; i++) {
      if (i > 0) ok = PUTS(e, ",");
      if (ok) ok = newline(e, depth + 1);
      snprintf(sub, sizeof sub, "%s.%s", path, keys[i].s);
      if (ok) ok = enc_string(e, keys[i].s, keys[i].len, sub);
      if (ok) ok = e->pretty ? PUTS(e, ": ") : PUTS(e, ":");
      lua_pushlstring(L, keys[i].s, keys[i].len);
      lua_rawget(L, idx);
      if (ok) ok = enc_value(e, lua_gettop(L), depth + 1, sub);
      lua_pop(L, 1);
    }
    if (ok && k > 0) ok = newline(e, depth);
    if (ok) ok = PUTS(e, "}");
    lua_remove(L, kidx);
  }
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, e->cycles);
  return ok;
}

static int enc_value(Enc *e, int idx, int depth, const char *path) {
  lua_State *L = e->L;
  char buf[48];
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return PUTS(e, "null");
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? PUTS(e, "true") : PUTS(e, "false");
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return PUTS(e, "null");
      return fail(e, path, "a userdata value");
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        int len = snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
        return put(e, buf, (size_t)len);
      } else {
        /* the shortest of %.15g/%.16g/%.17g that reads back exactly */
        double v = lua_tonumber(L, idx);
        if (!isfinite(v)) return fail(e, path, "a non-finite number");
        int len = 0;
        for (int prec = 15; prec <= 17; prec++) {
          len = snprintf(buf, sizeof buf, "%.*g", prec, v);
          if (strtod(buf, NULL) == v) break;
        }
        /* the C locale's decimal point; never a comma */
        for (int i = 0; i < len; i++) if (buf[i] == ',') buf[i] = '.';
        /* past 2^53 an integral float keeps a ".0", so that it decodes as a float again */
        if (fabs(v) > EXACT_INT && !strpbrk(buf, ".e")) { memcpy(buf + len, ".0", 3); len += 2; }
        return put(e, buf, (size_t)len);
      }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return enc_string(e, s, len, path);
    }
    case LUA_TTABLE: return enc_table(e, idx, depth, path);
    default: {
      char what[64];
      snprintf(what, sizeof what, "a %s value", lua_typename(L, lua_type(L, idx)));
      return fail(e, path, what);
    }
  }
}

/*
** json.encode(value [, { pretty = false, escape_bytes = false }]) -> text
*/
static int json_encode(lua_State *L) {
  static const char *const keys[] = {"pretty", "escape_bytes", NULL};
  if (lua_isnone(L, 1)) return upk_error(L, "EINVAL", "json.encode: no value given");
  upk_checkopts(L, 2, "json.encode", keys);
  Enc e;
  memset(&e, 0, sizeof e);
  e.L = L;
  e.pretty = upk_optboolean(L, 2, "json.encode", "pretty", 0);
  e.escape_bytes = upk_optboolean(L, 2, "json.encode", "escape_bytes", 0);
  lua_settop(L, 1);
  lua_newtable(L);
  e.cycles = 2;
  e.b = lua_newuserdatauv(L, sizeof(Box), 0);
  memset(e.b, 0, sizeof(Box));
  luaL_setmetatable(L, BOX_MT);
  if (!enc_value(&e, 1, 0, "$")) {
    if (strcmp(e.err, "out of memory") == 0)
      return upk_error(L, "ENOMEM", "json.encode: out of memory");
    return upk_error(L, "EINVAL", "json.encode: cannot encode %s", e.err);
  }
  lua_pushlstring(L, e.b->p ? e.b->p : "", e.b->n);
  return 1;
}

static int mark(lua_State *L, const char *fn, const char *mt) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  if (!lua_istable(L, 1))
    return upk_error(L, "EINVAL", "%s: expected a table, got %s", fn, luaL_typename(L, 1));
  lua_settop(L, 1);
  luaL_setmetatable(L, mt);
  return 1;
}

/* json.array([t]) -> t marked as a JSON array */
static int json_array(lua_State *L) { return mark(L, "json.array", ARRAY_MT); }

/* json.object([t]) -> t marked as a JSON object */
static int json_object(lua_State *L) { return mark(L, "json.object", OBJECT_MT); }

/* json.kind(t) -> "array" | "object" | nil (the mark) */
static int json_kind(lua_State *L) {
  if (!lua_istable(L, 1))
    return upk_error(L, "EINVAL", "json.kind: expected a table, got %s", luaL_typename(L, 1));
  const char *k = kind_of(L, 1);
  if (k) lua_pushstring(L, k);
  else lua_pushnil(L);
  return 1;
}

static const luaL_Reg json_funcs[] = {
  {"decode", json_decode},
  {"encode", json_encode},
  {"array", json_array},
  {"object", json_object},
  {"kind", json_kind},
  {NULL, NULL}
};

int luaopen_upkit_json(lua_State *L) {
  luaL_newmetatable(L, ARRAY_MT);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_pop(L, 1);
  luaL_newmetatable(L, OBJECT_MT);
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, "__jsontype");
  lua_pop(L, 1);
  luaL_newmetatable(L, BOX_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  upk_newlib(L, json_funcs, "json");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
