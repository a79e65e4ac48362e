/*
** unit.exe: the Windows helpers under Wine, in C (TAP):
** UTF-8 <-> UTF-16 and long paths (host/win_utf_win.c), platform.h
** (host/platform_win.c), the EVP digests over CNG (host/evp_win.c), and upk_win_cmdline (host/win_argv_win.c):
** - argv survives the trip through a command line and CommandLineToArgvW;
** - a child started with the line receives the same argv (C runtime split);
** - a batch file gets metacharacters as text, never as commands, and an
**   argument cmd.exe cannot take safely (", %, a line break) is refused.
** unit.exe --echo ARGS...: prints each argument on a line (the child).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>
#include <shellapi.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "platform.h"
#include "win.h"

static int n, failed;

static void ok(int cond, const char *name) {
  n++;
  if (!cond) failed++;
  printf("%s %d - %s\n", cond ? "ok" : "not ok", n, name);
}

/* Run line with app (NULL: from the line); its stdout into out (NUL-terminated). */
static int run(const wchar_t *app, wchar_t *line, char *out, size_t size) {
  SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
  HANDLE r, w;
  if (!CreatePipe(&r, &w, &sa, 0)) return -1;
  SetHandleInformation(r, HANDLE_FLAG_INHERIT, 0);
  STARTUPINFOW si;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdOutput = w;
  si.hStdError = w;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  PROCESS_INFORMATION pi;
  if (!CreateProcessW(app, line, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
    CloseHandle(r); CloseHandle(w);
    return -1;
  }
  CloseHandle(w);
  size_t got = 0;
  DWORD k;
  while (got + 1 < size && ReadFile(r, out + got, (DWORD)(size - 1 - got), &k, NULL) && k > 0) got += k;
  out[got] = '\0';
  CloseHandle(r);
  WaitForSingleObject(pi.hProcess, 20000);
  DWORD code = 1;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  CloseHandle(pi.hThread);
  return (int)code;
}

static const char *const cases[][6] = {
  { "x", "plain", NULL },
  { "x", "two words", "", "tab\there", NULL },
  { "x", "quote\"inside", "\"", "\\\"", NULL },
  { "x", "back\\slash", "trailing\\", "two\\\\", "\\\\server\\share\\", NULL },
  { "x", "a\\\\\"b", "\\\\\\", "a b\\", "\xc3\xa4\xe2\x82\xac", NULL },
};

static int wis(const char *utf8, const wchar_t *want) {
  wchar_t *w = upk_wpath(utf8);
  int same = w && wcscmp(w, want) == 0;
  if (!same) printf("# upk_wpath(%s) = %ls\n", utf8, w ? w : L"(null)");
  free(w);
  return same;
}

static void paths(void) {
  ok(wis("C:/a/b", L"\\\\?\\C:\\a\\b") && wis("C:\\a\\..\\b", L"\\\\?\\C:\\b") &&
     wis("//server/share/x", L"\\\\?\\UNC\\server\\share\\x") &&
     wis("\\\\?\\C:\\x", L"\\\\?\\C:\\x"),
     "upk_wpath: '/' as '\\', \\\\?\\ and \\\\?\\UNC\\ prefixes");
  char back[512];
  wchar_t *w = upk_wpath("C:/d\xc3\xa4/\xe2\x82\xac.txt");
  ok(w && upk_utf8_path(w, back, sizeof back) == 0 && strcmp(back, "C:/d\xc3\xa4/\xe2\x82\xac.txt") == 0,
     "UTF-8 path -> UTF-16 -> UTF-8 is the same path");
  free(w);
  w = upk_wpath("//srv/sh/f");
  ok(w && upk_utf8_path(w, back, sizeof back) == 0 && strcmp(back, "//srv/sh/f") == 0 &&
     upk_utf8_path(L"C:\\x", back, 3) == ENAMETOOLONG, "UNC paths come back with //; a short buffer is ENAMETOOLONG");
  free(w);
  ok(upk_w("\xc3\x28") == NULL && errno == EINVAL, "a string that is not UTF-8 is EINVAL");

  /* A path of more than MAX_PATH characters: folders and a file through \\?\. */
  char root[MAX_PATH * 2], deep[1200];
  wchar_t tmp[MAX_PATH];
  GetTempPathW(MAX_PATH, tmp);
  upk_utf8_path(tmp, root, sizeof root);
  snprintf(deep, sizeof deep, "%supkit-long-%lu", root, GetCurrentProcessId());
  int made = 1;
  size_t base = strlen(deep);
  for (int i = 0; i < 13 && made; i++) {
    if (i > 0) strcat(deep, "/folder-name-of-thirty-chars-xx");
    wchar_t *d = upk_wpath(deep);
    made = d && CreateDirectoryW(d, NULL);
    free(d);
  }
  strcat(deep, "/f\xc3\xa4.txt");
  wchar_t *fw = upk_wpath(deep);
  HANDLE h = fw ? CreateFileW(fw, GENERIC_WRITE, 0, NULL, CREATE_NEW, 0, NULL) : INVALID_HANDLE_VALUE;
  if (h != INVALID_HANDLE_VALUE) CloseHandle(h);
  if (!made || h == INVALID_HANDLE_VALUE) printf("# made %d, h %d, err %lu, %d chars\n", made, h != INVALID_HANDLE_VALUE, GetLastError(), (int)strlen(deep));
  ok(made && strlen(deep) > 400 && h != INVALID_HANDLE_VALUE && upk_isfile(deep),
     "a file under a path of more than 400 characters is created and seen (upk_isfile)");
  DeleteFileW(fw);
  free(fw);
  while (strlen(deep) >= base) {
    *strrchr(deep, '/') = '\0';
    if (strlen(deep) < base) break;
    wchar_t *d = upk_wpath(deep);
    RemoveDirectoryW(d);
    free(d);
  }
  ok(!upk_isfile(root) && upk_win_errno(ERROR_FILE_NOT_FOUND) == ENOENT &&
     upk_win_errno(ERROR_ACCESS_DENIED) == EACCES && upk_win_errno(ERROR_DISK_FULL) == ENOSPC &&
     upk_win_errno(ERROR_ALREADY_EXISTS) == EEXIST && upk_win_errno(12345678) == EIO,
     "Windows errors map to errno values; a folder is not a file");
  char exe[1024], user[1024];
  ok(upk_exe_path(exe, sizeof exe) == 0 && strstr(exe, "unit.exe") != NULL && strchr(exe, '\\') == NULL &&
     upk_user_dir(user, sizeof user) == 0 && strstr(user, "/upkit") != NULL,
     "upk_exe_path and upk_user_dir give UTF-8 paths with '/'");
}

static int digest_is(const char *alg, const char *data, const char *want) {
  const EVP_MD *md = EVP_get_digestbyname(alg);
  EVP_MD_CTX *c = EVP_MD_CTX_new(), *copy = EVP_MD_CTX_new();
  unsigned char d[EVP_MAX_MD_SIZE], d2[EVP_MAX_MD_SIZE];
  unsigned len = 0, len2 = 0;
  char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
  size_t half = strlen(data) / 2;
  int good = md && c && copy && EVP_DigestInit_ex(c, md, NULL) && EVP_DigestUpdate(c, data, half) &&
             EVP_MD_CTX_copy_ex(copy, c) && EVP_DigestUpdate(c, data + half, strlen(data) - half) &&
             EVP_DigestFinal_ex(c, d, &len) &&
             EVP_DigestUpdate(copy, data + half, strlen(data) - half) && EVP_DigestFinal_ex(copy, d2, &len2) &&
             len == len2 && memcmp(d, d2, len) == 0 && (int)len == EVP_MD_size(md);
  for (unsigned i = 0; good && i < len; i++) sprintf(hex + 2 * i, "%02x", d[i]);
  good = good && strcmp(hex, want) == 0 && !EVP_DigestUpdate(c, "x", 1);  /* finished: needs Init */
  if (!good) printf("# %s(%s) = %s\n", alg, data, hex);
  EVP_MD_CTX_free(c);
  EVP_MD_CTX_free(copy);
  return good;
}

static void digests(void) {
  ok(digest_is("md5", "", "d41d8cd98f00b204e9800998ecf8427e") &&
     digest_is("sha1", "abc", "a9993e364706816aba3e25717850c26c9cd0d89d") &&
     digest_is("sha256", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") &&
     digest_is("SHA-512", "abc", "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
               "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
     "CNG digests: md5, sha1, sha256, sha512 known answers; a copy continues on its own");
  /* RFC 4231 test case 2, and a key longer than the block (case 6) */
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned mlen = 0;
  char hex[129] = "", hex6[65] = "";
  const char *data = "what do ya want for nothing?";
  int good = HMAC(EVP_sha256(), "Jefe", 4, (const unsigned char *)data, strlen(data), mac, &mlen) != NULL;
  for (unsigned i = 0; good && i < mlen; i++) sprintf(hex + 2 * i, "%02x", mac[i]);
  unsigned char longkey[131];
  memset(longkey, 0xaa, sizeof longkey);
  const char *d6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  good = good && HMAC(EVP_sha256(), longkey, 131, (const unsigned char *)d6, strlen(d6), mac, &mlen) != NULL;
  for (unsigned i = 0; good && i < mlen; i++) sprintf(hex6 + 2 * i, "%02x", mac[i]);
  ok(good && strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") == 0 &&
     strcmp(hex6, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54") == 0,
     "HMAC-SHA256: RFC 4231 cases 2 and 6");
  ok(EVP_get_digestbyname("sha3-256") == NULL && EVP_get_digestbyname("whirlpool") == NULL &&
     strcmp(EVP_MD_get0_name(EVP_sha256()), "SHA256") == 0, "other names are unknown; OpenSSL's names");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--echo") == 0) {
    for (int i = 2; i < argc; i++) printf("[%s]\n", argv[i]);
    return 0;
  }
  SetConsoleOutputCP(CP_UTF8);
  printf("1..23\n");
  paths();
  digests();

  int round = 1;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    wchar_t *line;
    int bad;
    if (upk_win_cmdline((const char *const *)cases[c], 0, &line, &bad) != 0) { round = 0; continue; }
    int argcw;
    wchar_t **w = CommandLineToArgvW(line, &argcw);
    for (int i = 0; cases[c][i]; i++) {
      char *u = i < argcw ? upk_utf8(w[i]) : NULL;
      if (u == NULL || strcmp(u, cases[c][i]) != 0) {
        round = 0;
        printf("# case %d arg %d: want <%s> got <%s>\n", (int)c, i, cases[c][i], u ? u : "(none)");
      }
      free(u);
    }
    if (cases[c][argcw] != NULL) round = 0;
    LocalFree(w);
    free(line);
  }
  ok(round, "argv comes back from CommandLineToArgvW (spaces, quotes, backslashes, empty, UTF-8)");

  /* The child: this program, as the C runtime splits its line. */
  wchar_t self[MAX_PATH];
  GetModuleFileNameW(NULL, self, MAX_PATH);
  char *self8 = upk_utf8(self);
  const char *child[] = { self8, "--echo", "two words", "quote\"inside", "trailing\\", "", "a&b|c", NULL };
  wchar_t *line;
  int bad;
  char out[4096];
  ok(upk_win_cmdline(child, 0, &line, &bad) == 0, "a program's line is built");
  int code = run(self, line, out, sizeof out);
  free(line);
  ok(code == 0 && strcmp(out, "[two words]\r\n[quote\"inside]\r\n[trailing\\]\r\n[]\r\n[a&b|c]\r\n") == 0, "the child's C runtime receives the same argv");
  if (code != 0 || strstr(out, "[a&b|c]") == NULL) printf("# child said: %s\n", out);

  ok(upk_win_is_batch("C:/x/run.BAT") && upk_win_is_batch("a.cmd") && !upk_win_is_batch("a.exe") &&
     !upk_win_is_batch("bat"), "batch files are recognised by .bat and .cmd, any case");

  /* A batch file that prints its arguments and a marker file an injected command would create. */
  wchar_t dir[MAX_PATH], bat[MAX_PATH], marker[MAX_PATH];
  GetTempPathW(MAX_PATH, dir);
  swprintf(bat, MAX_PATH, L"%lsupkit-argv-%lu.cmd", dir, GetCurrentProcessId());
  swprintf(marker, MAX_PATH, L"%lsupkit-argv-%lu.hit", dir, GetCurrentProcessId());
  char *bat8 = upk_utf8(bat), *marker8 = upk_utf8(marker);
  FILE *f = _wfopen(bat, L"wb");
  fputs("@echo off\r\necho [%1] [%2] [%3]\r\n", f);
  fclose(f);
  DeleteFileW(marker);

  wchar_t cmd[MAX_PATH];
  GetSystemDirectoryW(cmd, MAX_PATH);
  wcscat(cmd, L"\\cmd.exe");
  char inject[600];
  snprintf(inject, sizeof inject, "x&echo hit>%s", marker8);
  const char *b1[] = { bat8, "two words", inject, "a|b^c<d>e", NULL };
  ok(upk_win_cmdline(b1, 1, &line, &bad) == 0, "a batch file's line is built");
  code = run(cmd, line, out, sizeof out);
  free(line);
  char want[1400];
  snprintf(want, sizeof want, "[\"two words\"] [\"%s\"] [\"a|b^c<d>e\"]", inject);
  ok(code == 0 && strstr(out, want) != NULL, "the batch file receives &, |, ^, <, > as text (quoted)");
  if (strstr(out, want) == NULL) printf("# batch said: %s\n# want: %s\n", out, want);
  ok(GetFileAttributesW(marker) == INVALID_FILE_ATTRIBUTES, "no command was injected through the batch file");

  static const char *const refused[] = { "%PATH%", "a\"b", "line\nbreak", "cr\rhere" };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    const char *b2[] = { bat8, "fine", refused[i], NULL };
    char name[96];
    snprintf(name, sizeof name, "a batch argument with %s is refused (EINVAL, index 2)",
             i == 0 ? "%" : i == 1 ? "a quote" : i == 2 ? "a line feed" : "a carriage return");
    line = NULL;
    ok(upk_win_cmdline(b2, 1, &line, &bad) == EINVAL && bad == 2 && line == NULL, name);
  }
  const char *b3[] = { "C:/a\"b.cmd", NULL };
  ok(upk_win_cmdline(b3, 0, &line, &bad) == EINVAL && bad == 0, "a program name with a quote is refused");
  const char *b4[] = { "x", "\xff\xfe", NULL };
  ok(upk_win_cmdline(b4, 0, &line, &bad) == EINVAL && bad == 0 && line == NULL,
     "an argument that is not UTF-8 is refused");

  DeleteFileW(bat);
  DeleteFileW(marker);
  free(self8); free(bat8); free(marker8);
  return failed ? 1 : 0;
}
