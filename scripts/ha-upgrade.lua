-- ha-upgrade: upgrade an Octopus Server cluster (high availability: several
-- nodes sharing one database and one set of folders).
--
-- The guide's high-availability notes and Octopus's own upgrade runbook: stop
-- every node, back up, upgrade one node (it upgrades the database), then
-- install the new version on the other nodes without a database upgrade, start
-- them. Since 2023.2.9755 the database upgrade aborts while another node is
-- running ("can be highly destructive"), so every instance of every node is
-- drained and stopped first, and the procedure waits until every node has
-- marked itself offline in the database (it never writes a node's status:
-- STILL_RUNNING when a node does not go offline within node_offline_timeout).
-- In order: check every node (its program, instance, database; no online node
-- left out); download the installers; back up master key, licence and config;
-- maintenance on; wait until idle; delete the Service Watchdogs (watchdog=true);
-- drain and stop every node; wait until they are offline; back up database and
-- folders; upgrade this node through the upgrade path; install the target on
-- the other nodes, checking each program's version; start and undrain every
-- node; create the watchdogs again; test; maintenance off. `upkit run rollback`
-- with the same backup_dir and nodes puts the whole cluster back (database,
-- folders, and the previous version on every node).
--
-- This node (where upkit runs: server_exe, msiexec, service_control,
-- file_version) upgrades the database; the other nodes are reached through
-- OpenSSH (nodes = { "ssh://octo2", ... }, known_hosts, identity, parallel) and
-- run their own Octopus.Server, msiexec and service control program
-- (node_server_exe, node_msiexec, node_service_control, node_file_version: the
-- same on every node; `nodes = "local"` is the local special case: the other
-- node's programs are on this machine). With this_node = false the machine
-- upkit runs on is no node: every node is in nodes, and the first one is the
-- main one (its Octopus.Server, through OpenSSH, serves every step that this
-- node's would: the master key, the configuration, the database upgrade;
-- server_exe, msiexec, service_control and file_version are not used). Each
-- node's progress is kept in the run folder's nodes.json; --resume skips nodes
-- already at the target. See README "Clusters".
local upkit = require "upkit"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local Cl = require "upkit.upgrade.cluster"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version", "watchdog", "msiexec",
  "db", "backup_dir", "download_url", "installer_digests", "versions_feed", "target_version", "timeout", "verify_tls", "skip_license_check",
  { name = "node_offline_timeout", type = "number", default = 300,
    describe = "seconds to wait, after the nodes stopped, until each has marked itself offline" })
