"""Refusal tests: for each FIDELITY.md row a procedure uses, the simulator refuses the wrong form
the way a real server does (exit code and message), and offers only the real fields."""

import json
import os
import sqlite3
import time
import unittest

from simtest import Api, SimCase
from simlib import servercli, winsvc
from simlib.common import since
from simlib.machine import exit_status


def available(cmd, version, option=None):
    first, opts = servercli.SPECS[cmd]
    if not since(version, first):
        return False
    return option is None or (option in opts and servercli.available(opts[option], version))


class CommandLine(SimCase):
    def test_version_and_list_instances_take_no_instance(self):
        info = self.create("2023.4.8166")
        for cmd in ("version", "list-instances"):
            r = self.exe(info, cmd, "--instance=OctopusServer", "--format=json")
            self.assertEqual(r.returncode, 1, cmd)
            self.assertEqual(r.stderr.strip(), "Unrecognized command line arguments: --instance=OctopusServer")
            self.assertEqual(r.stdout, "")
        v = json.loads(self.exe(info, "version", "--format=json").stdout)
        self.assertNotIn("Version", v)
        self.assertEqual(v["InformationalVersion"], "2023.4.8166")
        self.assertEqual(self.exe(info, "version").stdout.strip(), "2023.4.8166")
        inst = json.loads(self.exe(info, "list-instances", "--format=json").stdout)
        self.assertEqual([set(i) for i in inst], [{"InstanceName", "ConfigurationFilePath"}])
        self.assertEqual(self.exe(info, "list-instances").stdout.strip(),
                         "Instance 'OctopusServer' uses configuration '%s'." % info["config"])
        r = self.exe(info, "list-instances", "--format=yaml")
        self.assertEqual(r.returncode, 1)
        self.assertIn("The format 'yaml' is not supported", r.stderr)

    def test_commands_by_version(self):
        old = self.create("3.17.14")
        for args in (["version"], ["node", "--drain=true"], ["create-api-key", "--user=admin"]):
            r = self.exe(old, *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("Usage", r.stdout)
        self.assertEqual(self.exe(old, "run").returncode, 2)
        self.assertFalse(available("show-configuration", "3.4.0"))
        self.assertTrue(available("show-configuration", "3.5.0"))
        self.assertFalse(available("create-instance", "3.16.3", "home"))
        self.assertTrue(available("create-instance", "3.16.4", "home"))
        self.assertFalse(available("node", "2017.1.0"))
        self.assertFalse(available("node", "2018.6.0", "taskCap"))
        self.assertFalse(available("database", "3.13.8", "upgrade"))
        for args in (["database", "--connectionString=" + old["sql_connection_string"]],
                     ["database", "--upgrade", "--skipLicenseCheck"],
                     ["show-master-key", "--format=json"],
                     ["create-instance", "--instance=B", "--config=" + os.path.join(self.tmp, "b.config"),
                      "--serverNodeName=X"]):
            r = self.exe(old, *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertTrue(r.stderr.startswith("Unrecognized command line arguments: --"), r.stderr)
        r = self.exe(old, "configure", "--storageConnectionString=" + old["sql_connection_string"])
        self.assertEqual(r.returncode, 0, r.stderr)
        new = self.create("2019.1.5", "new")
        r = self.exe(new, "configure", "--storageConnectionString=" + new["sql_connection_string"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("Unrecognized command line arguments", r.stderr)

    def test_node_wait_and_cancel_only_with_drain_true(self):
        info = self.create("2023.4.8166")
        for args in (["--drain=false", "--wait=0"], ["--drain=false", "--cancel-tasks"], ["--wait=0"]):
            r = self.exe(info, "node", *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("can only be passed if the --drain parameter is set to true", r.stderr)
        self.assertEqual(self.exe(info, "node", "--drain=false").returncode, 0)
        self.assertEqual(self.exe(info, "node", "--drain=true", "--wait=0", "--cancel-tasks").returncode, 0)
        self.assertEqual(self.exe(info, "node", "--drain=maybe").returncode, 100)
        r = self.exe(info, "node", "--cancel-wait=5", "--drain=true")
        self.assertEqual(r.returncode, 1)  # --cancel-wait arrived in 2025.3

    def test_show_configuration_real_keys_and_formats(self):
        info = self.create("2023.4.8166")
        cfg = json.loads(self.exe(info, "show-configuration", "--format=json").stdout)
        self.assertEqual(cfg["Octopus.Folders.ArtifactsDirectory"], info["folders"]["Artifacts"])
        self.assertEqual(cfg["Octopus.Folders.PackagesDirectory"], info["folders"]["Packages"])
        self.assertEqual(cfg["Octopus.Folders.LogDirectory"], info["folders"]["TaskLogs"])
        self.assertEqual(cfg["Octopus.Storage.ExternalDatabaseConnectionString"], info["sql_connection_string"])
        self.assertEqual(cfg["Octopus.Server.NodeName"], info["machine_name"])
        self.assertIn("<License", cfg["Octopus.Server.License"])
        for gone in ("Octopus.Folders.Artifacts", "Octopus.Folders.Packages", "Octopus.Folders.TaskLogs",
                     "Octopus.Folders.EventExports", "Octopus.Server.InstalledVersion",
                     "Octopus.Server.ConfigurationFilePath", "Octopus.Storage.MasterKey"):
            self.assertNotIn(gone, cfg)
        tree = json.loads(self.exe(info, "show-configuration", "--format=json-hierarchical").stdout)
        self.assertEqual(tree["Octopus"]["Folders"]["LogDirectory"], info["folders"]["TaskLogs"])
        self.assertEqual(tree["Octopus"]["Home"], info["home"])
        xml = self.exe(info, "show-configuration").stdout
        self.assertTrue(xml.startswith("<octopus-settings>"), xml[:40])
        r = self.exe(info, "show-configuration", "--format=text")
        self.assertEqual(r.returncode, 1)
        out = os.path.join(self.tmp, "cfg.json")
        self.assertEqual(self.exe(info, "show-configuration", "--format=json", "--file=" + out).returncode, 0)
        with open(out) as f:
            self.assertEqual(json.load(f), cfg)

    def test_connection_string_must_be_ado_net(self):
        info = self.create("2023.4.8166")
        r = self.exe(info, "database", "--connectionString=" + info["connection_string"])
        self.assertEqual(r.returncode, 100)
        self.assertEqual(r.stderr.strip(), "Keyword not supported: 'driver'.")
        cfg = json.loads(self.exe(info, "show-configuration", "--format=json").stdout)
        self.assertEqual(cfg["Octopus.Storage.ExternalDatabaseConnectionString"], info["sql_connection_string"])
        ok = "Server=%s;Database=OctopusDeploy;Trusted_Connection=True;Encrypt=False" % info["sqlserver"]
        self.assertEqual(self.exe(info, "database", "--connectionString=" + ok).returncode, 0)

    def test_instance_selection_and_option_spelling(self):
        info = self.create("2021.1.7687")
        self.assertEqual(self.exe(info, "show-master-key", "--instance=octopusserver").stdout.strip(),
                         info["master_key"])
        self.assertEqual(self.exe(info, "show-master-key", "--instance", "OctopusServer").stdout.strip(),
                         info["master_key"])
        self.assertEqual(self.exe(info, "show-master-key", "--console", "--noconsolelogging").returncode, 0)
        r = self.exe(info, "show-master-key", "--instance")
        self.assertEqual(r.returncode, 100)
        self.assertIn("Missing required value for option '--instance'", r.stderr)
        r = self.exe(info, "show-master-key", "stray")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(), "Unrecognized command line arguments: stray")
        home = os.path.join(self.tmp, "second")
        self.assertEqual(self.exe(info, "create-instance", "--instance=Second",
                                  "--config=" + os.path.join(home, "Second.config"), "--home=" + home).returncode, 0)
        r = self.exe(info, "show-configuration", "--format=json", "--instance=Second")
        self.assertEqual(json.loads(r.stdout)["Octopus.Home"], home)
        self.assertEqual(winsvc.service_name("Second"), "OctopusDeploy: Second")
        self.assertEqual(self.exe(info, "service", "--install", "--instance=Second").returncode, 0)
        self.assertIn("STOPPED", self.run_tool(info["sc"], "query", "OctopusDeploy: Second").stdout)

    def test_admin_api_key(self):
        info = self.create("2023.4.8166")
        key = "API-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        r = self.exe(info, "admin", "--username=ops", "--password=S3cret!", "--apiKey=" + key)
        self.assertEqual(r.returncode, 0, r.stderr)
        api = Api(self.serve(info), key)
        try:
            self.assertEqual(api.call("GET", "/api/serverstatus")[0], 200)
        finally:
            api.close()


class Machine(SimCase):
    def test_sc_stand_in(self):
        info = self.create("2021.1.7687")
        sc = info["sc"]
        r = self.run_tool(sc, "query", "NoSuchService")
        self.assertEqual(r.returncode, 1060 & 0xFF)
        self.assertIn("FAILED 1060", r.stdout)
        r = self.run_tool(sc, "stop", info["service_name"])
        self.assertEqual(r.returncode, 1062 & 0xFF)
        self.assertIn("FAILED 1062", r.stdout)
        r = self.run_tool(sc, "start", info["service_name"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.services.append((info["machine"], info["instance"]))
        self.assertIn("RUNNING", self.run_tool(sc, "query", info["service_name"]).stdout)
        self.assertEqual(self.run_tool(sc, "start", info["service_name"]).returncode, 1056 & 0xFF)
        self.assertTrue(winsvc.wait_api(info["port"]))
        api = Api(info["port"], info["api_key"])
        self.assertEqual(api.get("/api")["Version"], "2021.1.7687")
        api.close()
        self.assertEqual(self.run_tool(sc, "stop", info["service_name"]).returncode, 0)
        self.assertIn("STOPPED", self.run_tool(sc, "query", info["service_name"]).stdout)

    def test_msi_needs_every_instance_stopped_and_uninstalls_only_installed_product(self):
        info = self.create("2021.1.7687")
        home = os.path.join(self.tmp, "b")
        port = "%d" % self.free_port()
        for args in (["create-instance", "--instance=B", "--config=" + os.path.join(home, "B.config"), "--home=" + home],
                     ["configure", "--instance=B", "--webListenPrefixes=http://127.0.0.1:%s/" % port],
                     ["database", "--instance=B", "--connectionString=" + info["sql_connection_string"],
                      "--masterKey=" + info["master_key"]],
                     ["service", "--instance=B", "--install", "--start"]):
            r = self.exe(info, *args)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
        self.services.append((info["machine"], "B"))
        r = self.msiexec(info, "/i", self.msi(info, "2023.4.8166"), "/quiet")
        self.assertEqual(r.returncode, exit_status(1603))
        self.assertIn("B", r.stderr)
        self.assertEqual(self.exe(info, "service", "--stop", "--instance=*").returncode, 0)
        # /x of another version's package: that product is not installed (1605), nothing changes
        r = self.msiexec(info, "/x", self.msi(info, "2019.1.5"), "/quiet")
        self.assertEqual(r.returncode, exit_status(1605))
        self.assertTrue(os.path.exists(info["server_exe"]))
        with open(os.path.join(info["machine"], "ProgramFiles", "OctopusDeploy", "Octopus", "program.json")) as f:
            code = json.load(f)["ProductCode"]
        self.assertEqual(self.msiexec(info, "/x", code, "/quiet").returncode, 0)
        self.assertFalse(os.path.exists(info["server_exe"]))
        self.assertEqual(self.run_tool(info["filever"], info["server_exe"]).returncode, 1)

    def test_watchdog_restarts_stopped_service_before_msi(self):
        info = self.create("2021.1.7687")
        r = self.exe(info, "watchdog", "--create", "--instance=OctopusServer")
        self.assertEqual(r.returncode, 1)  # the watchdog takes --instances, not --instance
        self.assertEqual(self.exe(info, "watchdog", "--create", "--instances=*").returncode, 0)
        cfg = json.loads(self.exe(info, "show-configuration", "--format=json").stdout)
        self.assertEqual(cfg["Octopus.Watchdog.Enabled"], "True")
        self.services.append((info["machine"], info["instance"]))
        r = self.msiexec(info, "/i", self.msi(info, "2023.4.8166"), "/quiet")
        self.assertEqual(r.returncode, exit_status(1603))  # the watchdog started the stopped service
        self.assertIsNotNone(self.service_pid(info))
        self.assertEqual(self.exe(info, "service", "--stop").returncode, 0)
        self.assertEqual(self.exe(info, "watchdog", "--delete").returncode, 0)
        r = self.msiexec(info, "/i", self.msi(info, "2023.4.8166"), "/quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.exe(info, "database", "--upgrade").returncode, 0)

    def test_stopped_node_marks_itself_offline_after_a_delay(self):
        info = self.create("2021.1.7687")
        self.faults(info, node_offline_delay=1.5)
        self.start_service(info)
        db = sqlite3.connect(info["database"])
        node = info["machine_name"]
        self.assertEqual(db.execute("SELECT IsOffline FROM OctopusServerNodeStatus WHERE Id=?", (node,)).fetchone(),
                         (0,))
        self.assertEqual(self.exe(info, "service", "--stop").returncode, 0)
        self.assertEqual(db.execute("SELECT IsOffline FROM OctopusServerNodeStatus WHERE Id=?", (node,)).fetchone(),
                         (0,))  # not yet
        deadline = time.time() + 10
        while time.time() < deadline:
            if db.execute("SELECT IsOffline FROM OctopusServerNodeStatus WHERE Id=?", (node,)).fetchone() == (1,):
                break
            time.sleep(0.1)
        self.assertEqual(db.execute("SELECT IsOffline FROM OctopusServerNodeStatus WHERE Id=?", (node,)).fetchone(),
                         (1,))
        db.close()

    def test_second_node_running_blocks_database_upgrade(self):
        info = self.create("2021.1.7687")
        m2 = os.path.join(self.tmp, "node2")
        from simlib import machine
        two = machine.create_machine(m2, "NODE2")
        self.assertEqual(self.run_tool(two["msiexec"], "/i", self.msi(info, "2021.1.7687"), "/quiet").returncode, 0)
        home = os.path.join(m2, "Octopus")
        port = self.free_port()
        exe2 = two["server_exe"]
        for args in (["create-instance", "--config=" + os.path.join(home, "OctopusServer.config"), "--home=" + home],
                     ["configure", "--webListenPrefixes=http://127.0.0.1:%d/" % port],
                     ["database", "--connectionString=" + info["sql_connection_string"],
                      "--masterKey=" + info["master_key"]],
                     ["service", "--install", "--start"]):
            r = self.run_tool(exe2, *args)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
        self.services.append((m2, "OctopusServer"))
        self.assertTrue(winsvc.wait_api(port))
        self.assertEqual(self.msiexec(info, "/i", self.msi(info, "2023.4.8166"), "/quiet").returncode, 0)
        r = self.exe(info, "database", "--upgrade")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NODE2", r.stderr)
        self.assertEqual(self.run_tool(exe2, "service", "--stop").returncode, 0)
        deadline = time.time() + 15  # a stopped node reports itself offline a little later: poll
        while True:
            r = self.exe(info, "database", "--upgrade")
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_issue_7790_path(self):
        info = self.create("2021.3.12912")
        self.assertEqual(self.msiexec(info, "/i", self.msi(info, "2022.1.2735"), "/quiet").returncode, 0)
        r = self.exe(info, "database", "--upgrade")
        self.assertEqual(r.returncode, 1)
        self.assertIn("Extra upgrade script(s) found: Script0321DeleteQueuedCleanupTasks", r.stderr)
        self.assertEqual(self.msiexec(info, "/i", self.msi(info, "2023.4.8166"), "/quiet").returncode, 0)
        self.assertEqual(self.exe(info, "database", "--upgrade").returncode, 0)
        fresh = self.create("2022.1.2735", "fresh")  # a database born at 2022.1 is fine
        self.start_service(fresh)

    def test_service_start_returns_before_the_server_answers(self):
        info = self.create("2023.4.8166")
        self.faults(info, startup_delay=2)
        r = self.exe(info, "service", "--start")
        self.services.append((info["machine"], info["instance"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("RUNNING", self.run_tool(info["sc"], "query", info["service_name"]).stdout)
        api = Api(info["port"], info["api_key"])
        with self.assertRaises(ConnectionRefusedError):
            api.get("/api")  # the service runs, the server does not answer yet: poll
        api.close()
        self.assertTrue(winsvc.wait_api(info["port"]))
        # a server that cannot start stops after `service --start` returned 0
        self.assertEqual(self.exe(info, "service", "--stop").returncode, 0)
        self.assertEqual(self.msiexec(info, "/i", self.msi(info, "2024.4.7000"), "/quiet").returncode, 0)
        r = self.start_fails(info, "database upgrade required")
        self.assertEqual(r.returncode, 0)
        self.assertIn("STOPPED", self.run_tool(info["sc"], "query", info["service_name"]).stdout)
        r = self.exe(info, "service", "--start", "--instance=Nope")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.exe(info, "service", "--uninstall").returncode, 0)
        r = self.exe(info, "service", "--start")
        self.assertEqual(r.returncode, 1)
        self.assertIn("but no service with this name was found", r.stderr)

    def free_port(self):
        from simlib.common import free_port
        return free_port()


class Rest(SimCase):
    def test_templated_links_health_and_mixed_scope_tasks(self):
        old = self.create("2019.1.5", "old")
        api = Api(self.serve(old), old["api_key"])
        try:
            root = api.get("/api")
            self.assertNotIn("ServerHealthStatus", root["Links"])
            self.assertEqual(api.call("GET", "/api/serverstatus/health")[0], 404)
        finally:
            api.close()
        info = self.create("2023.4.8166")
        api = Api(self.serve(info), info["api_key"])
        try:
            root = api.get("/api", key="")
            self.assertEqual(set(root), {"Application", "Version", "ApiVersion", "InstallationId",
                                         "HasLongTermSupport", "Links"})
            self.assertTrue(root["Links"]["Tasks"].startswith("/api/tasks{/id}{?skip,"))
            self.assertIn("spaces,includeSystem", root["Links"]["Tasks"])
            self.assertTrue(root["Links"]["Machines"].startswith("/api/Spaces-1/machines{/id}{?"))
            self.assertEqual(root["Links"]["ServerHealthStatus"], "/api/serverstatus/health")
            self.assertEqual(api.call("GET", root["Links"]["Machines"])[0], 404)  # a template is not a path
            s, _, sp = api.post("/api/spaces", {"Name": "Second"})
            self.assertEqual(s, 201)
            api.put("/api/maintenanceconfiguration", {"Id": "maintenance", "IsInMaintenanceMode": False})
            _, _, t_other = api.post("/api/tasks", {"Name": "Other", "SpaceId": sp["Id"], "SimDurationSeconds": 30})
            _, _, t_sys = api.post("/api/tasks", {"Name": "System", "SpaceId": None, "SimDurationSeconds": 30})
            self.assertIsNone(t_sys["SpaceId"])
            ids = lambda q: {t["Id"] for t in api.get("/api/tasks?take=100" + q)["Items"]}
            self.assertNotIn(t_other["Id"], ids(""))
            self.assertNotIn(t_sys["Id"], ids(""))
            self.assertNotIn(t_sys["Id"], ids("&spaces=all"))
            self.assertTrue({t_other["Id"], t_sys["Id"]} <= ids("&spaces=all&includeSystem=true"))
            for t in (t_other, t_sys):
                self.assertEqual(api.post("/api/tasks/%s/cancel" % t["Id"], {})[0], 200)
        finally:
            api.close()


if __name__ == "__main__":
    unittest.main()
