/*
** fs_private.h: what the three files of upkit._fs share (fs.c: copies;
** fs_tree.c: walks and removal; fs_file.c: file helpers and temporaries).
*/
#ifndef UPKIT_FS_PRIVATE_H
#define UPKIT_FS_PRIVATE_H

#include <stddef.h>

#include "platform_fs.h"
#include "upkit.h"

/* dirname and basename of dst; refuses names ending in '/' (EISDIR). */
int upk_fs_split(const char *dst, char *dir, size_t size, const char **base);
/* "file", "dir", "link" or "other" for a UPK_FT_* type. */
const char *upk_fs_typename(int type);

int fs_scan(lua_State *L);
int fs_scan_pair(lua_State *L);
int fs_check_dir(lua_State *L);
int fs_remove(lua_State *L);
int fs_write(lua_State *L);
int fs_read(lua_State *L);
int fs_stat(lua_State *L);
int fs_mkdirs(lua_State *L);
int fs_mkdir(lua_State *L);
int fs_free(lua_State *L);
int fs_tempdir(lua_State *L);
int fs_realpath(lua_State *L);
int fs_cwd(lua_State *L);
int fs_setmeta(lua_State *L);
int fs_temp_path(lua_State *L);
int fs_commit(lua_State *L);
int fs_discard(lua_State *L);
int fs_rename(lua_State *L);
int fs_sync(lua_State *L);

#endif
