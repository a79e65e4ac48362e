/*
** backupfile.h: the upkit logical backup file (docs/backup-format.md):
** its value tags, little-endian integers, and the writer that other
** native code hands records to. Nothing here knows ODBC.
*/
#ifndef UPKIT_BACKUPFILE_H
#define UPKIT_BACKUPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "upkit.h"

#define BF_WRITER_MT "upkit.backupfile.Writer"
#define BF_READER_MT "upkit.backupfile.Reader"

/* Value tags of a data block. */
enum { V_NULL = 0, V_INT = 'i', V_DOUBLE = 'f', V_BOOL = 'b', V_TEXT = 's', V_BINARY = 'x' };

static inline void bf_set_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}

static inline void bf_set_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t bf_get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t bf_get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

typedef struct BfWriter BfWriter;

/* The open, formatted writer at idx, or raise EINVAL / CLOSED. */
BfWriter *bf_checkwriter(lua_State *L, int idx);
/* Append one record (type, payload) to w; raises the write error. */
void bf_write_record(lua_State *L, BfWriter *w, int type, const char *payload, size_t n);

#endif
