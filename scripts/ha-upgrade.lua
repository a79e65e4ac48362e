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
-- with the same backup_dir undoes a failed upgrade of this node (the other
-- nodes get the previous version with their own installer).
--
-- This node is described by server_exe and msiexec; the other nodes by two
-- comma-separated lists of equal length, other_server_exes and other_msiexecs
-- (the same instance name on every node).
local upkit = require "upkit"
local version = require "upkit.version"
local U = require "upkit.upgrade"
local S = U.steps

local params = U.params("server_url", "api_key", "instance", "server_exe", "service_control", "file_version", "watchdog", "msiexec",
  "db", "backup_dir", "download_url", "installer_digests", "versions_feed", "target_version", "timeout", "verify_tls", "skip_license_check",
  { name = "other_server_exes", type = "string", required = true,
    describe = "Octopus.Server executables of the other nodes, comma-separated",
    validate = function(v)
      if #U.split_list(v) == 0 then return false, "name at least one other node's Octopus.Server executable" end
      return true
    end },
  { name = "other_msiexecs", type = "string", required = true,
    describe = "installer programs of the other nodes, comma-separated, in the order of other_server_exes",
    validate = function(v, p)
      local n, m = #U.split_list(v), #U.split_list(p.other_server_exes)
      if n ~= m then return false, string.format("%d installer programs for %d other nodes", n, m) end
      return true
    end },
  { name = "other_service_controls", type = "string",
    describe = "the service control program of each other node, comma-separated (default: service_control)" },
  { name = "other_file_versions", type = "string",
    describe = "the file version reader of each other node, comma-separated (default: file_version)" },
  { name = "node_offline_timeout", type = "number", default = 300,
    describe = "seconds to wait, after the nodes stopped, until each has marked itself offline" })

-- Every node: { label, cli, msiexec, url }; this node first.
local function nodes(ctx)
  if not ctx._nodes then
    local p = ctx.params
    local list = { { label = "this node", cli = U.cli(ctx), msiexec = p.msiexec, url = p.server_url } }
    local msis = U.split_list(p.other_msiexecs)
    local scs, fvs = U.split_list(p.other_service_controls), U.split_list(p.other_file_versions)
    for i, exe in ipairs(U.split_list(p.other_server_exes)) do
      list[#list + 1] = { label = string.format("node %d (%s)", i + 1, exe), msiexec = msis[i],
                          cli = U.new_cli(ctx, exe, p.instance, { service_control = scs[i], file_version = fvs[i] }) }
    end
    ctx._nodes = list
  end
  return ctx._nodes
end

local function others(ctx)
  local list = nodes(ctx)
  return { table.unpack(list, 2) }
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

return {
  name = "ha-upgrade",
  summary = "Upgrade every node of a high-availability Octopus Server cluster, with a backup first and a test after",
  params = params,
  steps = {
    S.connect(),
    {
      name = "check-nodes",
      describe = "check every other node: its program, instance and database; no online node left out",
      check = function(ctx)
        local main_cs = U.cli(ctx):connection_string()
        local main_version = U.api(ctx):version()
        for _, node in ipairs(others(ctx)) do
          local v = node.cli:program_version()
          if not version.eq(v, main_version) then
            upkit.error("VERSION_MISMATCH", string.format("%s runs %s, this node %s", node.label, v, main_version))
          end
          if not node.cli:has_instance() then
            upkit.error("NOT_FOUND", string.format("%s has no instance %s", node.label, ctx.params.instance))
          end
          if node.cli:connection_string() ~= main_cs then
            upkit.error("DATABASE_MISMATCH", string.format("%s uses another database than this node", node.label))
          end
        end
        local up = online(U.api(ctx))
        if #up > #nodes(ctx) then
          upkit.error("STILL_RUNNING", string.format("%d nodes are online (%s) but only %d are given (server_exe, " ..
            "other_server_exes): every node must be stopped for the upgrade", #up, table.concat(up, ", "), #nodes(ctx)))
        end
        return true
      end,
      run = function(ctx)
        for _, node in ipairs(nodes(ctx)) do
          ctx.log("%s: Octopus %s", node.label, node.cli:program_version())
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
        local stopped = {}
        for i, node in ipairs(nodes(ctx)) do
          stopped[i] = U.stop_all(node.cli, { url = node.url, verify = ctx.params.verify_tls, log = function(fmt, ...)
            ctx.log("%s: " .. fmt, node.label, ...)
          end })
          ctx.log("%s: drained and stopped", node.label)
        end
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
    S.upgrade("upgrade-this-node", "install each version on the path on this node and upgrade the database",
      S.main_site(false)),
    {
      name = "install-other-nodes",
      describe = "install the target version on the other nodes (their database is upgraded already)",
      run = function(ctx)
        local inst = U.fetch(ctx, ctx.state.target)
        for _, node in ipairs(others(ctx)) do
          node.cli:forget_version()
          if version.lt(node.cli:program_version(), ctx.state.target) then
            local r = U.install(node.msiexec, inst.file, inst.sha256, ctx.run_dir .. "/logs", ctx.params.timeout)
            U.expect_program(node.cli, ctx.state.target)
            ctx.log("%s: installed %s (exit code %d)", node.label, ctx.state.target, r.code)
          else
            ctx.log("%s: %s is installed already", node.label, ctx.state.target)
          end
        end
      end,
    },
    {
      name = "start-and-undrain",
      describe = "start the instance on every node and take it out of drain",
      run = function(ctx)
        for _, node in ipairs(nodes(ctx)) do U.start(node.cli, { ctx.params.instance }) end
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
}
