-- upkit.upgrade: the building blocks of the bundled Octopus upgrade procedures
-- (scripts/*.lua), in one table. Each part is its own module:
--
--   upkit.upgrade.handles    shared parameters (U.P, U.params) and the handles a
--                            step makes from them: U.cli(ctx), U.api(ctx),
--                            U.db_connection(ctx), U.target(ctx), U.server_folders(ctx),
--                            U.other_cli(ctx, "clone"|"test"), U.other_odbc(ctx, prefix),
--                            U.split_list("a, b,,c") -> { "a", "b", "c" }
--   upkit.upgrade.versions   U.upgrade_path, U.fetch_installer, U.install, U.uninstall
--   upkit.upgrade.database   U.harden_clone, U.new_installation_id, U.counts, U.previous_versions,
--                            U.restore_database, U.check_digest,
--                            U.odbc_connection (ADO.NET -> ODBC), U.ado_connection (ODBC -> ADO.NET),
--                            through upkit.sql.connstr
--   upkit.upgrade.folders    U.backup_folders, U.restore_folders, U.tree_size, U.read_manifest
--   upkit.upgrade.instance   U.running, U.stop_all, U.start, U.wait_api, U.upgrade_instance,
--                            U.test_instance
--   upkit.upgrade.steps      U.steps: the step library
-- The Octopus.Server command line is upkit.octopus.cli; the REST API upkit.octopus.
local H = require "upkit.upgrade.handles"
local V = require "upkit.upgrade.versions"
local D = require "upkit.upgrade.database"
local F = require "upkit.upgrade.folders"
local I = require "upkit.upgrade.instance"

local U = {}
for k, v in pairs(H) do U[k] = v end

U.upgrade_path, U.fetch_installer, U.install, U.uninstall = V.upgrade_path, V.fetch_installer, V.install, V.uninstall
U.expect_program, U.expect_uninstalled = V.expect_program, V.expect_uninstalled
U.harden_clone, U.harden_statements, U.new_installation_id = D.harden_clone, D.harden_statements, D.new_installation_id
U.installation_id, U.counts, U.previous_versions, U.schema_version = D.installation_id, D.counts, D.previous_versions,
                                                                     D.schema_version
U.restore_database, U.new_guid, U.table_exists = D.restore, D.new_guid, D.table_exists
U.backup_folders, U.restore_folders, U.tree_size, U.read_manifest = F.backup, F.restore, F.tree_size, F.read_manifest
U.backup_file, U.check_digest = F.database_file, D.check_digest
U.running, U.stop_all, U.start, U.wait_api = I.running, I.stop_all, I.start, I.wait_api
U.others_left_stopped, U.states = I.others_left_stopped, I.states
U.upgrade_instance, U.test_instance, U.released_versions, U.fetch = I.upgrade, I.test, I.released, I.fetch
U.odbc_connection, U.ado_connection = D.odbc_connection, D.ado_connection
U.steps = require "upkit.upgrade.steps"

return U
