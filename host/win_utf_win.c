/*
** win_utf_win.c: UTF-8 <-> UTF-16 conversion, long paths and error codes
** for the Windows implementations (see win.h).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "win.h"

wchar_t *upk_w(const char *utf8) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8, -1, NULL, 0);
  if (n <= 0) { errno = EINVAL; return NULL; }
  wchar_t *w = malloc((size_t)n * sizeof *w);
  if (w == NULL) { errno = ENOMEM; return NULL; }
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8, -1, w, n);
  return w;
}

char *upk_utf8(const wchar_t *w) {
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
  if (n <= 0) { errno = EINVAL; return NULL; }
  char *s = malloc((size_t)n);
  if (s == NULL) { errno = ENOMEM; return NULL; }
  WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL);
  return s;
}

wchar_t *upk_wpath(const char *utf8) {
  wchar_t *rel = upk_w(utf8);
  if (rel == NULL) return NULL;
  for (wchar_t *p = rel; *p; p++) if (*p == L'/') *p = L'\\';
  if (wcsncmp(rel, L"\\\\?\\", 4) == 0) return rel;  /* already a long path */
  DWORD n = GetFullPathNameW(rel, 0, NULL, NULL);
  if (n == 0) { errno = upk_win_errno(GetLastError()); free(rel); return NULL; }
  wchar_t *full = malloc(((size_t)n + 8) * sizeof *full);
  if (full == NULL) { free(rel); errno = ENOMEM; return NULL; }
  int unc = 0;
  wchar_t *abs = malloc(((size_t)n + 1) * sizeof *abs);
  if (abs == NULL) { free(rel); free(full); errno = ENOMEM; return NULL; }
  GetFullPathNameW(rel, n + 1, abs, NULL);
  free(rel);
  if (wcsncmp(abs, L"\\\\.\\", 4) == 0) {  /* a device path: as it is */
    wcscpy(full, abs);
  } else {
    unc = wcsncmp(abs, L"\\\\", 2) == 0;
    wcscpy(full, unc ? L"\\\\?\\UNC\\" : L"\\\\?\\");
    wcscat(full, unc ? abs + 2 : abs);
  }
  free(abs);
  return full;
}

int upk_utf8_path(const wchar_t *w, char *buf, size_t size) {
  size_t lead = 0;  /* "//" kept in front of a UNC path's server */
  if (wcsncmp(w, L"\\\\?\\UNC\\", 8) == 0) { w += 8; lead = 2; }
  else if (wcsncmp(w, L"\\\\?\\", 4) == 0) w += 4;
  char *s = upk_utf8(w);
  if (s == NULL) return errno;
  size_t len = strlen(s);
  if (lead + len + 1 > size) { free(s); return ENAMETOOLONG; }
  memcpy(buf, "//", lead);
  memcpy(buf + lead, s, len + 1);
  free(s);
  for (char *p = buf; *p; p++) if (*p == '\\') *p = '/';
  return 0;
}

int upk_win_errno(unsigned long err) {
  switch (err) {
  case ERROR_FILE_NOT_FOUND: case ERROR_PATH_NOT_FOUND: case ERROR_INVALID_DRIVE:
  case ERROR_BAD_NETPATH: case ERROR_BAD_NET_NAME: case ERROR_INVALID_NAME:
  case ERROR_MOD_NOT_FOUND:
    return ENOENT;
  case ERROR_ACCESS_DENIED: case ERROR_NETWORK_ACCESS_DENIED: case ERROR_CANT_ACCESS_FILE:
    return EACCES;
  case ERROR_PRIVILEGE_NOT_HELD: case ERROR_NOT_OWNER:
    return EPERM;
  case ERROR_FILE_EXISTS: case ERROR_ALREADY_EXISTS:
    return EEXIST;
  case ERROR_DISK_FULL: case ERROR_HANDLE_DISK_FULL: case ERROR_NOT_ENOUGH_QUOTA:
    return ENOSPC;
  case ERROR_DIR_NOT_EMPTY:
    return ENOTEMPTY;
  case ERROR_DIRECTORY:
    return ENOTDIR;
  case ERROR_SHARING_VIOLATION: case ERROR_LOCK_VIOLATION: case ERROR_BUSY:
  case ERROR_PIPE_BUSY:
    return EBUSY;
  case ERROR_FILENAME_EXCED_RANGE: case ERROR_BUFFER_OVERFLOW:
    return ENAMETOOLONG;
  case ERROR_NOT_SAME_DEVICE:
    return EXDEV;
  case ERROR_NOT_ENOUGH_MEMORY: case ERROR_OUTOFMEMORY:
    return ENOMEM;
  case ERROR_BROKEN_PIPE: case ERROR_NO_DATA:
    return EPIPE;
  case ERROR_INVALID_HANDLE:
    return EBADF;
  case ERROR_WRITE_PROTECT:
    return EROFS;
  case ERROR_TOO_MANY_OPEN_FILES:
    return EMFILE;
  case ERROR_BAD_EXE_FORMAT: case ERROR_EXE_MACHINE_TYPE_MISMATCH:
    return ENOEXEC;
  case ERROR_NOT_SUPPORTED: case ERROR_CALL_NOT_IMPLEMENTED:
    return ENOTSUP;
  case ERROR_INVALID_PARAMETER:
    return EINVAL;
  case ERROR_OPERATION_ABORTED:
    return EINTR;
  case ERROR_CANT_RESOLVE_FILENAME:
    return ELOOP;
  case ERROR_NEGATIVE_SEEK: case ERROR_SEEK_ON_DEVICE:
    return ESPIPE;
  case ERROR_NOACCESS:
    return EFAULT;
  case ERROR_INVALID_FUNCTION:
    return ENOSYS;
  default:
    return EIO;
  }
}
