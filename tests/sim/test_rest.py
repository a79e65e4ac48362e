import sqlite3
import time
import unittest
import uuid

from simtest import Api, SimCase

COLLECTION_KEYS = {"ItemType", "TotalResults", "ItemsPerPage", "NumberOfPages", "LastPageNumber", "Items",
                   "Links"}


class Rest3x(SimCase):
    def setUp(self):
        super().setUp()
        self.info = self.create("3.17.14")
        self.port = self.serve(self.info)
        self.api = Api(self.port, self.info["api_key"])

    def tearDown(self):
        self.api.close()
        super().tearDown()

    def test_root_is_anonymous_and_shaped(self):
        root = self.api.get("/api", key="")
        self.assertEqual(root["Application"], "Octopus Deploy")
        self.assertEqual(root["Version"], "3.17.14")
        self.assertIn("ApiVersion", root)
        self.assertEqual(uuid.UUID(root["InstallationId"]).version, 4)
        self.assertIn("Self", root["Links"])
        self.assertNotIn("Spaces", root["Links"])

    def test_auth_missing_and_wrong_key_401(self):
        for key in ("", "API-WRONGWRONGWRONGWRONGWRONG1"):
            s, h, body = self.api.call("GET", "/api/machines", key=key)
            self.assertEqual(s, 401)
            self.assertIn("ErrorMessage", body)
            self.assertIsInstance(body["Errors"], list)

    def test_no_spaces_or_workers_on_3x(self):
        for path in ("/api/spaces", "/api/Spaces-1/machines", "/api/workers"):
            s, _, body = self.api.call("GET", path)
            self.assertEqual(s, 404, path)
            self.assertIn("ErrorMessage", body)

    def test_paging_follows_page_next(self):
        first = self.api.get("/api/machines?take=5")
        self.assertEqual(set(first) & COLLECTION_KEYS, COLLECTION_KEYS)
        self.assertEqual(first["ItemType"], "DeploymentTarget")
        self.assertEqual(first["TotalResults"], 12)
        self.assertEqual(first["ItemsPerPage"], 5)
        self.assertEqual(first["NumberOfPages"], 3)
        self.assertEqual(first["LastPageNumber"], 2)
        for k in ("Self", "Template", "Page.All", "Page.Current", "Page.Next"):
            self.assertIn(k, first["Links"])
        ids, page = [], first
        while True:
            ids += [m["Id"] for m in page["Items"]]
            nxt = page["Links"].get("Page.Next")
            if not nxt:
                break
            self.assertTrue(nxt.startswith("/api/"))
            page = self.api.get(nxt)
        self.assertEqual(len(ids), 12)
        self.assertEqual(len(set(ids)), 12)
        allm = self.api.get("/api/machines/all")
        self.assertIsInstance(allm, list)
        self.assertEqual([m["Id"] for m in allm], ids)

    def test_disable_machine_by_put_and_odbc_sees_it(self):
        m = self.api.get("/api/machines/Machines-3")
        self.assertFalse(m["IsDisabled"])
        m["IsDisabled"] = True
        s, _, out = self.api.put("/api/machines/Machines-3", m)
        self.assertEqual(s, 200)
        self.assertTrue(out["IsDisabled"])
        self.assertEqual(out["Endpoint"], m["Endpoint"])
        db = sqlite3.connect(self.info["database"])
        self.assertEqual(db.execute("SELECT IsDisabled FROM Machine WHERE Id='Machines-3'").fetchone()[0], 1)
        db.execute("UPDATE Machine SET IsDisabled=1 WHERE Id='Machines-4'")
        db.execute("UPDATE Configuration SET JSON=json_set(JSON,'$.InstallationId','0e1b0f3c-4a57-4c4e-9d35-"
                   "5b7a3c2d1e0f') WHERE Id='upgradeavailability'")
        db.commit()
        db.close()
        self.assertTrue(self.api.get("/api/machines/Machines-4")["IsDisabled"])
        self.assertEqual(self.api.get("/api")["InstallationId"], "0e1b0f3c-4a57-4c4e-9d35-5b7a3c2d1e0f")

    def test_put_with_mismatched_id_is_400(self):
        m = self.api.get("/api/machines/Machines-1")
        s, _, body = self.api.put("/api/machines/Machines-2", m)
        self.assertEqual(s, 400)
        self.assertIn("does not match", body["ErrorMessage"])

    def test_triggers_and_subscriptions(self):
        tr = self.api.get("/api/projects/Projects-2/triggers")
        self.assertEqual(tr["ItemType"], "ProjectTrigger")
        self.assertTrue(tr["Items"])
        t = tr["Items"][0]
        self.assertEqual(t["ProjectId"], "Projects-2")
        t["IsDisabled"] = True
        s, _, out = self.api.put("/api/projecttriggers/" + t["Id"], t)
        self.assertEqual(s, 200)
        self.assertTrue(self.api.get("/api/projecttriggers/" + t["Id"])["IsDisabled"])
        subs = self.api.get("/api/subscriptions/all")
        self.assertEqual(len(subs), 3)
        sub = subs[0]
        sub["IsDisabled"] = True
        self.assertEqual(self.api.put(sub["Links"]["Self"], sub)[0], 200)

    def test_status_health_folders_licence_nodes(self):
        st = self.api.get("/api/serverstatus")
        self.assertFalse(st["IsInMaintenanceMode"])
        self.assertIn("IsUpgradeAvailable", st)
        self.assertIn("MaximumAvailableVersion", st)
        # no /api/serverstatus/health (2019.4+) and no server-folders values on 3.x
        self.assertEqual(self.api.call("GET", "/api/serverstatus/health")[0], 404)
        self.assertEqual(self.api.call("GET", "/api/configuration/server-folders/values")[0], 404)
        self.assertNotIn("Health", st["Links"])
        ls = self.api.get("/api/licenses/licenses-current-status")
        self.assertTrue(ls["IsCompliant"])
        self.assertEqual(ls["Messages"], [])
        self.assertIn("<License", self.api.get("/api/licenses/licenses-current")["LicenseText"])
        summary = self.api.get("/api/octopusservernodes/summary")
        node = summary["Nodes"][0]
        for k in ("Id", "Name", "IsInMaintenanceMode", "RunningTaskCount", "IsOffline"):
            self.assertIn(k, node)
        self.assertFalse(node["IsOffline"])

    def test_non_admin_cannot_toggle_maintenance_or_drain(self):
        s, _, body = self.api.put("/api/maintenanceconfiguration", {"Id": "maintenance", "IsInMaintenanceMode": True},
                                  key=self.info["user_api_key"])
        self.assertEqual(s, 403)
        self.assertIn("ErrorMessage", body)
        node = self.api.get("/api/octopusservernodes/summary")["Nodes"][0]
        s, _, _ = self.api.put("/api/octopusservernodes/" + node["Id"], dict(node, IsInMaintenanceMode=True),
                               key=self.info["user_api_key"])
        self.assertEqual(s, 403)

    def test_maintenance_mode_queued_tasks_finish_new_refused(self):
        s, _, t1 = self.api.post("/api/tasks", {"Name": "Health", "Description": "Check health",
                                                "SimDurationSeconds": 1.0})
        self.assertEqual(s, 201)
        self.assertEqual(t1["State"], "Queued")
        s, _, mc = self.api.put("/api/maintenanceconfiguration", {"Id": "maintenance", "IsInMaintenanceMode": True})
        self.assertEqual(s, 200)
        self.assertTrue(mc["IsInMaintenanceMode"])
        self.assertTrue(self.api.get("/api/serverstatus")["IsInMaintenanceMode"])
        active = self.api.get("/api/tasks?states=Executing,Cancelling,Queued")
        self.assertEqual(active["ItemType"], "Task")
        self.assertIn(t1["Id"], [t["Id"] for t in active["Items"]])
        s, _, body = self.api.post("/api/tasks", {"Name": "Health"})
        self.assertEqual(s, 409)
        self.assertIn("maintenance mode", body["ErrorMessage"])
        m = self.api.get("/api/machines/Machines-1")
        s, _, _ = self.api.put("/api/machines/Machines-1", dict(m, IsDisabled=True), key=self.info["user_api_key"])
        self.assertEqual(s, 403)
        done = self.api.wait_task("/api/tasks/" + t1["Id"])
        self.assertEqual(done["State"], "Success")
        self.assertEqual(self.api.get("/api/tasks?states=Executing,Cancelling,Queued")["TotalResults"], 0)
        self.assertIn("Task started", self.api.call("GET", "/api/tasks/%s/raw" % t1["Id"])[2].decode())
        self.api.put("/api/maintenanceconfiguration", {"Id": "maintenance", "IsInMaintenanceMode": False})
        self.assertEqual(self.api.post("/api/tasks", {"Name": "Health"})[0], 201)

    def test_drained_node_does_not_start_queued_tasks(self):
        node = self.api.get("/api/octopusservernodes/summary")["Nodes"][0]
        s, _, out = self.api.put("/api/octopusservernodes/" + node["Id"], dict(node, IsInMaintenanceMode=True))
        self.assertEqual(s, 200)
        self.assertTrue(out["IsInMaintenanceMode"])
        _, _, t = self.api.post("/api/tasks", {"Name": "Health", "SimDurationSeconds": 0.1})
        time.sleep(0.6)
        self.assertEqual(self.api.get("/api/tasks/" + t["Id"])["State"], "Queued")
        self.api.put("/api/octopusservernodes/" + node["Id"], dict(node, IsInMaintenanceMode=False))
        self.assertEqual(self.api.wait_task("/api/tasks/" + t["Id"])["State"], "Success")


