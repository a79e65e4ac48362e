"""`octosim.py sandbox`: a simulated Octopus site to follow README's "Upgrading Octopus Deploy" against.

DIR/main/...         the 3.17.14 server (machine, database, download files), its service started
DIR/new-server/...   an empty second machine for clone-instance (its simulated SQL Server folder too)
DIR/site.lua         the config every command of the walkthrough takes (--config site.lua)
DIR/octopus.key      the administrator's API key (0600), named by site.lua's api_key_file
DIR/pids/NAME.pid    processes the sandbox started itself (the download site)
DIR/sandbox.json     marks the folder as a sandbox's (a new sandbox replaces only such a folder); once
                     ready: {"pid", "main": create's JSON, "clone": machine's JSON, "download_site", "config"}

Stopping the sandbox (SIGINT or SIGTERM) stops every process it knows of by pid file: its own, and every
service of either machine (MACHINE/services/*.pid, also the clone's service a procedure started).
This is test tooling, not a simulated Octopus behaviour.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import machine as mach
from . import winsvc
from .common import SIM_DIR, SimError, free_port

MARKER = "sandbox.json"


def _pid_files(d):
    return sorted(glob.glob(os.path.join(d, "pids", "*.pid")) +
                  glob.glob(os.path.join(d, "*", "**", "services", "*.pid"), recursive=True))


def _our_pid(path):
    """The pid a pid file names, when that process runs and is one of the simulator's."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _our_pid_of(pid) else None


def _our_pid_of(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"octosim" in f.read() and winsvc.alive(pid)
    except OSError:
        return False


def stop_all(d, timeout=10.0):
    """SIGTERM every live process of the sandbox's pid files, SIGKILL after `timeout`; remove the files.
    Returns the pids that were running."""
    pids = {}
    for pf in _pid_files(d):
        pid = _our_pid(pf)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
                pids[pid] = pf
            except ProcessLookupError:
                pass
        else:
            with_unlink(pf)
    deadline = time.time() + timeout
    while time.time() < deadline and any(winsvc.alive(p) for p in pids):
        time.sleep(0.05)
    for pid, pf in pids.items():
        if winsvc.alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with_unlink(pf)
    return sorted(pids)


def with_unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _lua_string(s):
    return json.dumps(s)  # a JSON string of printable text is a valid Lua string literal


def write_config(path, values, comments):
    lines = ["-- written by `octosim.py sandbox` (make sandbox): the sandbox's site, for every command of",
             "-- README's \"Upgrading Octopus Deploy\"", "return {"]
    for k in sorted(values):
        c = comments.get(k)
        lines.append("  %s = %s,%s" % (k, _lua_string(values[k]), ("  -- " + c) if c else ""))
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def prepare_dir(d):
    if os.path.isdir(d) and os.listdir(d):
        if not os.path.exists(os.path.join(d, MARKER)):
            raise SimError("%s is not empty and is not a sandbox's folder; choose another --dir" % d)
        try:
            with open(os.path.join(d, MARKER)) as f:
                other = int(json.load(f).get("pid") or 0)
        except (OSError, ValueError, AttributeError):
            other = 0
        if other and other != os.getpid() and _our_pid_of(other):
            raise SimError("a sandbox (pid %d) is running in %s; stop it first (Ctrl-C, or kill %d)" % (other, d, other))
        stop_all(d)
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "pids"), exist_ok=True)
    with open(os.path.join(d, MARKER), "w") as f:
        json.dump({"pid": os.getpid()}, f)


def start_site(d, downloads, machine):
    """The download site (versions feed, installers) on a free port; its pid in DIR/pids."""
    p = subprocess.Popen([sys.executable, os.path.join(SIM_DIR, "octosim.py"), "download-site", "--dir", downloads,
                          "--port", "0", "--machine", machine], stdout=subprocess.PIPE,
                         stderr=open(os.path.join(d, "download-site.log"), "ab"), stdin=subprocess.DEVNULL,
                         start_new_session=True)
    with open(os.path.join(d, "pids", "download-site.pid"), "w") as f:
        f.write(str(p.pid))
    url = p.stdout.readline().decode().strip()
    if not url.startswith("http://"):
        raise SimError("the download site did not start (see %s)" % os.path.join(d, "download-site.log"))
    return url


def run(d, port, create, start_service):
    """Create and start everything, print the config, wait for SIGINT/SIGTERM, stop everything."""
    d = os.path.abspath(d)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    prepare_dir(d)
    try:
        info = create(os.path.join(d, "main"), "3.17.14", port=port or free_port())
        start_service(info)
        clone = mach.create_machine(os.path.join(d, "new-server"), "NEW-SERVER")
        sqlserver = os.path.join(d, "new-server", "sqlserver")
        os.makedirs(sqlserver, exist_ok=True)
        site = start_site(d, info["downloads"], info["machine"])
        key = os.path.join(d, "octopus.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(info["api_key"] + "\n")
        values = {
            "server_url": info["url"], "instance": info["instance"], "server_exe": info["server_exe"],
            "service_control": info["sc"], "file_version": info["filever"], "msiexec": info["msiexec"],
            "db": info["connection_string"], "backup_dir": os.path.join(d, "backup"), "target_version": "latest",
            "api_key_file": key, "download_url": site + "/octopus", "versions_feed": site + "/download/upgrade/v3",
            "installer_digests": os.path.join(info["downloads"], "SHA256SUMS"),
            "clone_server_exe": clone["server_exe"], "clone_msiexec": clone["msiexec"],
            "clone_service_control": clone["sc"], "clone_file_version": clone["filever"],
            "clone_home": os.path.join(clone["machine"], "Octopus"),
            "clone_db": "Data Source=%s;Initial Catalog=OctopusClone" % sqlserver,
            "clone_odbc": "Driver=SQLite3;Database=%s" % os.path.join(sqlserver, "OctopusClone.db"),
            "clone_url": "http://127.0.0.1:%d/" % free_port(),
        }
        comments = {
            "api_key_file": "the administrator's API key (a file, never on the command line)",
            "db": "upkit reaches the simulated SQL Server through ODBC",
            "download_url": "the sandbox's download site (versions feed and installers)",
            "installer_digests": "sha256sum lines of the installers (Octopus publishes none)",
            "clone_db": "the clone's database, as the new server's Octopus gets it (ADO.NET)",
            "clone_url": "where the clone will listen",
            "service_control": "the simulated machine's sc", "file_version": "and its file version reader",
        }
        config = os.path.join(d, "site.lua")
        write_config(config, values, comments)
        with open(os.path.join(d, MARKER), "w") as f:
            json.dump({"pid": os.getpid(), "main": info, "clone": clone, "download_site": site, "config": config}, f,
                      indent=2)
        with open(config) as f:
            print(f.read())
        print("Octopus Server 3.17.14 sandbox running at %s/api (main machine %s)" % (info["url"], info["machine"]))
        print("Download site: %s   second machine for the clone: %s" % (site, clone["machine"]))
        print("Config written to %s (API key in %s)." % (config, key))
        print("Follow README's \"Upgrading Octopus Deploy\" from that folder:")
        print("  cd %s && upkit run preflight --config site.lua" % d)
        built = os.path.normpath(os.path.join(SIM_DIR, "..", "..", "build", "upkit"))
        if os.path.exists(built) and not shutil.which("upkit"):
            print("(upkit is %s here; `make install` puts it on PATH)" % built)
        print("Press Ctrl-C to stop the sandbox and every service it or a procedure started.", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        stopped = stop_all(d)
        print("sandbox stopped (%d processes)" % len(stopped), flush=True)
    return 0
