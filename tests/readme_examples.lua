-- What README.md promises about files a user's procedure leaves behind: the
-- "Writing a procedure" example (read from README.md, so the test follows the
-- README) backs up a SQLite database, whose backup gets a <file>.sha256 beside it,
-- and its undo removes both; fs.mirror's relative manifest lands in the working folder;
-- the "Upgrading Octopus Deploy" example config has every parameter its commands need.
local T = require "upkit.test"

local function readme_example()
  local text = assert(T.read_file("README.md"))
  local section = assert(text:match("\n## Writing a procedure\n(.-)\n## "), "README.md: no 'Writing a procedure'")
  return assert(section:match("```lua\n(.-)```"), "README.md: no Lua example under 'Writing a procedure'")
end

T.test("README's example procedure: a SQLite backup has its .sha256 beside it, and the example's undo removes both", function()
  local dir = T.tmpdir()
  T.write_file(dir .. "/archive-db.lua", readme_example())
  local _, status = T.sh("sqlite3 " .. T.q(dir .. "/app.db") .. " 'CREATE TABLE t(x); INSERT INTO t VALUES (1);'")
  T.eq(status, 0, "sqlite3 made the database")
  local db = "--set " .. T.q("db=Driver=SQLite3;Database=" .. dir .. "/app.db")
  local out, err, code = T.run_upkit(dir, "run ./archive-db.lua --yes " .. db)
  T.eq(code, 0, out .. err)
  T.ok(T.read_file(dir .. "/backups/db.bak"), "the backup is there")
  local side = T.read_file(dir .. "/backups/db.bak.sha256")
  T.match(side or "", "^%x+  db%.bak\n$", "sql.backup wrote db.bak.sha256, a sha256sum line")
  out, err, code = T.run_upkit(dir, "run ./archive-db.lua --undo --yes")
  T.eq(code, 0, out .. err)
  T.contains(out, "Result: undone")
  T.eq(T.sh("ls -A " .. T.q(dir .. "/backups")), "", "the undo removed the backup and its .sha256")
end)

T.test("fs.mirror: a relative manifest is relative to the working folder, not to the destination", function()
  local dir = T.tmpdir()
  T.sh("mkdir -p " .. T.q(dir .. "/src/sub") .. " && echo a > " .. T.q(dir .. "/src/a.txt") ..
       " && echo b > " .. T.q(dir .. "/src/sub/b.txt"))
  T.write_file(dir .. "/m.lua", [[
local fs = require "upkit.fs"
fs.mirror("src", "dst", { manifest = "SHA256SUMS" })
fs.mirror("src", "dst2", { manifest = "dst2/SHA256SUMS" })
]])
  local out, err, code = T.run_upkit(dir, "run ./m.lua")
  T.eq(code, 0, out .. err)
  T.ok(T.read_file(dir .. "/SHA256SUMS"), "written in the working folder")
  T.eq(T.read_file(dir .. "/dst/SHA256SUMS"), nil, "not in the destination")
  T.eq(T.read_file(dir .. "/dst2/SHA256SUMS"), T.read_file(dir .. "/SHA256SUMS"),
       "dst .. '/SHA256SUMS' keeps it beside the copy, with the same lines")
  local _, status = T.sh("cd " .. T.q(dir .. "/dst2") .. " && sha256sum -c --quiet SHA256SUMS")
  T.eq(status, 0, "sha256sum -c reads it from the destination")
end)

T.test("README's example site.lua is enough for every walkthrough procedure's --plan", function()
  local dir = T.tmpdir()
  local text = assert(T.read_file("README.md"))
  local section = assert(text:match("\n## Upgrading Octopus Deploy\n(.-)\n## "))
  T.write_file(dir .. "/site.lua", assert(section:match("```lua\n(.-)```"), "the example site.lua"))
  local names = {}
  for block in section:gmatch("```sh\n(.-)```") do
    for name in block:gmatch("upkit run (%S+)") do names[#names + 1] = name end
  end
  T.ok(#names == 5, "five procedures in the walkthrough")
  for _, name in ipairs(names) do
    -- the example's api_key_file is a Windows path that does not exist here: a plan reads no secret
    local out, err, code = T.run_upkit(dir, "run " .. name .. " --config site.lua --plan")
    T.eq(code, 0, name .. ": " .. out .. err)
    T.eq(err:match("warn[^\n]*"), nil, name .. ": no warning about the example's keys")
  end
end)

T.done()
