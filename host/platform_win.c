/*
** platform_win.c: Windows implementation of platform.h. Paths cross this
** seam as UTF-8 with '/' separators; UTF-16 is used at every Windows call.
*/
#include <io.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "platform.h"
#include "win.h"

int upk_exe_path(char *buf, size_t size) {
  wchar_t w[32768];
  DWORD n = GetModuleFileNameW(NULL, w, sizeof w / sizeof w[0]);
  if (n == 0 || n >= sizeof w / sizeof w[0]) return -1;
  return upk_utf8_path(w, buf, size) == 0 ? 0 : -1;
}

int upk_isatty(int fd) {
  return _isatty(fd) != 0;
}

int upk_hostname(char *buf, size_t size) {
  wchar_t w[MAX_COMPUTERNAME_LENGTH + 32];
  DWORD n = sizeof w / sizeof w[0];
  if (!GetComputerNameExW(ComputerNameNetBIOS, w, &n)) return -1;
  return upk_utf8_path(w, buf, size) == 0 ? 0 : -1;
}

int upk_share_dir(char *buf, size_t size) {
  if (upk_exe_path(buf, size) != 0) return -1;
  char *slash = strrchr(buf, '/');
  if (slash == NULL) return -1;
  *slash = '\0';
  return 0;
}

/* %LOCALAPPDATA%\upkit (the per-user, per-machine data folder), else %APPDATA%\upkit. */
int upk_user_dir(char *buf, size_t size) {
  const wchar_t *names[] = { L"LOCALAPPDATA", L"APPDATA" };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    wchar_t w[32768];
    DWORD n = GetEnvironmentVariableW(names[i], w, sizeof w / sizeof w[0] - 8);
    if (n == 0 || n >= sizeof w / sizeof w[0] - 8) continue;
    wcscat(w, L"\\upkit");
    return upk_utf8_path(w, buf, size) == 0 ? 0 : -1;
  }
  return -1;
}

int upk_isfile(const char *path) {
  wchar_t *w = upk_wpath(path);
  if (w == NULL) return 0;
  DWORD a = GetFileAttributesW(w);
  free(w);
  return a != INVALID_FILE_ATTRIBUTES && !(a & FILE_ATTRIBUTE_DIRECTORY);
}

/*
** Ctrl-C and Ctrl-Break arrive on a thread of their own; the handler calls
** onint(SIGINT) there (it only sets a hook and a flag) and wakes upk_sleep.
*/
static void (*on_interrupt)(int);
static HANDLE interrupt_event;
volatile long upk_win_interrupts;

static BOOL WINAPI console_handler(DWORD type) {
  if (type != CTRL_C_EVENT && type != CTRL_BREAK_EVENT) return FALSE;
  InterlockedIncrement(&upk_win_interrupts);
  if (on_interrupt) on_interrupt(SIGINT);
  if (interrupt_event) SetEvent(interrupt_event);
  return TRUE;
}

void *upk_win_interrupt_event(void) {
  return interrupt_event;
}

void upk_on_sigint(void (*onint)(int)) {
  on_interrupt = onint;
  if (interrupt_event == NULL) interrupt_event = CreateEventW(NULL, FALSE, FALSE, NULL);
  SetConsoleCtrlHandler(console_handler, TRUE);
}

void upk_sleep(double seconds) {
  if (seconds <= 0) return;
  DWORD ms = seconds > 4e6 ? 4000000000u : (DWORD)(seconds * 1000.0 + 0.5);
  if (interrupt_event) {
    ResetEvent(interrupt_event);
    WaitForSingleObject(interrupt_event, ms);
  } else {
    Sleep(ms);
  }
}
