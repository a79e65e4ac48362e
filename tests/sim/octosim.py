#!/usr/bin/env python3
"""Octopus Deploy simulator for upkit's tests (see README.md beside this file).

  octosim.py create --home DIR --version V [--size small|large] [--instance NAME] [--port PORT]
                    [--machines N] [--files N] [--package-mb N] [--start]
  octosim.py machine --root DIR [--name NAME]
  octosim.py serve --home DIR --port PORT [--downloads DIR]
  octosim.py download-site --dir DIR --port PORT
  octosim.py downloads --dir DIR
  octosim.py sandbox --dir DIR [--port PORT]
"""

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from simlib import machine as mach  # noqa: E402
from simlib import rest, schema, servercli, winsvc  # noqa: E402
from simlib import sandbox as sandboxlib  # noqa: E402
from simlib.common import (DEFAULT_INSTANCE, SimError, VERSIONS, connect, connection_string,  # noqa: E402
                           find_home_config, folders_of, free_port, load_faults, new_master_key,
                           odbc_connection_string, read_config, read_json)


def cli(machine, *argv):
    """Run an Octopus.Server command in-process; raise with its stderr when it fails."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = servercli.main(machine, list(argv))
    if code != 0:
        raise SimError("Octopus.Server %s failed (%d): %s" % (" ".join(argv), code, err.getvalue().strip()))
    return out.getvalue()


def create(home_root, version, size="small", instance=DEFAULT_INSTANCE, port=None, machines=None,
           files=None, package_mb=None, start=False):
    if version not in [v for v, _ in VERSIONS]:
        raise SimError("unknown version %s; available: %s" % (version, ", ".join(v for v, _ in VERSIONS)))
    root = os.path.abspath(home_root)
    m = mach.create_machine(os.path.join(root, "machine"))["machine"]
    downloads = mach.build_downloads(os.path.join(root, "downloads"))
    code = mach.install(m, os.path.join(downloads, mach.msi_name(version)))
    if code != 0:
        raise SimError("installing %s failed with %d" % (version, code))
    home = os.path.join(m, "Octopus") if instance == DEFAULT_INSTANCE else os.path.join(m, "Octopus", instance)
    config = os.path.join(home, instance + ".config")
    db = os.path.join(root, "sqlserver", "OctopusDeploy.db" if instance == DEFAULT_INSTANCE
                      else "Octopus-%s.db" % instance)
    port = port or free_port()
    if schema.vcmp(version, "3.16.4") >= 0:
        cli(m, "create-instance", "--instance=" + instance, "--config=" + config, "--home=" + home)
    else:
        cli(m, "create-instance", "--instance=" + instance, "--config=" + config)
    cli(m, "configure", "--instance=" + instance, "--home=" + home,
        "--webListenPrefixes=http://127.0.0.1:%d/" % port)
    cfg = read_config(config)
    folders = folders_of(cfg)
    if schema.vcmp(version, "2019.1.0") >= 0:
        folders = dict(folders, Packages=os.path.join(folders["Packages"], "Spaces-1"))
    master_key = new_master_key()
    schema.create_database(db, master_key, version, cfg.get("Octopus.Server.NodeName") or mach.machine_name(m),
                           schema.seed_options(size, machines, files, package_mb), folders)
    api_key, user_key = schema.new_api_key(), schema.new_api_key()
    c = connect(db)
    try:
        admin = c.execute("SELECT Id FROM [User] WHERE Username='admin'").fetchone()[0]
        user = c.execute("SELECT Id FROM [User] WHERE Username='deployer'").fetchone()[0]
        schema.add_api_key(c, admin, api_key, "administrator key created by octosim")
        schema.add_api_key(c, user, user_key, "non-administrator key created by octosim")
    finally:
        c.close()
    cs = connection_string(db)
    if schema.vcmp(version, "2018.1.0") >= 0:
        cli(m, "database", "--instance=" + instance, "--connectionString=" + cs, "--masterKey=" + master_key)
    else:
        cli(m, "configure", "--instance=" + instance, "--storageConnectionString=" + cs,
            "--masterKey=" + master_key)
    cli(m, "service", "--instance=" + instance, "--install")
    if start:
        cli(m, "service", "--instance=" + instance, "--start")
        if not winsvc.wait_api(port):
            raise SimError("the started service did not answer on port %d" % port)
    f = folders_of(read_config(config))
    return {"home": home, "database": os.path.abspath(db), "connection_string": odbc_connection_string(db),
            "sql_connection_string": cs, "sqlserver": os.path.dirname(os.path.abspath(db)),
            "api_key": api_key, "user_api_key": user_key, "master_key": master_key,
            "server_exe": mach.server_exe(m), "msiexec": mach.msiexec_path(m), "sc": mach.sc_path(m),
            "filever": mach.filever_path(m), "service_name": winsvc.service_name(instance),
            "downloads": downloads, "instance": instance, "config": config,
            "machine": m, "machine_name": mach.machine_name(m), "folders": f, "version": version,
            "port": port, "url": "http://127.0.0.1:%d" % port}


def serve(home, port, downloads=None, config=None, machine=None):
    home = os.path.abspath(home)
    config = config or find_home_config(home)
    if not machine:
        ptr = read_json(os.path.join(home, "octosim-instance.json")) or {}
        machine = ptr.get("machine")
    if not machine:
        raise SimError("cannot tell which machine home %s belongs to (octosim-instance.json missing)" % home)
    version = mach.installed_version(machine)
    if not version:
        raise SimError("Octopus Server is not installed on machine %s" % machine)
    cfg = read_config(config)
    delay = float(load_faults(machine).get("startup_delay") or 0.5)
    time.sleep(delay)  # a server takes a while to start answering after its service reports Running
    servercli.preflight(machine, cfg, version)
    app = rest.App(home, config, machine, version, downloads=downloads and os.path.abspath(downloads))
    app.start_background()
    return run_server(rest.make_server(port, rest.Handler, app), app)


def run_server(server, app=None):
    print("http://127.0.0.1:%d" % server.server_address[1], flush=True)

    def stop(signum, frame):
        if app:
            app.stop_event.set()
            if signum == signal.SIGTERM:
                try:
                    app.mark_offline_later()
                except Exception as e:  # the stop goes on; report like the server log would
                    print("could not mark the node offline: %r" % e, flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def download_site(d, port, machine=None):
    d = os.path.abspath(d)
    if not os.path.exists(os.path.join(d, "versions.json")):
        mach.build_downloads(d)
    app = rest.DownloadOnly(d, machine)
    return run_server(rest.make_server(port, rest.DownloadHandler, app))


def sandbox(d, port=None):
    """make sandbox: see simlib/sandbox.py."""
    def start_service(info):
        cli(info["machine"], "service", "--start")
        if not winsvc.wait_api(info["port"]):
            raise SimError("the sandbox's service did not answer on port %d" % info["port"])
    return sandboxlib.run(d, port, create, start_service)


def main(argv=None):
    p = argparse.ArgumentParser(prog="octosim.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--home", required=True)
    c.add_argument("--version", required=True)
    c.add_argument("--size", default="small", choices=["small", "large"])
    c.add_argument("--instance", default=DEFAULT_INSTANCE)
    c.add_argument("--port", type=int)
    c.add_argument("--machines", type=int)
    c.add_argument("--files", type=int)
    c.add_argument("--package-mb", type=int)
    c.add_argument("--start", action="store_true")
    m = sub.add_parser("machine")
    m.add_argument("--root", required=True)
    m.add_argument("--name")
    s = sub.add_parser("serve")
    s.add_argument("--home", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--downloads")
    s.add_argument("--config")
    s.add_argument("--machine")
    d = sub.add_parser("download-site")
    d.add_argument("--dir", required=True)
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--machine", help="machine folder whose faults.json applies")
    b = sub.add_parser("downloads")
    b.add_argument("--dir", required=True)
    x = sub.add_parser("sandbox")
    x.add_argument("--dir", required=True)
    x.add_argument("--port", type=int)
    a = p.parse_args(argv)
    try:
        if a.cmd == "create":
            print(json.dumps(create(a.home, a.version, a.size, a.instance, a.port, a.machines, a.files,
                                    a.package_mb, a.start), indent=2))
        elif a.cmd == "machine":
            r = mach.create_machine(a.root, a.name)
            print(json.dumps(r, indent=2))
        elif a.cmd == "serve":
            return serve(a.home, a.port, a.downloads, a.config, a.machine)
        elif a.cmd == "download-site":
            return download_site(a.dir, a.port, a.machine)
        elif a.cmd == "downloads":
            d = mach.build_downloads(os.path.abspath(a.dir))
            print(json.dumps({"downloads": d, "sha256sums": os.path.join(d, "SHA256SUMS"),
                              "feed": os.path.join(d, "versions.json")}, indent=2))
        elif a.cmd == "sandbox":
            return sandbox(a.dir, a.port)
        return 0
    except SimError as e:
        sys.stderr.write("octosim: %s\n" % e)
        return e.code or 1


if __name__ == "__main__":
    sys.exit(main())
