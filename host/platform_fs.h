/*
** platform_fs.h: the file-system seam of upkit.fs. Every function returns
** 0 on success or an errno value; none touches Lua. A Windows build adds
** platform_fs_win.c beside platform_fs_linux.c.
*/
#ifndef UPKIT_PLATFORM_FS_H
#define UPKIT_PLATFORM_FS_H

#include <stddef.h>
#include <stdint.h>

/* What upkit.fs needs to know about a directory entry (not followed). */
typedef struct UpkStat {
  int type;            /* UPK_FT_* */
  uint64_t size;
  int64_t mtime_ns;    /* modification time, nanoseconds since the epoch */
  int64_t ctime_ns;    /* change time (any change of data or metadata), the same unit */
  unsigned mode;       /* permission bits */
  unsigned attrs;      /* UPK_ATTR_* (Windows' hidden and system attributes); 0 elsewhere */
  uint64_t blocks512;  /* allocated 512-byte blocks */
} UpkStat;

enum { UPK_FT_OTHER, UPK_FT_FILE, UPK_FT_DIR, UPK_FT_LINK };
enum { UPK_ATTR_HIDDEN = 1, UPK_ATTR_SYSTEM = 2 };

/* A directory handle meaning "the current folder", for the *at functions. */
#define UPK_FS_CWD (-100)

/*
** upkit's temporary files live in a private folder beside their final
** name: <folder>/.upkit-tmp/<name>.<pid>-<8 hex digits>. Only that folder
** is ever cleaned, so no user file is taken for a temporary by its name.
*/
#define UPK_TMP_DIR ".upkit-tmp"

int upk_fs_lstat(const char *path, UpkStat *st);
/* Same for name in the directory dirfd. */
int upk_fs_lstat_at(int dirfd, const char *name, UpkStat *st);
/* Same, following symbolic links. */
int upk_fs_stat(const char *path, UpkStat *st);
int upk_fs_fstat(int fd, UpkStat *st);

/* Open for reading (never follows a final symlink). */
int upk_fs_open_read(const char *path, int *fd);
/* Open a directory for syncing and *at calls. */
int upk_fs_open_dir(const char *path, int *fd);
int upk_fs_close(int fd);

/*
** Create a fresh temporary file for final name `name` in the directory
** dirfd: ".upkit-tmp/<name>.<pid>-<random>" (the private folder is made
** when missing, 0700), mode 0600. tmpname receives the path relative to
** dirfd (size >= strlen(name) + 64).
*/
int upk_fs_create_temp(int dirfd, const char *name, char *tmpname, size_t size, int *fd);
/* Make the private folder in dirfd when it is missing (0700); ENOTDIR when something else is there. */
int upk_fs_temp_dir(int dirfd);
/* The same name, with the private folder made, but nothing created at it. */
int upk_fs_temp_name(int dirfd, const char *name, char *tmpname, size_t size);
/* Remove dirfd's private folder when it is empty (after a rename out of it). */
void upk_fs_temp_release(int dirfd);
/* Remove name in dirfd (a file or a symbolic link). */
int upk_fs_unlinkat(int dirfd, const char *name);
/*
** Remove stale temporary files of dirfd: the names in its private folder
** whose creating process no longer runs, then the folder when empty.
** *removed counts them.
*/
int upk_fs_clean_temps(int dirfd, int *removed);
/* The shared part of upk_fs_clean_temps: remove the stale names in fd, the open private folder. */
int upk_fs_clean_listed(int fd, int *removed);
/* 1 when the process pid may still write its temporary files: it is this one, or it runs. */
int upk_fs_pid_alive(long pid);
/* 1 when name is upkit's private folder of temporary files. */
int upk_fs_is_temp_name(const char *name);
/*
** pid of a name in the private folder, "<name>.<pid>-<8 hex digits>", or
** -1 for any other name (a resumable download's "<name>.part" stays).
** These two and upk_fs_clean_listed are the same on every system
** (platform_fs_temp.c).
*/
long upk_fs_temp_pid(const char *name);

/*
** Copy size bytes from in to out (both at offset 0) by the fastest path
** the kernel offers: copy_file_range, then sendfile, then read/write.
** With sparse, holes of the source stay holes. tick(arg, done) is called
** between chunks (may be NULL); a non-zero return stops with EINTR.
*/
int upk_fs_copy_data(int in, int out, uint64_t size, int sparse,
                     int (*tick)(void *arg, uint64_t done), void *arg);

/* Read and write whole buffers, retrying on EINTR and short transfers. */
int upk_fs_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got);
int upk_fs_write_full(int fd, const void *buf, size_t n);
int upk_fs_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);
int upk_fs_truncate(int fd, uint64_t size);
int upk_fs_fchmod(int fd, unsigned mode);

/* Give the file st's mode bits, attributes and modification time (atime = mtime). */
int upk_fs_set_meta(int fd, const UpkStat *st);
/* Same for a path without following a final symlink (times only for links). */
int upk_fs_set_times_at(int dirfd, const char *name, int64_t mtime_ns);

/* Flush one file's data and metadata to stable storage. */
int upk_fs_fsync(int fd);
/* Start writing a file's dirty pages back, without waiting. */
void upk_fs_start_writeback(int fd);
/* Tell the kernel fd will be read from start to end (a hint; never fails). */
void upk_fs_advise_sequential(int fd);
/* Flush everything on the file system that holds fd. */
int upk_fs_syncfs(int fd);

/*
** Rename olddir/old to newdir/new. With noreplace, fail with EEXIST when
** the new name exists (atomically where the kernel can).
*/
int upk_fs_rename(int olddir, const char *old, int newdir, const char *newname, int noreplace);

/* Rename a path over another (replacing it). */
int upk_fs_rename_path(const char *old, const char *newpath);

int upk_fs_symlinkat(const char *target, int dirfd, const char *name);
/* Read the target of link name in dirfd into buf (NUL-terminated). */
int upk_fs_readlink_at(int dirfd, const char *name, char *buf, size_t size);

int upk_fs_mkdir(const char *path, unsigned mode);
int upk_fs_chmod(const char *path, unsigned mode);
/* Set a path's modification time without following a final symlink. */
int upk_fs_set_times(const char *path, int64_t mtime_ns);
int upk_fs_rmdir(const char *path);
int upk_fs_unlink(const char *path);

/* Bytes available to an unprivileged user on the file system of path. */
int upk_fs_free(const char *path, uint64_t *bytes);

/*
** List a directory: calls each(arg, name) for every entry but "." and "..",
** in directory order. each returns non-zero to stop.
*/
int upk_fs_list(const char *path, int (*each)(void *arg, const char *name), void *arg);
/* Same for the open directory dirfd (left open, its position untouched). */
int upk_fs_list_fd(int dirfd, int (*each)(void *arg, const char *name), void *arg);

/* Fill buf with n random bytes. */
int upk_fs_random(void *buf, size_t n);

/* Current working folder into buf. */
int upk_fs_getcwd(char *buf, size_t size);
/* Canonical absolute form of an existing path. */
int upk_fs_realpath(const char *path, char *buf, size_t size);

/* The folder for temporary files: TMPDIR or /tmp. */
const char *upk_fs_tmproot(void);
/* Create a fresh private folder from a template ending in XXXXXX. */
int upk_fs_mkdtemp(char *tmpl);

#endif
