#!/usr/bin/env python3
"""Start or stop a single-node SLURM cluster on this machine, to test the job scripts.

    python scripts/local_slurm.py start DIR   # prints the SLURM_CONF line to export
    python scripts/local_slurm.py stop DIR

``start`` runs munged, slurmctld and slurmd from Debian's ``munge`` and
``slurm-wlm`` packages on 127.0.0.1, with their configuration, keys, state,
spool folders, logs and process ids in DIR. When the packages are missing it
installs them with apt-get, which needs root. The cluster has one node with
this machine's CPUs and no GPUs, in one partition ``debug``. It uses neither
cgroups (proctrack/linuxproc, task/none) nor accounting (no sacct): finished
jobs stay visible to ``scontrol show job`` for an hour, and jobcomp/filetxt
appends one line per finished job to DIR/jobcomp.log.

SLURM commands find this cluster through the environment variable
SLURM_CONF=DIR/slurm.conf. ``stop`` cancels the cluster's jobs and ends the
three daemons by the process ids recorded in DIR/daemons.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
PARTITION = "debug"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here: the packages are missing and cannot be installed."""


@dataclass
class Cluster:
    """A running local cluster: its folder, the daemons' process ids and the client environment."""

    folder: Path
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    def environment(self, base: dict | None = None) -> dict:
        """Return ``base`` (default: os.environ) with SLURM_CONF pointing at this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env


def missing_commands() -> list[str]:
    return [name for name in COMMANDS if shutil.which(name) is None]


def ensure_packages(log=print) -> None:
    """Install munge and slurm-wlm with apt-get when their commands are missing.

    Raises ClusterUnavailable with the reason when they are missing and
    cannot be installed (not root, no apt-get, or apt-get failed).
    """
    missing = missing_commands()
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"SLURM commands missing ({', '.join(missing)}) and not running as "
                                 f"root to install {' '.join(PACKAGES)}")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"SLURM commands missing ({', '.join(missing)}) and no apt-get "
                                 f"to install {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    log(f"installing {' '.join(PACKAGES)} with apt-get")
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet.
        log("apt-get install failed; running apt-get update and trying again")
        update = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (update.stderr + result.stdout + result.stderr).strip().splitlines()[-5:]
            raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {' | '.join(tail)}")
    still_missing = missing_commands()
    if still_missing:
        raise ClusterUnavailable(f"SLURM commands still missing after installing: {', '.join(still_missing)}")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind(("127.0.0.1", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def write_config(folder: Path, cpus: int) -> Path:
    """Write munge's key and slurm.conf for a one-node cluster into ``folder``."""
    host = socket.gethostname().split(".")[0]
    for name in ("munge", "state", "spool"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / "munge").chmod(0o700)
    key = folder / "munge" / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    controller_port, node_port = _free_ports(2)
    lines = [
        "ClusterName=localtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={controller_port}",
        f"SlurmdPort={node_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={folder / 'jobcomp.log'}",
        "MinJobAge=3600",
        "SwitchType=switch/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SlurmdParameters=config_overrides",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _daemon(name: str, command: list[str], folder: Path, env: dict) -> subprocess.Popen:
    log = open(folder / f"{name}.out", "ab")
    # A session of its own, so a Ctrl-C in the starting terminal does not reach it.
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_until(check, timeout: float, what: str, folder: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    logs = []
    for name in ("munged.log", "slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out"):
        path = folder / name
        if path.exists():
            logs.append(f"--- {name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n" + "\n".join(logs))


def start(folder: str | Path, cpus: int | None = None) -> Cluster:
    """Start munged, slurmctld and slurmd with a fresh configuration in ``folder``.

    On failure, stops whatever it started and raises RuntimeError with the
    daemons' log tails.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(folder)
    conf = write_config(folder, cpus or os.cpu_count() or 1)
    env = cluster.environment()
    munge_socket = folder / "munge" / "munge.socket"
    try:
        munged = _daemon("munged", [
            "munged", "--foreground", "--force", f"--socket={munge_socket}",
            f"--key-file={folder / 'munge' / 'munge.key'}", f"--log-file={folder / 'munged.log'}",
            f"--pid-file={folder / 'munge' / 'munged.pid'}",
            f"--seed-file={folder / 'munge' / 'munged.seed'}"], folder, env)
        cluster.pids["munged"] = munged.pid
        _record(cluster)
        _wait_until(munge_socket.exists, START_TIMEOUT_S, "munged's socket", folder)

        slurmctld = _daemon("slurmctld", ["slurmctld", "-D", "-f", str(conf)], folder, env)
        cluster.pids["slurmctld"] = slurmctld.pid
        _record(cluster)
        _wait_until(lambda: _succeeds(["scontrol", "ping"], env), START_TIMEOUT_S, "slurmctld", folder)

        slurmd = _daemon("slurmd", ["slurmd", "-D", "-f", str(conf)], folder, env)
        cluster.pids["slurmd"] = slurmd.pid
        _record(cluster)
        _wait_until(lambda: _node_ready(env), START_TIMEOUT_S, "the node to become idle", folder)
    except BaseException:
        stop(folder)
        raise
    return cluster


def _record(cluster: Cluster) -> None:
    (cluster.folder / "daemons.json").write_text(json.dumps(cluster.pids, indent=2) + "\n")


def _succeeds(command: list[str], env: dict) -> bool:
    try:
        return subprocess.run(command, env=env, capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _node_ready(env: dict) -> bool:
    try:
        result = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True,
                                text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    states = result.stdout.split()
    return result.returncode == 0 and bool(states) and all(state in ("idle", "mix", "alloc") for state in states)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of this process that has exited but was not reaped yet.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop(folder: str | Path) -> list[str]:
    """Cancel the cluster's jobs and end its daemons by process id; return what was stopped.

    Sends SIGTERM to slurmd, slurmctld and munged in that order, then SIGKILL
    to any that is still running after STOP_TIMEOUT_S.
    """
    folder = Path(folder).resolve()
    record = folder / "daemons.json"
    if not record.exists():
        return []
    pids = json.loads(record.read_text())
    env = dict(os.environ, SLURM_CONF=str(folder / "slurm.conf"))
    if "slurmctld" in pids and _alive(pids["slurmctld"]):
        # Cancel the jobs first, so slurmd ends their processes before it stops.
        subprocess.run(["scancel", "--full", f"--partition={PARTITION}"], env=env,
                       capture_output=True, timeout=30)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            result = subprocess.run(["squeue", "--noheader", "--format=%i"], env=env,
                                    capture_output=True, text=True, timeout=30)
            if result.returncode != 0 or not result.stdout.strip():
                break
            time.sleep(0.5)
    stopped = []
    for name in ("slurmd", "slurmctld", "munged"):
        pid = pids.get(name)
        if pid is None or not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"{name} ({pid})")
    record.unlink()
    return stopped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("folder", help="folder for the configuration, state, logs and process ids")
    parser.add_argument("--cpus", type=int, default=None,
                        help="CPUs of the node (default: this machine's CPU count)")
    args = parser.parse_args(argv)
    if args.action == "start":
        try:
            ensure_packages(log=lambda message: print(message, file=sys.stderr))
        except ClusterUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        cluster = start(args.folder, args.cpus)
        print(f"export SLURM_CONF={cluster.conf}", flush=True)
        print(f"started {', '.join(f'{name} ({pid})' for name, pid in cluster.pids.items())}; "
              f"stop them with: python {sys.argv[0]} stop {cluster.folder}", file=sys.stderr)
        return 0
    stopped = stop(args.folder)
    print(f"stopped {', '.join(stopped) if stopped else 'nothing (no daemons recorded)'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
