-- Progress on long work is drawn on standard error when it is a terminal
-- (through tmux), and never when it is not.
package.path = "tests/lib/?.lua;" .. package.path
local T = require "upkit.test"
local pty = require "pty"
local pg = require("pg").start()

local dir = T.tmpdir()
local conn = pg.createdb("progress")
pg.psql("CREATE TABLE events AS SELECT g AS id, md5(CAST(g AS text)) AS h FROM generate_series(1, 200000) g", "progress")
T.sh("head -c 50M /dev/zero > " .. T.q(dir .. "/blob"))

local script = dir .. "/work.lua"
T.write_file(script, string.format([[
local sql = require "upkit.sql"
local fs = require "upkit.fs"
fs.copy(%q, %q, { overwrite = true })
os.remove(%q)
sql.backup(%q, { to = %q })
sql.restore(%q, { from = %q })
print("all done")
]], dir .. "/blob", dir .. "/blob-copy", dir .. "/events.lbak", conn, dir .. "/events.lbak",
    pg.conn_for("restored"), dir .. "/events.lbak"))

T.test("in a terminal: fs.copy, sql.backup and sql.restore draw their progress", function()
  pg.psql('CREATE DATABASE "restored"', "postgres")
  pty.run(T.q(T.upkit_bin()) .. " run " .. T.q(script), function(term)
    term:wait_for("all done")
    local screen = term:screen()
    T.match(screen, "fs%.copy: 1/1 files, 52%.4/52%.4 MB")
    T.match(screen, "sql%.backup: [%w_.\"]*events: %d+ rows, %d+ s")
    T.match(screen, "sql%.restore: events: %d+ rows, %d+ s")
    T.eq(term:wait_exit(), 0)
  end)
end)

T.test("without a terminal nothing is drawn: standard error stays empty", function()
  pg.psql('DROP DATABASE "restored"', "postgres")
  pg.psql('CREATE DATABASE "restored"', "postgres")
  local out, st = T.sh(T.q(T.upkit_bin()) .. " run " .. T.q(script) .. " 2>" .. T.q(dir .. "/err"))
  T.eq(st, 0)
  T.eq(out, "all done\n")
  T.eq(T.read_file(dir .. "/err"), "")
end)

pg.stop()
T.done()
