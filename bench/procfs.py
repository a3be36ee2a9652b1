"""What the runner reads from the system (/proc, the git checkout), and how it starts its
children (pinned, loopback, dying with the runner)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # after the comm field: state is fields[0], utime is field 14 of the whole line → [11]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident set size in MiB."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


@dataclass(frozen=True)
class CoreTimes:
    """Seconds one CPU spent, since boot: running tasks (user, nice, system), in interrupts
    (irq, softirq: loopback TCP is mostly softirq), and stolen by the hypervisor."""

    tasks: float
    irq: float
    steal: float

    def __sub__(self, other: "CoreTimes") -> "CoreTimes":
        return CoreTimes(self.tasks - other.tasks, self.irq - other.irq, self.steal - other.steal)


def core_times() -> dict[int, CoreTimes]:
    """Every CPU's :class:`CoreTimes`."""
    out: dict[int, CoreTimes] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) / CLOCK_TICKS for v in values[:8])
                out[int(name[3:])] = CoreTimes(user + nice + system, irq + softirq, steal)
    return out


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


@dataclass
class Sample:
    """Counters at one instant: a process's CPU and every core's busy time."""

    at: float
    cpu: dict[str, float]
    cores: dict[int, CoreTimes]

    @classmethod
    def take(cls, pids: dict[str, int]) -> "Sample":
        cpu = {}
        for name, pid in pids.items():
            try:
                cpu[name] = cpu_seconds(pid)
            except OSError:
                cpu[name] = float("nan")
        return cls(time.perf_counter(), cpu, core_times())


def pinning() -> tuple[set[int], set[int]] | None:
    """(gateway cores, everything else's cores), or None when there are not two CPUs to split."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def child_setup(cores: set[int] | None) -> Callable[[], None]:
    """A preexec_fn: die with the runner (PR_SET_PDEATHSIG) and run on ``cores``."""

    def setup() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(argv: list[str], cores: set[int] | None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child that dies with the runner, pinned to ``cores``."""
    return subprocess.Popen(argv, preexec_fn=child_setup(cores), **kwargs)


def stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGINT, grace: float = 10.0) -> None:
    """Stop one child we started: ``sig``, then SIGKILL after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def trim_log(path: Path, keep: int = 1 << 20) -> None:
    """Keep the first and last MiB of a long gateway log."""
    try:
        size = path.stat().st_size
        if size <= 2 * keep:
            return
        with open(path, "rb") as f:
            head = f.read(keep)
            f.seek(size - keep)
            tail = f.read()
        path.write_bytes(head + f"\n... [{size - 2 * keep} bytes cut by bench/run.py] ...\n".encode() + tail)
    except OSError:
        pass


def git_state(root: Path) -> tuple[str, bool]:
    """The checkout's commit and whether tracked files differ from it (read-only git calls)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                    text=True, timeout=10).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "?", False
