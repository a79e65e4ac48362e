/*
** ljson.c: upkit.json, JSON through cJSON.
**   json.decode(text) -> value      json.encode(value [, { pretty = bool }]) -> text
**   json.null                       the null sentinel (also sql.null)
**   json.array(t), json.object(t)   mark a table's JSON kind (for empty tables)
** Decoded arrays and objects carry the marks, so an empty one round-trips.
** Keys are encoded sorted, so output is stable.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "upkit.h"

#define ARRAY_MT "upkit.json.array"
#define OBJECT_MT "upkit.json.object"
#define MAX_DEPTH 1000
#define EXACT_INT (9007199254740992.0)  /* 2^53 */

/* Length of the valid UTF-8 prefix of s; n when all of s is valid. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t len;
    unsigned cp;
    if (c < 0x80) { i++; continue; }
    else if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return n;
}

static void setkind(lua_State *L, const char *mt) {
  luaL_setmetatable(L, mt);
}

/* Push the Lua value of a cJSON item. */
static void push_item(lua_State *L, const cJSON *it) {
  luaL_checkstack(L, 4, "json.decode: nesting too deep");
  if (cJSON_IsNull(it)) lua_pushlightuserdata(L, NULL);
  else if (cJSON_IsFalse(it)) lua_pushboolean(L, 0);
  else if (cJSON_IsTrue(it)) lua_pushboolean(L, 1);
  else if (cJSON_IsNumber(it)) {
    double d = it->valuedouble;
    if (d == floor(d) && fabs(d) <= EXACT_INT) lua_pushinteger(L, (lua_Integer)d);
    else lua_pushnumber(L, d);
  } else if (cJSON_IsString(it)) lua_pushstring(L, it->valuestring);
  else if (cJSON_IsArray(it)) {
    lua_createtable(L, cJSON_GetArraySize(it), 0);
    lua_Integer i = 0;
    for (const cJSON *c = it->child; c; c = c->next) {
      push_item(L, c);
      lua_rawseti(L, -2, ++i);
    }
    setkind(L, ARRAY_MT);
  } else {
    lua_createtable(L, 0, cJSON_GetArraySize(it));
    for (const cJSON *c = it->child; c; c = c->next) {
      push_item(L, c);
      lua_setfield(L, -2, c->string);
    }
    setkind(L, OBJECT_MT);
  }
}

/*
** json.decode(text) -> value; BAD_JSON with the byte position on error.
*/
static int json_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  size_t ok = utf8_valid_prefix((const unsigned char *)text, len);
  if (ok < len)
    return upk_error(L, "BAD_JSON", "json.decode: invalid UTF-8 at byte %d", (int)ok + 1);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!root) {
    size_t pos = end ? (size_t)(end - text) : 0;
    if (pos > len) pos = len;
    if (len == 0 || pos >= len)
      return upk_error(L, "BAD_JSON", "json.decode: unexpected end of input at byte %d", (int)len + 1);
    char near[16];
    snprintf(near, sizeof near, "%.10s", text + pos);
    return upk_error(L, "BAD_JSON", "json.decode: syntax error at byte %d near '%s'",
                     (int)pos + 1, near);
  }
  /* trailing garbage other than white space */
  size_t pos = (size_t)(end - text);
  while (pos < len && strchr(" \t\r\n", text[pos])) pos++;
  if (pos < len) {
    cJSON_Delete(root);
    return upk_error(L, "BAD_JSON", "json.decode: unexpected data after the value at byte %d", (int)pos + 1);
  }
  push_item(L, root);
  cJSON_Delete(root);
  return 1;
}

/* Encoding builds a cJSON tree; on error it records the reason and path. */
typedef struct Enc {
  lua_State *L;
  char err[256];
  int cycles;  /* index of the table of tables being visited */
} Enc;

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

static int cmpkeys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static cJSON *encode_value(Enc *e, int idx, int depth, const char *path);

static cJSON *enc_fail(Enc *e, const char *path, const char *what) {
  snprintf(e->err, sizeof e->err, "%s at %s", what, path);
  return NULL;
}

