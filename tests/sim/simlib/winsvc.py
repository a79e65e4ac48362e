"""What Windows keeps on a simulated machine: the services (Service Control Manager), the Service
Watchdog's scheduled task, and the stand-ins `sc` and `filever` (see FIDELITY.md, section 3).

MACHINE/services.json   {"Services": {NAME: {"Instance", "Config"}}}   installed services
MACHINE/services/NAME.pid                                               pid of a running service
MACHINE/watchdog.json   {"Instances": "*" | "A,B", "Interval": MINUTES}  the watchdog task
"""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from .common import SIM_DIR, SimError, exit_status, read_config, read_json, write_json

DEFAULT_INSTANCE = "OctopusServer"


def service_name(instance):
    """OctopusDeploy for the default instance, `OctopusDeploy: NAME` otherwise (OctopusDSC Get-ServiceName)."""
    return "OctopusDeploy" if instance == DEFAULT_INSTANCE else "OctopusDeploy: " + instance


def _path(machine):
    return os.path.join(machine, "services.json")


def installed(machine):
    return read_json(_path(machine), {"Services": {}})["Services"]


def _save(machine, services):
    write_json(_path(machine), {"Services": services})


def install(machine, instance, config):
    s = installed(machine)
    s[service_name(instance)] = {"Instance": instance, "Config": os.path.abspath(config)}
    _save(machine, s)


def uninstall(machine, instance):
    s = installed(machine)
    s.pop(service_name(instance), None)
    _save(machine, s)


def is_installed(machine, instance):
    return service_name(instance) in installed(machine)


def _pidfile(machine, instance):
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", service_name(instance))
    return os.path.join(machine, "services", slug + ".pid")


def alive(pid):
    """Is `pid` running (a zombie, e.g. a service started in-process and not yet reaped, is not)?"""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_of(machine, instance):
    """The running service's pid, or None."""
    try:
        with open(_pidfile(machine, instance)) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"octosim" not in f.read():
                return None
        return pid if alive(pid) else None
    except (OSError, ValueError):
        return None


def running_instances(machine):
    return [e["Instance"] for e in installed(machine).values() if pid_of(machine, e["Instance"])]


def stop(machine, instance):
    """Stop the service; False if it was not running."""
    pid = pid_of(machine, instance)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    try:
        os.unlink(_pidfile(machine, instance))
    except OSError:
        pass
    return True


def start(machine, instance, config, listen_port):
    """Start the service of `instance` (its server: `octosim.py serve`); returns (pid, port) once the
    process runs. The server itself checks at start-up what `preflight` checks, and stops if it fails."""
    if pid_of(machine, instance):
        return None
    cfg = read_config(config)
    home = cfg.get("Octopus.Home")
    if not home:
        raise SimError("The home folder is not configured (configure --home=DIR)")
    port = listen_port(cfg)
    logdir = os.path.join(home, "Logs")
    os.makedirs(logdir, exist_ok=True)
    logpath = os.path.join(logdir, "OctopusServer.txt")
    with open(logpath, "ab") as log:
        p = subprocess.Popen([sys.executable, os.path.join(SIM_DIR, "octosim.py"), "serve", "--home", home,
                              "--port", str(port), "--config", config, "--machine", machine],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    pf = _pidfile(machine, instance)
    os.makedirs(os.path.dirname(pf), exist_ok=True)
    with open(pf, "w") as f:
        f.write(str(p.pid))
    # Like `service --start` on Windows (ServiceController.Start, then wait for the status Running):
    # it returns once the process runs; the server answers on /api only when its start-up is done,
    # and a start-up that fails (database upgrade required, wrong master key) stops it afterwards.
    time.sleep(0.3)
    if p.poll() is not None:
        try:
            os.unlink(pf)
        except OSError:
            pass
        raise SimError("The service %s could not be started (process exited %s); see %s"
                       % (service_name(instance), p.returncode, logpath))
    return p.pid, port


def wait_api(port, timeout=30):
    """Poll http://127.0.0.1:PORT/api until it answers (what DSC does after `service --start`)."""
    url = "http://127.0.0.1:%d/api" % port
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers={"X-Octosim-Internal": "1"}),
                                   timeout=1).read()
            return True
        except Exception:
            time.sleep(0.1)
    return False


# ---------------------------------------------------------------- the Service Watchdog

