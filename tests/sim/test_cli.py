import json
import os
import sqlite3
import subprocess
import sys
import unittest

from simtest import OCTOSIM, Api, SimCase

TABLES = {"Project", "Environment", "Machine", "Worker", "ProjectTrigger", "Subscription", "ServerTask", "Event",
          "OctopusServerNode", "ExtensionConfiguration", "Configuration", "OctopusServerInstallationHistory",
          "SchemaVersions", "Space"}


class CreateAndCli(SimCase):
    def test_create_cli_prints_one_json_object(self):
        r = subprocess.run([sys.executable, OCTOSIM, "create", "--home", os.path.join(self.tmp, "x"),
                            "--version", "2019.1.5"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        for k in ("home", "database", "connection_string", "sql_connection_string", "sqlserver", "api_key",
                  "user_api_key", "master_key", "server_exe", "msiexec", "sc", "filever", "service_name",
                  "downloads", "instance", "config", "machine", "folders", "version"):
            self.assertIn(k, info)
        self.assertEqual(info["connection_string"], "Driver=SQLite3;Database=" + info["database"])
        self.assertEqual(info["sql_connection_string"], "Data Source=%s;Initial Catalog=OctopusDeploy;"
                         "Integrated Security=True" % info["sqlserver"])
        self.assertEqual(info["service_name"], "OctopusDeploy")
        self.assertEqual(set(info["folders"]), {"Artifacts", "Packages", "TaskLogs", "EventExports"})
        for f in info["folders"].values():
            self.assertTrue(os.path.isdir(f), f)
        self.assertTrue(os.listdir(info["folders"]["TaskLogs"]))
        db = sqlite3.connect(info["database"])
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        self.assertTrue(TABLES <= names, TABLES - names)
        iid = db.execute("SELECT json_extract(JSON,'$.InstallationId') FROM Configuration "
                         "WHERE Id='upgradeavailability'").fetchone()[0]
        self.assertEqual(len(iid), 36)
        hist = db.execute("SELECT Version FROM OctopusServerInstallationHistory ORDER BY Installed DESC").fetchall()
        self.assertEqual(hist[0][0], "2019.1.5")
        self.assertEqual(db.execute("SELECT COUNT(*) FROM Machine WHERE SpaceId='Spaces-1'").fetchone()[0], 12)
        db.close()

    def test_machine_command_has_nothing_installed(self):
        r = subprocess.run([sys.executable, OCTOSIM, "machine", "--root", os.path.join(self.tmp, "new")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = json.loads(r.stdout)
        self.assertTrue(os.access(m["msiexec"], os.X_OK))
        self.assertFalse(os.path.exists(m["server_exe"]))

    def test_server_commands(self):
        info = self.create("3.17.14")
        r = self.exe(info, "show-master-key")
        self.assertEqual(r.stdout.strip(), info["master_key"])
        cfg = json.loads(self.exe(info, "show-configuration", "--format=json").stdout)
        self.assertEqual(cfg["Octopus.Storage.ExternalDatabaseConnectionString"], info["sql_connection_string"])
        self.assertEqual(cfg["Octopus.Home"], info["home"])
        self.assertEqual(cfg["Octopus.Folders.LogDirectory"], info["folders"]["TaskLogs"])
        inst = json.loads(self.exe(info, "list-instances", "--format=json").stdout)
        self.assertEqual(inst, [{"InstanceName": "OctopusServer", "ConfigurationFilePath": info["config"]}])
        r = self.exe(info, "path", "--artifacts=" + os.path.join(self.tmp, "art"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(self.exe(info, "show-configuration", "--format=json").stdout)
                         ["Octopus.Folders.ArtifactsDirectory"], os.path.join(self.tmp, "art"))
        r = self.exe(info, "frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("Usage", r.stdout)
        r = self.exe(info, "show-master-key", "--instance=Nope")
        self.assertEqual(r.returncode, 1)
        self.assertIn("Instance Nope of Octopus Server has not been configured", r.stderr)
        self.assertEqual(self.run_tool(info["filever"], info["server_exe"]).stdout.strip(), "3.17.14.0")

    def test_service_start_stop_and_node_drain(self):
        info = self.create("2021.1.7687")
        port = self.start_service(info)
        api = Api(port, info["api_key"])
        try:
            pid = self.service_pid(info)
            self.assertTrue(os.path.exists("/proc/%d" % pid))
            r = self.run_tool(info["sc"], "query", info["service_name"])
            self.assertEqual(r.returncode, 0)
            self.assertIn("RUNNING", r.stdout)
            self.assertEqual(self.exe(info, "node", "--drain=true", "--wait=0").returncode, 0)
            self.assertTrue(api.get("/api/octopusservernodes/summary")["Nodes"][0]["IsInMaintenanceMode"])
            self.assertEqual(self.exe(info, "node", "--drain=false").returncode, 0)
            self.assertFalse(api.get("/api/octopusservernodes/summary")["Nodes"][0]["IsInMaintenanceMode"])
        finally:
            api.close()
        r = self.exe(info, "service", "--stop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNone(self.service_pid(info))
        self.assertIn("STOPPED", self.run_tool(info["sc"], "query", info["service_name"]).stdout)

    def test_wrong_master_key_fails_visibly(self):
        info = self.create("3.17.14")
        # a clone configured with a wrong key in its config refuses to start
        with open(info["config"]) as f:
            cfg = f.read().replace(info["master_key"], "d3Jvbmcta2V5LXdyb25nIQ==")
        with open(info["config"], "w") as f:
            f.write(cfg)
        self.start_fails(info, "master key does not match")
        r = subprocess.run([sys.executable, OCTOSIM, "serve", "--home", info["home"], "--port", "0"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("master key does not match", r.stderr)

    def test_clone_onto_new_machine(self):
        main = self.create("3.17.14")
        new = json.loads(subprocess.run([sys.executable, OCTOSIM, "machine", "--root", os.path.join(self.tmp, "clone")],
                                        capture_output=True, text=True).stdout)
        r = self.msiexec(new, "/i", self.msi(main, "3.17.14"), "/quiet", "/l*v", os.path.join(self.tmp, "i.log"))
        self.assertEqual(r.returncode, 0, r.stderr)
        db = os.path.join(self.tmp, "clone.db")  # Data Source=TMP;Initial Catalog=clone
        src = sqlite3.connect(main["database"])
        src.execute("VACUUM INTO ?", (db,))
        src.close()
        home = os.path.join(new["machine"], "Octopus")
        cs = "Data Source=%s;Initial Catalog=clone" % self.tmp
        port = str(self.port_free())
        for args in (["create-instance", "--instance=OctopusServer", "--config=" + os.path.join(home, "OctopusServer.config")],
                     ["configure", "--home=" + home, "--webListenPrefixes=http://127.0.0.1:%s/" % port],
                     ["configure", "--storageConnectionString=" + cs, "--masterKey=" + main["master_key"]],
                     ["service", "--install", "--reconfigure", "--start"]):
            r = self.exe(new, *args)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
        self.services.append((new["machine"], "OctopusServer"))
        from simlib import winsvc
        self.assertTrue(winsvc.wait_api(int(port)))
        api = Api(int(port), main["api_key"])
        try:
            self.assertEqual(api.get("/api/machines")["TotalResults"], 12)
            names = [n["Name"] for n in api.get("/api/octopusservernodes/summary")["Nodes"]]
            self.assertEqual(len(names), 2)  # the clone registered itself beside main's row
        finally:
            api.close()

    def port_free(self):
        from simlib.common import free_port
        return free_port()


if __name__ == "__main__":
    unittest.main()
