-- make demo's job: clone a simulated 3.17.14 server and upgrade the clone to the newest version.
local T = require "upkit.test"

T.test("upkit run demo clones, upgrades and tests a simulated Octopus server, then cleans up", function()
  local dir = T.tmpdir()
  local bin = T.upkit_bin()
  if bin:sub(1, 1) ~= "/" then bin = os.getenv("PWD") .. "/" .. bin end
  local out, status = T.sh(string.format("cd %s && TMPDIR=%s %s run demo 2>&1", T.q(dir), T.q(dir), T.q(bin)))
  T.eq(status, 0, out:sub(-2000))
  T.contains(out, "upgrade path: 3.17.14 -> 2021.1.7687 -> 2024.4.7000 -> 2025.4.10700")
  T.contains(out, "instance tests passed: version 2025.4.10700")
  T.contains(out, "Result: success")
  T.eq(T.sh("ls " .. T.q(dir) .. " | grep -c upkit-demo"), "0\n", "the demo's temporary folder is removed")
  -- the summary names a run folder that is still there after the demo's cleanup
  local run_dir = out:match("Summary of clone%-instance %(run folder ([^)]+)%)")
  T.ok(run_dir, "the summary names the run folder")
  T.match(run_dir, "^upkit%-runs/clone%-instance%-", "in the working folder's upkit-runs")
  T.ok(T.read_file(dir .. "/" .. run_dir .. "/journal.jsonl"), "the run folder the summary names exists: " .. run_dir)
  T.ok(T.read_file(dir .. "/" .. run_dir .. "/log.txt"), "with its log")
  T.contains(out, "demo folder removed (the simulated servers); the run's journal and log stay in upkit-runs/")
  -- a stopped 2019+ node marks itself offline a moment later (a child of the server): give it 10 s
  local left
  for _ = 1, 20 do
    left = T.sh("pgrep -f " .. T.q("[o]ctosim.*" .. dir) .. " | wc -l")
    if left == "0\n" then break end
    T.sh("sleep 0.5")
  end
  T.eq(left, "0\n", "no simulated server is left running")
end)

T.done()