for _, p in ipairs(Cl.params()) do params[#params + 1] = p end

-- Every node: { label, cli [, r] }; the main one (this node, or the first of nodes) first.
local function nodes(ctx)
  local list = {}
  if ctx.params.this_node then list[1] = { label = "this node", cli = U.cli(ctx), url = ctx.params.server_url } end
  for _, n in ipairs(Cl.nodes(ctx)) do list[#list + 1] = n end
  list[1].url = ctx.params.server_url
  return list
end

-- The main node's site for the upgrade along the path: this node's msiexec, or
-- the first node's (the installer copied there once, verified).
local function main_site(ctx)
  local site = S.main_site(false)(ctx)
  if ctx.params.this_node then return site end
  local first = Cl.nodes(ctx)[1]
  site.msiexec = nil  -- the first node's (node_msiexec)
  site.install = function(inst) return Cl.install_on(ctx, first, inst) end
  return site
end

-- Run fn(node) on every node in turn, recording each node's progress; a node that
-- fails stops the step with every node's state in the message.
local function each_node(ctx, what, fn)
  for _, node in ipairs(nodes(ctx)) do
    local ok, err = pcall(fn, node)
    if not ok then
      Cl.progress(ctx, node.label, "failed to " .. what .. ": " .. (upkit.is_error(err) and err.message or tostring(err)))
      if upkit.is_error(err) then
        err.message = err.message .. " [nodes: " .. Cl.summary(ctx, Cl.labels(ctx)) .. "]"
      end
      error(err, 0)
    end
  end
end

local function online(api)
  local names = {}
  for _, n in ipairs(api:nodes()) do if not n.IsOffline then names[#names + 1] = n.Name end end
  return names
end

-- Nodes that have not marked themselves offline: OctopusServerNodeStatus (liveness from
-- 2019, OctopusDeploy/Issues #5729), read only. nil before 2019 (no such table: a
-- node's liveness was its LastSeen in OctopusServerNode, which the upgrade of those
-- versions does not check).
local function not_offline(db)
  if not U.table_exists(db, "OctopusServerNodeStatus") then return nil end
  local names = {}
  for row in db:rows("SELECT n.Name AS Name FROM OctopusServerNodeStatus s JOIN OctopusServerNode n ON n.Id = s.Id " ..
                     "WHERE s.IsOffline = 0 OR s.IsOffline IS NULL ORDER BY n.Name") do
    names[#names + 1] = row.Name
  end
  return names
end

local procedure = {
  name = "ha-upgrade",
  summary = "Upgrade every node of a high-availability Octopus Server cluster, with a backup first and a test after",
  params = params,
  steps = {
    S.connect(),
    {
      name = "check-nodes",
      describe = "check every node against the main one: its program, instance and database; no online node left out",
      check = function(ctx)
        local main_cs = U.cli(ctx):connection_string()
        local main_version = U.api(ctx):version()
        Cl.check(ctx, main_cs, main_version, nodes(ctx)[1].label)
        local up = online(U.api(ctx))
        if #up > #nodes(ctx) then
          upkit.error("STILL_RUNNING", string.format("%d nodes are online (%s) but only %d are given (%s): every " ..
            "node must be stopped for the upgrade", #up, table.concat(up, ", "), #nodes(ctx),
            ctx.params.this_node and "this node and nodes" or "nodes"))
        end
        return true
      end,
      run = function(ctx)
        for _, node in ipairs(nodes(ctx)) do
          Cl.progress(ctx, node.label, "checked: Octopus " .. node.cli:program_version())
        end
      end,
    },
    S.download_installers(),
    S.master_key(),
    S.licence_and_config(),
    S.maintenance_on(),
    S.wait_idle(),
    {
      name = "watchdog-delete",
      describe = "delete the Service Watchdog of every node (watchdog=true)",
      run = function(ctx)
        if not ctx.params.watchdog then ctx.log("watchdog=false: no Service Watchdog to delete") return end
        for _, node in ipairs(nodes(ctx)) do node.cli:watchdog("delete", "*") end
      end,
    },
    {
      name = "drain-and-stop-nodes",
      describe = "drain and stop every instance of every node, then wait until every node has marked itself offline",
      check = function(ctx)
        for _, node in ipairs(nodes(ctx)) do
          U.states(node.cli, { url = node.url, verify = ctx.params.verify_tls })
        end
        return true
      end,
      run = function(ctx)
        local stopped, i = {}, 0
        each_node(ctx, "stop", function(node)
          i = i + 1
          stopped[i] = U.stop_all(node.cli, { url = node.url, verify = ctx.params.verify_tls, log = function(fmt, ...)
            ctx.log("%s: " .. fmt, node.label, ...)
          end })
          Cl.progress(ctx, node.label, "drained and stopped")
        end)
        U.set_api(ctx, nil)
        local function poll()  -- a new connection each time: no snapshot or lock held while the nodes write
          local db <close> = U.connect(U.db_connection(ctx))
          return not_offline(db)
        end
        local deadline = upkit.now() + ctx.params.node_offline_timeout
        local left = poll()
        if not left then
          ctx.log("Octopus %s keeps no node status (OctopusServerNodeStatus arrived in 2019): nothing to wait for",
                  ctx.state.source_version)
          left = {}
        end
        while #left > 0 do
          if upkit.now() > deadline then
            upkit.error("STILL_RUNNING", string.format("after %g s these nodes have not marked themselves offline: %s; " ..
              "a node that still runs must be stopped before the database upgrade", ctx.params.node_offline_timeout,
              table.concat(left, ", ")))
          end
          upkit.sleep(1)
          left = poll()
        end
        ctx.log("every node is offline")
        return { stopped_by_node = stopped }
      end,
    },
    S.backup_database(),
    S.backup_folders(),
    S.write_manifest(),
    S.upgrade("upgrade-this-node", "install each version on the path on the main node (this node, or the first " ..
      "of nodes with this_node=false) and upgrade the database", main_site),
    {
      name = "install-other-nodes",
      describe = "install the target version on the other nodes (their database is upgraded already)",
      run = function(ctx)
        local inst = U.fetch(ctx, ctx.state.target)
        inst.version = ctx.state.target
        return { installed_nodes = Cl.install(ctx, inst) }
      end,
    },
    {
      name = "start-and-undrain",
      describe = "start the instance on every node and take it out of drain",
      run = function(ctx)
        each_node(ctx, "start", function(node)
          U.start(node.cli, { ctx.params.instance })
          Cl.progress(ctx, node.label, "started and undrained")
        end)
        U.set_api(ctx, U.wait_api(ctx.params.server_url, ctx.params.api_key, ctx.params.verify_tls, 120))
        for i, node in ipairs(nodes(ctx)) do U.others_left_stopped(ctx, node.cli, ctx.state.stopped_by_node[i]) end
      end,
    },
    {
      name = "watchdog-create",
      describe = "create the Service Watchdog of every node again (watchdog=true)",
      run = function(ctx)
        if not ctx.params.watchdog then ctx.log("watchdog=false: no Service Watchdog to create") return end
        for _, node in ipairs(nodes(ctx)) do node.cli:watchdog("create", "*") end
      end,
    },
    {
      name = "test",
      describe = "test the cluster: every node runs the target and is online; version, health, row counts, folders",
      run = function(ctx)
        local api = U.api(ctx)
        local db <close> = U.connect(U.db_connection(ctx))
        local folders = {}
        for name, f in pairs(ctx.state.folders or {}) do
          folders[#folders + 1] = { path = f.path, manifest = ctx.params.backup_dir .. "/folders/" .. name .. ".SHA256SUMS" }
        end
        U.test_instance(ctx, api, db, {
          version = ctx.state.target, counts = ctx.state.source_counts, folders = folders,
          test = function()
            for _, node in ipairs(nodes(ctx)) do
              node.cli:forget_version()
              local v = node.cli:program_version()
              if not version.eq(v, ctx.state.target) then error(node.label .. " runs " .. v, 0) end
            end
            local deadline, up = upkit.now() + 60, online(api)
            while #up < #nodes(ctx) and upkit.now() < deadline do
              upkit.sleep(1)
              up = online(api)
            end
            if #up < #nodes(ctx) then
              error(string.format("%d of %d nodes are online in the cluster", #up, #nodes(ctx)), 0)
            end
          end })
        ctx.log("%d nodes run Octopus %s", #nodes(ctx), ctx.state.target)
      end,
    },
    S.maintenance_off(),
  },
  -- after a failure: the main node's service, program and database (S.state_summary), then every node's state
  state_summary = function(ctx)
    if ctx.params.this_node == false and not ctx._cli and ctx._cluster then ctx._cli = ctx._cluster[1].cli end
    local lines = S.state_summary(ctx)
    for _, l in ipairs(Cl.state_lines(ctx)) do lines[#lines + 1] = l end
    return lines
  end,
}
for i, step in ipairs(procedure.steps) do procedure.steps[i] = Cl.main_node(step) end
return procedure