class RestSpaces(SimCase):
    def test_spaces_scoped_and_unscoped_workers_events_folders(self):
        info = self.create("2023.4.8166")
        api = Api(self.serve(info), info["api_key"])
        try:
            root = api.get("/api")
            self.assertIn("Spaces", root["Links"])
            spaces = api.get("/api/spaces")
            self.assertEqual(spaces["ItemType"], "Space")
            self.assertEqual(spaces["Items"][0]["Id"], "Spaces-1")
            self.assertEqual(api.get("/api/spaces/all")[0]["Id"], "Spaces-1")
            scoped = api.get("/api/Spaces-1/machines?take=4")
            unscoped = api.get("/api/machines?take=4")
            self.assertEqual([m["Id"] for m in scoped["Items"]], [m["Id"] for m in unscoped["Items"]])
            self.assertEqual(scoped["Items"][0]["SpaceId"], "Spaces-1")
            self.assertTrue(unscoped["Links"]["Page.Next"].startswith("/api/Spaces-1/machines?"))
            self.assertEqual(api.call("GET", "/api/Spaces-9/machines")[0], 404)
            w = api.get("/api/Spaces-1/workers")
            self.assertEqual(w["ItemType"], "Worker")
            tr = api.get("/api/Spaces-1/projects/Projects-1/triggers")["Items"][0]
            s, _, out = api.put("/api/Spaces-1/projecttriggers/" + tr["Id"], dict(tr, IsDisabled=True))
            self.assertEqual(s, 200)
            self.assertTrue(out["IsDisabled"])
            f = api.get("/api/configuration/server-folders/values")
            self.assertEqual(set(f), {"ArtifactsDirectory", "PackagesDirectory", "LogsDirectory", "Links"})
            self.assertEqual(f["LogsDirectory"], info["folders"]["TaskLogs"])
            h = api.get("/api/serverstatus/health", key="")  # anonymous
            self.assertTrue(h["IsOperatingNormally"])
            _, _, t = api.post("/api/Spaces-1/tasks", {"Name": "Health", "SimDurationSeconds": 0.1})
            self.assertEqual(api.wait_task("/api/Spaces-1/tasks/" + t["Id"])["State"], "Success")
        finally:
            api.close()


