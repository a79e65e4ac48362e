/*
** win_compat_win.c: the POSIX calls some modules make directly, for the
** Windows build (host/win/compat.h maps their names here).
*/
#include <errno.h>
#include <io.h>
#include <stdlib.h>
#include <windows.h>

#include "win.h"

/*
** fsync(fd): FlushFileBuffers. Windows flushes only through a handle that
** may write; a descriptor opened for reading (to flush what another
** writer, an ODBC driver say, left behind) is reopened for writing first.
*/
int upk_win_fsync(int fd) {
  HANDLE h = (HANDLE)_get_osfhandle(fd);
  if (h == INVALID_HANDLE_VALUE) { errno = EBADF; return -1; }
  if (FlushFileBuffers(h)) return 0;
  DWORD e = GetLastError();
  if (e == ERROR_ACCESS_DENIED) {
    wchar_t path[32768];
    DWORD n = GetFinalPathNameByHandleW(h, path, sizeof path / sizeof path[0], FILE_NAME_NORMALIZED);
    if (n > 0 && n < sizeof path / sizeof path[0]) {
      HANDLE w = CreateFileW(path, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                             NULL, OPEN_EXISTING, 0, NULL);
      if (w != INVALID_HANDLE_VALUE) {
        BOOL ok = FlushFileBuffers(w);
        e = ok ? 0 : GetLastError();
        CloseHandle(w);
        if (ok) return 0;
      } else {
        e = GetLastError();
      }
    }
  }
  errno = upk_win_errno(e);
  return -1;
}
