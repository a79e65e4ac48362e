#!/bin/sh
# Ctrl-C and the REPL of upkit.exe under Wine (run by tests/windows/run.sh).
#
#   tests/windows/console.sh UPKIT_EXE      (WINE and WINEPREFIX set)
#
# Wine turns a SIGINT to the process into CTRL_C_EVENT for its console
# control handlers (SetConsoleCtrlHandler), so kill -INT stands in for the
# operator's Ctrl-C. Prints TAP; exits 1 when a check fails.
set -u
exe=$1
: "${WINE:?WINE is not set}"
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
n=0 failed=0
ok() { n=$((n + 1)); printf 'ok %d - %s\n' $n "$1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); printf 'not ok %d - %s\n' $n "$1"; sed 's/^/#   /' "$tmp/out"; }

# start FILE ARGS...: upkit.exe in the background, its output in $tmp/out
start() { "$WINE" "$exe" "$@" > "$tmp/out" 2>&1 & pid=$!; }
# until TEXT: wait (at most 30 s) for TEXT in the output
until_out() {
  i=0
  while ! grep -q "$1" "$tmp/out" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 300 ] && return 1; sleep 0.1
  done
}
finish() { wait "$pid"; rc=$?; pid=; return 0; }

# 1. One Ctrl-C while a script sleeps: INTERRUPTED, exit code 130.
cat > "$tmp/sleep.lua" <<'LUA'
local core = require "upkit"
io.stdout:write("sleeping\n") io.stdout:flush()
local ok, e = pcall(core.sleep, 30)
print("caught " .. tostring(type(e) == "table" and e.code))
error(e)
LUA
start run "$tmp/sleep.lua"
if until_out sleeping; then kill -INT "$pid"; fi
finish
if [ "$rc" = 130 ] && grep -q "caught INTERRUPTED" "$tmp/out"; then ok "Ctrl-C in core.sleep raises INTERRUPTED; the run exits 130"
else echo "exit code $rc" >> "$tmp/out"; notok "Ctrl-C in core.sleep raises INTERRUPTED; the run exits 130"; fi

# 2. A second Ctrl-C before the first is taken (the script is inside C code that
#    does not look at the flag: Lua's os.execute waiting for a child) exits 130 at once.
cat > "$tmp/stubborn.lua" <<'LUA'
io.stdout:write("waiting\n") io.stdout:flush()
os.execute(arg[1])
print("not reached")
LUA
printf 'require("upkit").sleep(40)\n' > "$tmp/held.lua"
start run "$tmp/stubborn.lua" "$(printf 'Z:%s run Z:%s' "$exe" "$tmp/held.lua" | tr / '\\')"
if until_out waiting; then sleep 2; kill -INT "$pid"; sleep 1; kill -INT "$pid"; fi
finish
held=$(pgrep -f "$tmp/held.lua" || true)
[ -n "$held" ] && kill $held
if [ "$rc" = 130 ] && grep -q "interrupted twice" "$tmp/out" && ! grep -q "not reached" "$tmp/out"
then ok "a second Ctrl-C before the first is taken exits 130 at once"
else echo "exit code $rc" >> "$tmp/out"; notok "a second Ctrl-C before the first is taken exits 130 at once"; fi

# 3. Ctrl-C while proc.run waits for a child: the child's tree is ended, exit 130.
cat > "$tmp/child.lua" <<'LUA'
local proc = require "upkit.proc"
io.stdout:write("starting\n") io.stdout:flush()
proc.run({ arg[1], "run", arg[2] }, { timeout = 60 })
LUA
printf 'io.stdout:write("child\\n") io.stdout:flush()\nrequire("upkit").sleep(40)\n' > "$tmp/inner.lua"
start run "$tmp/child.lua" "$(printf 'Z:%s' "$exe" | tr / '\\')" "$(printf 'Z:%s' "$tmp/inner.lua" | tr / '\\')"
sleep 0
if until_out starting; then sleep 3; kill -INT "$pid"; fi
finish
sleep 1
left=$(pgrep -f "$tmp/inner.lua" || true)
if [ "$rc" = 130 ] && [ -z "$left" ]; then ok "Ctrl-C while proc.run waits ends the child and exits 130"
else echo "exit code $rc; still running: $left" >> "$tmp/out"; [ -n "$left" ] && kill $left; notok "Ctrl-C while proc.run waits ends the child and exits 130"; fi

# 4. The REPL reading a pipe (not a console, so not interactive, as on Linux): locals live
#    for the session, modules are globals, and an error ends it with exit code 1 like a script.
printf 'local x = 6 * 7\nprint("x=" .. x)\nprint(json.encode({ a = 1 }))\nprint(#hash.new("sha256"):update("a"):hex())\nerror("boom")\nprint("not reached")\n' |
  "$WINE" "$exe" repl > "$tmp/out" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q '^x=42' "$tmp/out" && grep -q 'boom' "$tmp/out" && grep -q '{"a":1}' "$tmp/out" &&
   grep -q '^64' "$tmp/out" && ! grep -q 'not reached' "$tmp/out"
then ok "the REPL from a pipe: locals kept, modules global, an error ends it with exit 1"
else echo "exit code $rc" >> "$tmp/out"; notok "the REPL from a pipe: locals kept, modules global, an error ends it with exit 1"; fi

# 5. Ctrl-C while a piped REPL runs a statement: INTERRUPTED, exit code 130 (as on Linux).
mkfifo "$tmp/in"
"$WINE" "$exe" repl < "$tmp/in" > "$tmp/out" 2>&1 & pid=$!
exec 3> "$tmp/in"
printf 'print("go") upkit.sleep(30) print("not reached")\n' >&3
if until_out '^go'; then sleep 1; kill -INT "$pid"; fi
finish
exec 3>&-
if [ $rc = 130 ] && grep -q 'INTERRUPTED' "$tmp/out" && ! grep -q 'not reached' "$tmp/out"
then ok "Ctrl-C in a piped REPL's statement: INTERRUPTED, exit 130"
else echo "exit code $rc" >> "$tmp/out"; notok "Ctrl-C in a piped REPL's statement: INTERRUPTED, exit 130"; fi

printf '1..%d\n' $n
[ $failed = 0 ]
