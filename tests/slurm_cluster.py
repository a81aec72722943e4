"""A real single-node SLURM cluster for the tests: Debian's slurm-wlm and munge, run as background
processes from a temporary folder, stopped by process id.

Everything it needs lives in that folder: a fresh munge key and socket, slurm.conf (free ports,
the local host as the only node), the controller's state and the daemons' logs. Clients find the
cluster through SLURM_CONF, which `Cluster.env` sets; nothing under /etc is read or changed (apart
from what the packages installed). Root is needed: slurmd runs jobs as their users and
proctrack/linuxproc reads every process's /proc entry.

    with Cluster.start(tmp_path) as cluster:     # or Cluster.unavailable() -> the reason, or None
        subprocess.run(["sinfo"], env=cluster.env(os.environ))
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol")


def unavailable() -> str | None:
    """Why a cluster cannot be started here (one line), or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing): "
                "apt-get install slurm-wlm munge, as root (.ci/run does)")
    if os.geteuid() != 0:
        return "a SLURM cluster needs root (slurmd starts jobs as their users)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


SLURM_CONF = """\
# written by tests/slurm_cluster.py: one node, this host
ClusterName=odextest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container: track processes through /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MessageTimeout=30
# between SIGTERM and SIGKILL (scancel, scontrol requeue): time for odex's checkpoint
KillWait=30
MinJobAge=300
# the node offers {cpus} CPUs whatever the hardware has (tests' jobs are tiny and mostly wait)
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


@dataclass
class Cluster:
    root: Path
    conf: Path
    host: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self, base: dict | None = None) -> dict:
        """An environment whose SLURM clients (sbatch, squeue, scontrol, sacct) talk to this cluster."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True, check=check,
                              timeout=timeout)

    @classmethod
    def start(cls, root: Path, *, cpus: int = 4, memory_mb: int = 8000, timeout: float = 60) -> "Cluster":
        root = Path(root)
        for sub in ("state", "spool", "munge"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # munged checks that its folders cannot be written by others
        os.chmod(root, 0o755)
        os.chmod(root / "munge", 0o700)
        host = socket.gethostname().split(".")[0]
        munge = root / "munge"
        ctld_port, slurmd_port = _free_ports(2)
        conf = root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(host=host, ctld_port=ctld_port, slurmd_port=slurmd_port, root=root,
                                          munge_socket=munge / "munge.socket", cpus=cpus, memory_mb=memory_mb))
        cluster = cls(root=root, conf=conf, host=host)
        try:
            subprocess.run([_exe("mungekey"), "--create", f"--keyfile={munge / 'munge.key'}", "--force"],
                           check=True, capture_output=True, timeout=30)
            cluster._spawn("munged", _exe("munged"), "--foreground", "--force",
                           f"--socket={munge / 'munge.socket'}", f"--key-file={munge / 'munge.key'}",
                           f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                           f"--seed-file={munge / 'munged.seed'}")
            cluster._wait(lambda: (munge / "munge.socket").exists(), timeout, "munged's socket")
            # -c: a clean controller state; -D: in the foreground, so the pid is the daemon's
            cluster._spawn("slurmctld", _exe("slurmctld"), "-D", "-c", "-i", "-f", str(conf))
            cluster._spawn("slurmd", _exe("slurmd"), "-D", "-f", str(conf))
            cluster._wait(cluster.idle, timeout, "the node to be idle in sinfo")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, name: str, *argv: str) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                            start_new_session=True)
        log.close()

    def idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=20)
        return out.returncode == 0 and out.stdout.split() == ["idle"]

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}:\n"
                                       + self.logs())
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n" + self.logs())

    def logs(self, tail: int = 2000) -> str:
        out = []
        for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")) + [self.root / "munge/munged.log"]:
            if f.exists():
                out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        """Stop the daemons by process id (slurmd first), then whatever their jobs left behind."""
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        # A job step still running when slurmd stops keeps its slurmstepd, srun and batch script
        # alive (orphans that collected over repeated runs). They inherited this cluster's
        # SLURM_CONF from slurmd, which is how they are told apart from any other process.
        mark = f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if mark in (proc / "environ").read_bytes().split(b"\0"):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass        # gone already, or not ours to read

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class SlowFirstAttempt:
    """A trainer callback (callbacks=...) for the preemption test: in a SLURM job's first attempt,
    from epoch `from_epoch` on, each training step waits `seconds`, so the test can interrupt the
    job mid-epoch; a requeued attempt (SLURM_RESTART_COUNT > 0) runs at full speed. It only waits:
    the numbers are those of a run without it."""

    def __init__(self, seconds: float = 1.0, from_epoch: int = 2):
        self.seconds, self.from_epoch = seconds, from_epoch
        self.first_attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0) == 0
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def on_step_end(self, epoch: int, step) -> None:
        if self.first_attempt and epoch >= self.from_epoch:
            time.sleep(self.seconds)