def watchdog(machine):
    return read_json(os.path.join(machine, "watchdog.json"))


def set_watchdog(machine, instances, interval):
    write_json(os.path.join(machine, "watchdog.json"), {"Instances": instances, "Interval": interval})


def delete_watchdog(machine):
    try:
        os.unlink(os.path.join(machine, "watchdog.json"))
        return True
    except FileNotFoundError:
        return False


def watched(machine, instance):
    w = watchdog(machine)
    if not w:
        return False
    names = [n.strip().lower() for n in re.split(r"[,;]", w.get("Instances") or "*") if n.strip()]
    return "*" in names or instance.lower() in names or \
        (instance == DEFAULT_INSTANCE and "default" in names)


def watchdog_tick(machine, starter):
    """What the watchdog's scheduled task does when it runs: start every watched, installed,
    stopped service (`starter(instance, config)`; a start that fails is ignored, as the task's is)."""
    started = []
    for e in installed(machine).values():
        if watched(machine, e["Instance"]) and not pid_of(machine, e["Instance"]):
            try:
                starter(e["Instance"], e["Config"])
                started.append(e["Instance"])
            except SimError:
                pass
    return started


# ---------------------------------------------------------------- stand-ins

SC_STATES = {True: "4  RUNNING\n                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)",
             False: "1  STOPPED"}


def _sc_query(name, running):
    return ("\nSERVICE_NAME: %s\n        TYPE               : 10  WIN32_OWN_PROCESS\n"
            "        STATE              : %s\n        WIN32_EXIT_CODE    : 0  (0x0)\n"
            "        SERVICE_EXIT_CODE  : 0  (0x0)\n        CHECKPOINT         : 0x0\n"
            "        WAIT_HINT          : 0x0\n" % (name, SC_STATES[running]))


def sc_main(machine, argv, starter=None):
    """sc query|stop|start NAME (sc.exe's output; Windows error codes, low 8 bits as exit status)."""
    if len(argv) != 2 or argv[0].lower() not in ("query", "stop", "start"):
        sys.stdout.write("DESCRIPTION:\n        SC is a command line program used for communicating with the\n"
                         "        Service Control Manager and services.\nUSAGE:\n"
                         "        sc <server> [command] [service name] <option1> <option2>...\n")
        return exit_status(1639)
    op, name = argv[0].lower(), argv[1]
    entry = installed(machine).get(name)
    what = {"query": "EnumQueryServicesStatus:OpenService", "stop": "OpenService", "start": "OpenService"}[op]
    if entry is None:
        sys.stdout.write("[SC] %s FAILED 1060:\n\nThe specified service does not exist as an installed "
                         "service.\n\n" % what)
        return exit_status(1060)
    inst = entry["Instance"]
    running = pid_of(machine, inst) is not None
    if op == "query":
        sys.stdout.write(_sc_query(name, running))
        return 0
    if op == "stop":
        if not running:
            sys.stdout.write("[SC] ControlService FAILED 1062:\n\nThe service has not been started.\n\n")
            return exit_status(1062)
        stop(machine, inst)
        sys.stdout.write(_sc_query(name, False).replace("1  STOPPED", "3  STOP_PENDING"))
        return 0
    if running:
        sys.stdout.write("[SC] StartService FAILED 1056:\n\nAn instance of the service is already running.\n\n")
        return exit_status(1056)
    try:
        starter(inst, entry["Config"])
    except SimError as e:
        sys.stdout.write("[SC] StartService FAILED 1053:\n\nThe service did not respond to the start or "
                         "control request in a timely fashion.\n\n")
        sys.stderr.write("%s\n" % e)
        return exit_status(1053)
    sys.stdout.write(_sc_query(name, True).replace("4  RUNNING", "2  START_PENDING"))
    return 0


def filever_main(machine, argv, version_of_file):
    """filever PATH: the file version of PATH, as FileVersionInfo.FileVersion gives it."""
    if len(argv) != 1:
        sys.stderr.write("usage: filever PATH\n")
        return 2
    v = version_of_file(os.path.abspath(argv[0]))
    if not v:
        sys.stderr.write("filever: %s: file not found\n" % argv[0])
        return 1
    parts = v.split(".")
    print(".".join(parts + ["0"] * (4 - len(parts))))
    return 0