class ExportImport(SimCase):
    def move(self, sapi, dapi, task_id, password, space="Spaces-1"):
        """Octopus's cross-server route: download the export artifact, upload it, import it."""
        art = [a for a in sapi.get("/api/%s/artifacts?regarding=%s" % (space, task_id))["Items"]
               if a["Filename"].startswith("Octopus-Export-")][0]
        data = sapi.get(art["Links"]["Content"])
        s, _ = dapi.upload("/api/%s/projects/import-export/import-files" % space, "fileData", art["Filename"], data)
        self.assertEqual(s, 200)
        s, _, imp = dapi.post("/api/%s/projects/import-export/import" % space,
                              {"ImportSource": {"Type": "upload", "UploadedFileId": art["Filename"]},
                               "Password": {"HasValue": True, "NewValue": password}})
        self.assertEqual(s, 200)
        return dapi.wait_task("/api/%s/tasks/%s" % (space, imp["TaskId"]))

    def test_export_upload_import_into_second_instance(self):
        src = self.create("2021.1.7687", "src")
        dst = self.create("2023.4.8166", "dst")
        sapi = Api(self.serve(src), src["api_key"])
        dapi = Api(self.serve(dst), dst["api_key"])
        try:
            self.assertEqual(sapi.call("POST", "/api/Spaces-1/projects/import-export/export",
                                       {"IncludedProjectIds": ["Projects-1"]})[0], 400)
            s, _, r = sapi.post("/api/Spaces-1/projects/import-export/export",
                                {"IncludedProjectIds": ["Projects-1", "Projects-3"],
                                 "Password": {"HasValue": True, "NewValue": "s3cret"}})
            self.assertEqual(s, 200)
            task = sapi.wait_task("/api/Spaces-1/tasks/" + r["TaskId"])
            self.assertEqual(task["State"], "Success", task)
            db = sqlite3.connect(dst["database"])
            db.execute("DELETE FROM Project")
            db.commit()
            self.assertEqual(self.move(sapi, dapi, r["TaskId"], "wrong")["State"], "Failed")
            t = self.move(sapi, dapi, r["TaskId"], "s3cret")
            self.assertEqual(t["State"], "Success", t)
            names = sorted(p["Name"] for p in dapi.get("/api/Spaces-1/projects/all"))
            self.assertEqual(names, ["Project 1", "Project 3"])
            self.assertEqual(db.execute("SELECT COUNT(*) FROM Project").fetchone()[0], 2)
            db.close()
            # the simulator's old shortcuts are gone: import source "file", ServerUri/ApiKey
            for src_ in ({"Type": "file", "Path": "/nonexistent.zip"},):
                s, _, _ = dapi.post("/api/Spaces-1/projects/import-export/import",
                                    {"ImportSource": src_, "Password": {"HasValue": True, "NewValue": "s3cret"}})
                self.assertEqual(s, 400)
            # a newer source cannot be imported into an older target
            pid = dapi.get("/api/Spaces-1/projects/all")[0]["Id"]
            _, _, ex = dapi.post("/api/Spaces-1/projects/import-export/export",
                                 {"IncludedProjectIds": [pid], "Password": {"HasValue": True, "NewValue": "s3cret"}})
            self.assertEqual(dapi.wait_task("/api/Spaces-1/tasks/" + ex["TaskId"])["State"], "Success")
            failed = self.move(dapi, sapi, ex["TaskId"], "s3cret")
            self.assertEqual(failed["State"], "Failed")
            self.assertIn("same or an older version", failed["ErrorMessage"])
        finally:
            sapi.close()
            dapi.close()

    def test_no_export_before_2021_1(self):
        info = self.create("2019.1.5")
        api = Api(self.serve(info), info["api_key"])
        try:
            s, _, _ = api.post("/api/Spaces-1/projects/import-export/export",
                               {"IncludedProjectIds": ["Projects-1"], "Password": {"HasValue": True, "NewValue": "x"}})
            self.assertEqual(s, 404)
        finally:
            api.close()


if __name__ == "__main__":
    unittest.main()
