#!/bin/sh
# make test-windows: the Windows build's tests under Wine.
#
#   tests/windows/run.sh WIN_DIR      (WINE and WINEPREFIX set by mk/windows.mk)
#
# 1. The sources lock refuses a file whose digest differs.
# 2. smoke.exe (Lua + lfs + libcurl, linked statically) against the loopback HTTP server.
# 3. unit.exe: paths, platform.h, CNG digests and command-line quoting (BatBadBut) in C.
# 4. The TAP files that mean something on Windows, run by prove with upkit.exe under Wine;
#    the others are listed with the reason they are skipped. tests/sim/winforward.py runs
#    beside them for the simulator's Windows-side stand-ins (forward.exe, tests/sim/README.md).
#    WIN_TESTS_ONLY="FILE..." runs only those TAP files (prove's arguments; while working).
# 5. Ctrl-C and the REPL (tests/windows/console.sh).
# 6. The zip.
set -u
dir=$1
: "${WINE:?WINE is not set}" "${WINEPREFIX:?WINEPREFIX is not set}"
failed=0
tmp=$(mktemp -d)
srv=
fwd=
cleanup() {
  [ -n "$srv" ] && kill "$srv" 2>/dev/null
  [ -n "$fwd" ] && kill "$fwd" 2>/dev/null
  # the simulator's services a test left running (their pids are in the machines' folders)
  [ -d "$tmp/unix" ] && find "$tmp/unix" -path '*/services/*.pid' -type f | while read -r p; do
    kill "$(cat "$p")" 2>/dev/null
  done
  # Wine's services (RpcSs, PlugPlay...) keep this prefix's wineserver alive: end them with it
  [ -n "${wineserver:-}" ] && "$wineserver" -k 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
say() { printf '%s\n' "$*"; }
check() { # check NAME COMMAND...
  name=$1; shift
  if "$@" > "$tmp/out" 2>&1; then say "ok - $name"
  else failed=$((failed + 1)); say "not ok - $name"; sed 's/^/#   /' "$tmp/out"; fi
}

# 1. A digest that differs from the lock is a hard error, and nothing is unpacked.
bad_digest() {
  mkdir -p "$tmp/dl" "$tmp/src"
  file=$(grep -v '^#' tools/windows/sources.lock | awk 'NF == 4 && $3 ~ /\.dsc$/ { print $1, $2, $3; exit }')
  set -- $file
  printf 'not the package\n' > "$tmp/dl/$3"
  grep -v '^#' tools/windows/sources.lock | awk -v p="$1" '$1 == p' > "$tmp/lock"
  if tools/windows/fetch-sources.sh "$tmp/lock" "$tmp/dl" "$tmp/src" > "$tmp/bad.out" 2>&1; then
    echo "fetch-sources accepted a file whose digest differs"; return 1
  fi
  grep -q "SHA-256 .* but .* pins" "$tmp/bad.out" || { cat "$tmp/bad.out"; return 1; }
  [ -z "$(ls "$tmp/src")" ] || { echo "something was unpacked"; return 1; }
}
check "fetch-sources refuses a file whose SHA-256 differs from the lock" bad_digest

# The Wine prefix is created on first use (about 12 s); a wineserver kept alive for the run
# makes each later start quicker.
mkdir -p "$WINEPREFIX"
wineserver=$(dirname "$(command -v "$WINE")")/wineserver
[ -x "$wineserver" ] || wineserver=wineserver
"$wineserver" -p 60 2>/dev/null

# 2. smoke.exe against the loopback server.
python3 tests/lib/httpd.py --watch-pid $$ > "$tmp/url" 2> "$tmp/httpd.err" &
srv=$!
i=0
while [ ! -s "$tmp/url" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
url=$(head -1 "$tmp/url")
smoke() {
  [ -n "$url" ] || { echo "the loopback HTTP server did not start"; cat "$tmp/httpd.err"; return 1; }
  "$WINE" "$dir/smoke.exe" "$url"
}
check "smoke.exe: Lua, lfs and libcurl (Schannel build) under Wine against $url" smoke
sed 's/^/#   /' "$tmp/out"

# 3. unit.exe.
check "unit.exe: UTF-16 and long paths, platform.h, command lines for programs and batch files" \
  "$WINE" "$dir/unit.exe"
sed 's/^/#   /' "$tmp/out"

# The Unix side of the simulator's Windows-side stand-ins (forward.exe), for tests/windows/octopus.lua:
# it runs the simulator's stand-ins, its command line, the Linux build and its own echo for upkit.exe.
# (A stopped 2019+ node marks itself offline after 0.05 s instead of 2, as tests/lib/octofix.lua has it.)
mkdir -p "$tmp/unix"
OCTOSIM_FAULT_NODE_OFFLINE_DELAY=0.05 python3 tests/sim/winforward.py serve --info "$tmp/forward.json" --watch-pid $$ --max-seconds 1200 \
  --wineprefix "$WINEPREFIX" --allow "octosim=python3 $PWD/tests/sim/octosim.py" \
  --allow "upkit-linux=${UPKIT_LINUX_BIN:-$PWD/build/upkit}" \
  --allow "echo=python3 $PWD/tests/sim/winforward.py echo" 2> "$tmp/forward.err" &
fwd=$!
i=0
while [ ! -s "$tmp/forward.json" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done

# 4. The TAP suite with upkit.exe.
WIN_TESTS="tests/json.lua tests/json_conformance.lua tests/json_fuzz.lua tests/version.lua tests/sql_mssql.lua
  tests/windows/hash.lua tests/windows/fs.lua tests/windows/proc.lua tests/windows/sys.lua
  tests/windows/http.lua tests/windows/sql.lua tests/windows/procedure.lua tests/windows/octopus_cli.lua
  tests/windows/octopus.lua"
skip_reason() {
  case $1 in
    tests/errors.lua) echo "reads the sources; it runs under Wine as on Linux, so make test covers it" ;;
    tests/procedure*.lua|tests/resume.lua|tests/journal*.lua|tests/cli.lua|tests/mssql_steps.lua)
      echo "starts upkit through sh (T.run_upkit, T.sh: redirections, rm -rf, kill); tests/windows/procedure.lua runs the engine here" ;;
    tests/remote*.lua) echo "drives OpenSSH and a POSIX shell on the node" ;;
    tests/sql*.lua) echo "uses sh, PostgreSQL or backups whose paths Wine splits between its two sides; tests/windows/sql.lua runs SQLite through odbc32" ;;
    tests/repl*.lua|tests/progress_pty.lua|tests/debug*.lua) echo "drives a Linux pseudo-terminal; tests/windows/console.sh runs the REPL from a pipe and Ctrl-C" ;;
    tests/octo*.lua|tests/sim.lua|tests/installer.lua|tests/install.lua|tests/demo.lua)
      echo "drives upkit and the simulator through sh (octofix, T.run_upkit); tests/windows/octopus.lua runs backup, in-place-upgrade and rollback here through the Windows-side stand-ins" ;;
    tests/http*.lua) echo "starts its servers through sh; tests/windows/http.lua covers upkit.http" ;;
    tests/fs*.lua|tests/hash.lua|tests/proc.lua) echo "checks against sh and coreutils; tests/windows/ has the Windows form" ;;
    tests/win.lua) echo "checks that upkit.win is absent outside Windows; tests/windows/sys.lua tests it here" ;;
    tests/platform.lua) echo "looks up sh and sets POSIX modes; tests/windows/proc.lua and sys.lua test proc.which and upkit.uuid" ;;
    *) echo "runs POSIX shell commands (io.popen/os.execute with sh syntax) or reads the source tree" ;;
  esac
}
for f in tests/*.lua; do
  case " $(echo $WIN_TESTS) " in *" $f "*) continue ;; esac
  say "# skipped $f: $(skip_reason "$f")"
done
abs=$(cd "$dir" && pwd)
cat > "$tmp/upkit-wine" <<WRAP
#!/bin/sh
exec "$WINE" "$abs/upkit.exe" "\$@"
WRAP
chmod +x "$tmp/upkit-wine"
winpath="Z:$(printf '%s' "$abs" | tr / '\\')"
tap() {
  UPKIT_BIN="$tmp/upkit-wine" WINEPATH="$winpath" UPKIT_TEST_HTTP="$url" UPKIT_TEST_UNIX_TMP="$tmp/unix" \
    UPKIT_TEST_FORWARD="$tmp/forward.json" UPKIT_TEST_FORWARD_EXE="$abs/forward.exe" \
    prove --timer --exec "$PWD/tests/lib/runtest" ${WIN_TESTS_ONLY:-$WIN_TESTS}
}
check "the TAP files under Wine with upkit.exe" tap
sed 's/^/#   /' "$tmp/out"
[ -s "$tmp/forward.err" ] && sed 's/^/#   winforward: /' "$tmp/forward.err"

# 5. Ctrl-C (Wine delivers SIGINT as CTRL_C_EVENT) and the REPL reading a pipe.
check "Ctrl-C and the REPL: tests/windows/console.sh" sh tests/windows/console.sh "$abs/upkit.exe"
sed 's/^/#   /' "$tmp/out"

# 6. The zip of make dist-windows: its SHA256SUMS hold, and upkit.exe unpacked elsewhere finds
#    its procedures from another folder.
zip=$(ls "$dir"/upkit-*-windows-x64.zip 2>/dev/null | head -1)
dist() {
  mkdir -p "$tmp/dist" && python3 -m zipfile -e "$zip" "$tmp/dist" &&
  (cd "$tmp/dist/upkit" && sha256sum --quiet -c SHA256SUMS) &&
  (cd / && "$WINE" "$tmp/dist/upkit/upkit.exe" list) > "$tmp/list" 2>&1 &&
  grep -q '^backup ' "$tmp/list" && grep -q '^rollback ' "$tmp/list" || { cat "$tmp/list"; return 1; }
  # the test-only stand-in stays out of it
  ! find "$tmp/dist" -iname 'forward*' | grep -q . || { echo "the zip holds the test stand-in"; return 1; }
}
check "the zip: SHA256SUMS verify; upkit.exe lists its procedures from another folder; no test stand-in" dist

[ $failed -eq 0 ] && say "test-windows: all passed" || say "test-windows: $failed failed"
[ $failed -eq 0 ]