static cJSON *encode_table(Enc *e, int idx, int depth, const char *path) {
  lua_State *L = e->L;
  if (depth > MAX_DEPTH) return enc_fail(e, path, "nesting deeper than 1000");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->cycles) != LUA_TNIL) { lua_pop(L, 1); return enc_fail(e, path, "cycle"); }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, e->cycles);
  luaL_checkstack(L, 6, "json.encode: nesting too deep");

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
  cJSON *out = NULL;
  char sub[256];
  if (has_other) { out = enc_fail(e, path, "a table key that is neither a string nor a positive integer"); goto done; }
  int as_array = kind ? strcmp(kind, "array") == 0 : (count > 0 && !has_string);
  if (as_array) {
    if (has_string) { out = enc_fail(e, path, "an array with string keys"); goto done; }
    if (n != count) { out = enc_fail(e, path, "a sparse array (holes are not allowed; use json.null)"); goto done; }
    out = cJSON_CreateArray();
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      snprintf(sub, sizeof sub, "%s[%lld]", path, (long long)i);
      cJSON *c = encode_value(e, lua_gettop(L), depth + 1, sub);
      lua_pop(L, 1);
      if (!c) { cJSON_Delete(out); out = NULL; goto done; }
      cJSON_AddItemToArray(out, c);
    }
  } else {
    if (count > 0 && !has_string) { out = enc_fail(e, path, "an object with integer keys"); goto done; }
    if (n > 0) { out = enc_fail(e, path, "a table mixing array items and string keys"); goto done; }
    const char **keys = malloc(sizeof(char *) * (size_t)(count ? count : 1));
    if (!keys) { out = enc_fail(e, path, "out of memory"); goto done; }
    lua_Integer k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      lua_pop(L, 1);
      keys[k++] = lua_tostring(L, -1);  /* stays valid: the table holds the key */
    }
    qsort(keys, (size_t)k, sizeof(char *), cmpkeys);
    out = cJSON_CreateObject();
    for (lua_Integer i = 0; i < k; i++) {
      size_t klen = strlen(keys[i]);
      if (utf8_valid_prefix((const unsigned char *)keys[i], klen) < klen) {
        cJSON_Delete(out); out = enc_fail(e, path, "a key that is not valid UTF-8"); break;
      }
      lua_getfield(L, idx, keys[i]);
      snprintf(sub, sizeof sub, "%s.%s", path, keys[i]);
      cJSON *c = encode_value(e, lua_gettop(L), depth + 1, sub);
      lua_pop(L, 1);
      if (!c) { cJSON_Delete(out); out = NULL; break; }
      cJSON_AddItemToObject(out, keys[i], c);
    }
    free(keys);
  }
done:
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, e->cycles);
  return out;
}

static cJSON *encode_value(Enc *e, int idx, int depth, const char *path) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return cJSON_CreateNull();
      return enc_fail(e, path, "a userdata value");
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
        return cJSON_CreateRaw(buf);
      } else {
        /* the shortest of %.15g/%.16g/%.17g that reads back exactly */
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) return enc_fail(e, path, "a non-finite number");
        char buf[40];
        for (int prec = 15; prec <= 17; prec++) {
          snprintf(buf, sizeof buf, "%.*g", prec, d);
          if (strtod(buf, NULL) == d) break;
        }
        return cJSON_CreateRaw(buf);
      }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (utf8_valid_prefix((const unsigned char *)s, len) < len || strlen(s) != len)
        return enc_fail(e, path, "a string that is not valid UTF-8");
      return cJSON_CreateString(s);
    }
    case LUA_TTABLE: return encode_table(e, idx, depth, path);
    default: {
      char what[64];
      snprintf(what, sizeof what, "a %s value", lua_typename(L, lua_type(L, idx)));
      return enc_fail(e, path, what);
    }
  }
}

/*
** json.encode(value [, { pretty = false }]) -> text
*/
static int json_encode(lua_State *L) {
  static const char *const keys[] = {"pretty", NULL};
  luaL_checkany(L, 1);
  upk_checkopts(L, 2, "json.encode", keys);
  int pretty = upk_optboolean(L, 2, "json.encode", "pretty", 0);
  lua_settop(L, 1);
  lua_newtable(L);
  Enc e = { L, "", 2 };
  cJSON *root = encode_value(&e, 1, 0, "$");
  if (!root) return upk_error(L, "EINVAL", "json.encode: cannot encode %s", e.err);
  char *text = pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!text) return upk_error(L, "ENOMEM", "json.encode: out of memory");
  lua_pushstring(L, text);
  cJSON_free(text);
  return 1;
}

static int mark(lua_State *L, const char *mt) {
  if (lua_isnoneornil(L, 1)) lua_newtable(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_setmetatable(L, mt);
  return 1;
}

/* json.array([t]) -> t marked as a JSON array */
static int json_array(lua_State *L) { return mark(L, ARRAY_MT); }

/* json.object([t]) -> t marked as a JSON object */
static int json_object(lua_State *L) { return mark(L, OBJECT_MT); }

/* json.kind(t) -> "array" | "object" | nil (the mark) */
static int json_kind(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
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
  luaL_newlib(L, json_funcs);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
