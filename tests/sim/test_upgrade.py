import json
import os
import sqlite3
import time
import unittest

from simlib.machine import exit_status

from simtest import Api, SimCase

PATH = ["2019.1.5", "2021.1.7687", "2023.4.8166", "2024.4.7000", "2025.4.10700"]


def schema_version(info):
    db = sqlite3.connect(info["database"])
    try:
        return db.execute("SELECT Version FROM SchemaVersions ORDER BY Id DESC LIMIT 1").fetchone()[0]
    finally:
        db.close()


def tables(info):
    db = sqlite3.connect(info["database"])
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


class Upgrade(SimCase):
    def install(self, info, version, *extra, env=None):
        return self.msiexec(info, "/i", self.msi(info, version), "/quiet", "/norestart", *extra, env=env)

    def upgrade_to(self, info, version, *extra):
        r = self.install(info, version)
        self.assertEqual(r.returncode, 0, r.stderr)
        return self.exe(info, "database", "--upgrade", *extra)

    def test_full_path_with_required_stops(self):
        info = self.create("3.17.14")
        r = self.install(info, "2023.4.8166")
        self.assertEqual(r.returncode, 0)
        self.start_fails(info, "database upgrade required")
        before = os.path.getmtime(info["database"]), tables(info)
        r = self.exe(info, "database", "--upgrade")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("2021.1", r.stderr)
        self.assertEqual(schema_version(info), "3.17.14")
        self.assertEqual(tables(info), before[1])
        self.assertEqual(self.msiexec(info, "/x", self.msi(info, "2023.4.8166"), "/quiet").returncode, 0)
        for v in PATH[:3]:
            r = self.upgrade_to(info, v)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(schema_version(info), v)
        self.assertIn("Space", tables(info))
        self.assertIn("Worker", tables(info))
        self.assertIn("ArchivedEventFile", tables(info))
        r = self.upgrade_to(info, "2025.4.10700")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("2024.3.600", r.stderr)
        self.assertIn("2024.4.7000", r.stderr)
        self.assertEqual(schema_version(info), "2023.4.8166")
        self.assertEqual(self.msiexec(info, "/x", self.msi(info, "2025.4.10700"), "/quiet").returncode, 0)
        for v in PATH[3:]:
            r = self.upgrade_to(info, v)
            self.assertEqual(r.returncode, 0, r.stderr)
        db = sqlite3.connect(info["database"])
        hist = [r[0] for r in db.execute("SELECT Version FROM OctopusServerInstallationHistory "
                                         "ORDER BY Installed DESC LIMIT 5")]
        self.assertEqual(hist, list(reversed(PATH)))
        self.assertEqual(db.execute("SELECT COUNT(*) FROM Machine WHERE SpaceId='Spaces-1'").fetchone()[0], 12)
        db.close()
        port = self.start_service(info)
        api = Api(port, info["api_key"])
        try:
            self.assertEqual(api.get("/api")["Version"], "2025.4.10700")
        finally:
            api.close()

    def test_migration_failure_rolls_back_its_step(self):
        info = self.create("3.17.14")
        self.faults(info, migration_fail_at="2019.1.0")
        r = self.upgrade_to(info, "2019.1.5")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("AddSpaces", r.stderr)
        self.assertIn("rolled back", r.stderr)
        t = tables(info)
        self.assertIn("Worker", t)          # the 2018.7 step committed before
        self.assertNotIn("Space", t)        # the failing step left nothing behind
        db = sqlite3.connect(info["database"])
        cols = [r[1] for r in db.execute("PRAGMA table_info(Machine)")]
        db.close()
        self.assertNotIn("SpaceId", cols)
        self.start_fails(info, "database upgrade required")
        os.unlink(os.path.join(info["machine"], "faults.json"))
        r = self.exe(info, "database", "--upgrade")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(schema_version(info), "2019.1.5")

    def test_licence_noncompliance_and_skip(self):
        info = self.create("3.17.14")
        env = {"OCTOSIM_FAULT_LICENSE_NONCOMPLIANT_AFTER_UPGRADE": "1"}
        self.install(info, "2019.1.5")
        r = self.exe(info, "database", "--upgrade", env=env)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("after upgrading your licence will no longer be compliant", r.stderr)
        self.assertEqual(schema_version(info), "3.17.14")
        r = self.exe(info, "database", "--upgrade", "--skipLicenseCheck", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_expired_maintenance_licence_blocks_upgrade(self):
        info = self.create("3.17.14")
        from simlib.schema import license_xml
        lic = os.path.join(self.tmp, "old.lic")
        with open(lic, "w") as f:
            f.write(license_xml("2018-06-30"))
        self.assertEqual(self.exe(info, "license", "--licenseFile=" + lic).returncode, 0)
        r = self.upgrade_to(info, "2019.1.5")
        self.assertIn("no longer be compliant", r.stderr)

    def test_old_sql_server(self):
        info = self.create("2019.1.5")
        self.faults(info, sqlserver_version="2014")
        r = self.upgrade_to(info, "2021.1.7687")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("SQL Server 2016", r.stderr)
        self.assertEqual(schema_version(info), "2019.1.5")

    def test_running_nodes_block_upgrade_since_2023_2_9755(self):
        info = self.create("2021.1.7687")
        db = sqlite3.connect(info["database"])
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
        db.execute("INSERT INTO OctopusServerNode (Id, Name, LastSeen, Rank, IsOffline, MaxConcurrentTasks, "
                   "IsInMaintenanceMode, JSON) VALUES ('NODE2','NODE2',?,'Follower',0,5,0,'{}')", (now,))
        db.execute("INSERT INTO OctopusServerNodeStatus (Id, LastSeen, IsOffline, JSON) VALUES ('NODE2',?,0,'{}')",
                   (now,))
        db.commit()
        r = self.upgrade_to(info, "2023.4.8166")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("NODE2", r.stderr)
        db.execute("UPDATE OctopusServerNodeStatus SET IsOffline=1 WHERE Id='NODE2'")  # as a stopped node does
        db.commit()
        db.close()
        r = self.exe(info, "database", "--upgrade", env={"OCTOSIM_FAULT_NODES_RUNNING": "1"})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nodes are running", r.stderr)
        self.assertEqual(self.exe(info, "database", "--upgrade").returncode, 0)

    def test_upgrade_refused_while_service_runs(self):
        info = self.create("3.17.14")
        self.start_service(info)
        r = self.msiexec(info, "/i", self.msi(info, "2019.1.5"), "/quiet")
        self.assertEqual(r.returncode, exit_status(1603))  # the program of a running instance is in use
        self.assertIn("stop every instance", r.stderr)
        r = self.exe(info, "database", "--upgrade")
        self.assertEqual(r.returncode, 1)
        self.assertIn("stop it", r.stderr)


class Installer(SimCase):
    def test_exit_codes_and_log(self):
        info = self.create("3.17.14")
        log = os.path.join(self.tmp, "install.log")
        self.faults(info, msi_local_disk=True)
        # the path check belongs to the install dialogs: only a non-quiet install meets it
        r = self.msiexec(info, "/i", self.msi(info, "2019.1.5"), "/l*v", log)
        self.assertEqual(r.returncode, exit_status(1603))
        with open(log) as f:
            self.assertIn("Installation directory must be on a local hard drive", f.read())
        self.assertEqual(self.run_tool(info["filever"], info["server_exe"]).stdout.strip(), "3.17.14.0")
        r = self.msiexec(info, "/i", self.msi(info, "2019.1.5"), "/quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.faults(info, msi_exit=3010)
        r = self.msiexec(info, "/i", self.msi(info, "2021.1.7687"), "/quiet", "/norestart")
        self.assertEqual(r.returncode, exit_status(3010))
        self.assertEqual(self.run_tool(info["filever"], info["server_exe"]).stdout.strip(), "2021.1.7687.0")
        r = self.msiexec(info, "/i", self.msi(info, "2023.4.8166"), "/quiet", env={"OCTOSIM_FAULT_MSI_EXIT": "1603"},
                         )
        self.assertEqual(r.returncode, exit_status(1603))
        os.unlink(os.path.join(info["machine"], "faults.json"))
        bad = os.path.join(self.tmp, "Octopus.9.9.9-x64.msi")
        with open(bad, "wb") as f:
            f.write(b"not an msi")
        self.assertEqual(self.msiexec(info, "/i", bad, "/quiet").returncode, exit_status(1620))
        self.assertEqual(self.msiexec(info, "/i", bad + ".missing", "/quiet").returncode, exit_status(1619))

    def test_uninstall_keeps_home_and_reinstall_works(self):
        info = self.create("2019.1.5")
        r = self.msiexec(info, "/i", self.msi(info, "3.17.14"), "/quiet")
        self.assertEqual(r.returncode, exit_status(1603))  # downgrade refused: uninstall first
        r = self.msiexec(info, "/x", self.msi(info, "2019.1.5"), "/quiet")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(info["server_exe"]))
        self.assertTrue(os.path.exists(info["config"]))
        self.assertTrue(os.path.isdir(info["folders"]["TaskLogs"]))
        self.assertEqual(self.msiexec(info, "/x", self.msi(info, "2019.1.5"), "/quiet").returncode, exit_status(1605))
        r = self.msiexec(info, "/i", self.msi(info, "2019.1.5"), "/quiet")
        self.assertEqual(r.returncode, 0)
        inst = json.loads(self.exe(info, "list-instances", "--format=json").stdout)
        self.assertEqual(inst[0]["InstanceName"], "OctopusServer")
        port = self.start_service(info)
        api = Api(port, info["api_key"])
        try:
            self.assertEqual(api.get("/api")["Version"], "2019.1.5")
        finally:
            api.close()


if __name__ == "__main__":
    unittest.main()
