-- make install: the binary, lua/ and scripts/ under PREFIX (and DESTDIR), and an
-- installed upkit that works from any folder. The default PREFIX is used so that
-- the binary under test is not rebuilt while other tests run.
local T = require "upkit.test"

local dir = T.tmpdir()

T.test("make install DESTDIR=... puts the binary, the library and the procedures in place", function()
  local out, status = T.sh(string.format("make --no-print-directory install DESTDIR=%s 2>&1",
                                         T.q(dir .. "/stage")))
  T.eq(status, 0, out)
  local root = dir .. "/stage/usr/local"
  T.ok(io.open(root .. "/bin/upkit"), "bin/upkit")
  T.ok(io.open(root .. "/share/upkit/lua/upkit/procedure.lua"), "lua library")
  T.ok(io.open(root .. "/share/upkit/scripts/clone-instance.lua"), "bundled procedures")
  T.eq((T.sh("stat -c %a " .. T.q(root .. "/bin/upkit"))), "755\n")
end)

T.test("the installed upkit runs from another folder and finds its procedures", function()
  local bin = dir .. "/stage/usr/local/bin/upkit"
  local out, status = T.sh(string.format("cd / && env -u UPKIT_PATH %s list", T.q(bin)))
  T.eq(status, 0, out)
  T.contains(out, "clone-instance")
  T.contains(out, "rollback")
  out, status = T.sh(string.format("cd / && %s run backup --help", T.q(bin)))
  T.eq(status, 0, out)
  T.contains(out, "backup_dir")
  T.contains(out, dir .. "/stage/usr/local/bin/../share/upkit/scripts/backup.lua")
end)

T.test("make uninstall removes what install put there", function()
  local out, status = T.sh(string.format("make --no-print-directory uninstall DESTDIR=%s 2>&1",
                                         T.q(dir .. "/stage")))
  T.eq(status, 0, out)
  T.eq(io.open(dir .. "/stage/usr/local/bin/upkit"), nil)
  T.eq(io.open(dir .. "/stage/usr/local/share/upkit/scripts/backup.lua"), nil)
end)

T.done()
