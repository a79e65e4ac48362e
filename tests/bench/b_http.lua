-- Bulk REST: disabling 10,000 machines on the simulator with octopus set_disabled
-- (paged GETs, then whole-resource PUTs over c:all) against a shell loop of curl
-- GET + PUT per machine (timed on a sample, reported per machine); and c:get
-- requests per second on a keep-alive connection against one curl invocation
-- fetching the same URL list.
package.path = "tests/bench/?.lua;tests/lib/?.lua;" .. package.path
local B = require "benchlib"
local S = require "httpd"
local http = require "upkit.http"
local octopus = require "upkit.octopus"

local made = {}
local shim = { tmpdir = function()
  local d = B.sh("mktemp -d " .. B.q(B.workdir() .. "/http.XXXXXX")):gsub("%s+$", "")
  made[#made + 1] = d
  return d
end }

local MACHINES, SAMPLE = 10000, 500
local info, sim = S.octosim(shim, "2023.4.8166", string.format("--machines %d --files 5 --package-mb 1", MACHINES))
local dir = shim.tmpdir()

-- upkit: set_disabled over every machine
local s = octopus.connect { url = sim.url, api_key = info.api_key, log = function() end }
local result
local t_upkit = B.time(function()
  B.sh(string.format("sqlite3 %s 'UPDATE Machine SET IsDisabled = 0'", B.q(info.database)))
  result = s:set_disabled("machines", true, { concurrency = 8 })
end, 1)
s:close()
assert(result.changed == MACHINES, "set_disabled changed " .. result.changed)

-- curl: GET + PUT per machine, on a sample
B.sh(string.format("sqlite3 %s 'UPDATE Machine SET IsDisabled = 0'", B.q(info.database)))
local cfg = dir .. "/curl.cfg"
local f = assert(io.open(cfg, "w"))
f:write('header = "X-Octopus-ApiKey: ', info.api_key, '"\nheader = "Content-Type: application/json"\nsilent\nfail\n')
f:close()
local script = dir .. "/disable.sh"
f = assert(io.open(script, "w"))
f:write(string.format([[
u=%s; k=%s
for i in $(seq 1 %d); do
  curl -K "$k" "$u/api/Spaces-1/machines/Machines-$i" | sed 's/"IsDisabled": false/"IsDisabled": true/' |
    curl -K "$k" -X PUT --data-binary @- "$u/api/Spaces-1/machines/Machines-$i" > /dev/null || exit 1
done
]], B.q(sim.url), B.q(cfg), SAMPLE))
f:close()
local t_curl = B.sh_time("sh " .. B.q(script), 1)
local disabled = tonumber(B.sh(string.format("sqlite3 %s 'SELECT COUNT(*) FROM Machine WHERE IsDisabled = 1'",
  B.q(info.database))):match("%d+"))
assert(disabled == SAMPLE, "the curl loop disabled " .. disabled)
sim:stop()

B.report { name = "octopus set_disabled, 10,000 machines", unit = "mach/s", upkit = MACHINES / t_upkit,
           tool = "curl GET+PUT loop (500 sampled)", other = SAMPLE / t_curl, aim = 10 }

-- keep-alive GETs against one curl invocation with the same URL list
local srv = S.httpd(shim)
local N = 3000
local urls = dir .. "/urls.cfg"
f = assert(io.open(urls, "w"))
for i = 1, N do f:write('url = "', srv.url, '/status/200?i=', i, '"\noutput = "/dev/null"\n') end
f:close()
local c = http.client { base = srv.url }
for i = 1, 50 do c:get("/status/200?i=" .. i) end  -- warm up
local t_get = B.time(function()
  for i = 1, N do
    local r = c:get("/status/200?i=" .. i)
    if r.status ~= 200 then error("status " .. r.status) end
  end
end, 3)
c:close()
local t_curlget = B.sh_time("curl -s -K " .. B.q(urls), 3)
srv:stop()
B.report { name = "c:get keep-alive, 3,000 requests", unit = "req/s", upkit = N / t_get,
           tool = "curl -K url-list (one process)", other = N / t_curlget, aim = 0.8 }

for _, d in ipairs(made) do os.execute("rm -rf " .. B.q(d)) end
