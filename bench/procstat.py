"""Linux /proc helpers for the benchmarks: CPU seconds of process trees, the owner of a
listening port, machine-wide busy and steal time. No dependencies.

Adapted from ../shared/peer-bench/procmon.py (the same /proc reads, trimmed to what
``bench.kafka_bench`` and ``bench.http_bench`` need).
"""

from __future__ import annotations

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2 :].split()


def ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(int(d))
            if f:
                out[int(d)] = int(f[1])
    return out


def tree(root: int | None, pm: dict[int, int] | None = None) -> list[int]:
    """``root`` and its live descendants."""
    if not root:
        return []
    pm = ppid_map() if pm is None else pm
    if root not in pm:
        return []
    kids: dict[int, list[int]] = {}
    for p, pp in pm.items():
        kids.setdefault(pp, []).append(p)
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return sorted(out)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, plus the CPU of its children it has waited for."""
    f = _stat_fields(pid)
    if not f:
        return None
    # fields 14..17: utime, stime, cutime, cstime (f[0] is field 3)
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK_TCK


def tree_cpu_seconds(root: int | None, pm: dict[int, int] | None = None) -> dict[int, float]:
    """CPU seconds of every live process of the tree under ``root``."""
    out = {}
    for p in tree(root, pm):
        v = cpu_seconds(p)
        if v is not None:
            out[p] = v
    return out


def _listen_inodes(port: int) -> set[str]:
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except (FileNotFoundError, StopIteration):
            pass
    return inodes


def pid_listening_on(port: int) -> int | None:
    """The (root) process holding a LISTEN socket on this TCP port, if we may see it."""
    targets = {f"socket:[{i}]" for i in _listen_inodes(port)}
    if not targets:
        return None
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        fd_dir = f"/proc/{d}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") in targets:
                        found.append(int(d))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    if not found:
        return None
    pm = ppid_map()
    s = set(found)
    roots = [p for p in found if pm.get(p) not in s]
    return min(roots or found)


def cmdline(pid: int | None) -> str:
    if not pid:
        return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds summed over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])
    steal = v[7] if len(v) > 7 else 0
    return (total - idle) / CLK_TCK, steal / CLK_TCK, total / CLK_TCK


def calibrate() -> float:
    """Machine speed probe: ms of CPU for a fixed pure-Python loop (best of 3; lower = faster).
    A VM's vCPU can slow down under host contention without reporting steal; this shows it."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        x = 0
        for i in range(300_000):
            x += i * i % 7
        best = min(best, time.process_time() - t0)
    return round(best * 1000.0, 2)


class CpuWindow:
    """CPU seconds of named process trees (and the machine) between ``start()`` and ``stop()``."""

    def __init__(self, roots: dict[str, int | None]):
        self.roots = roots

    def _sample(self) -> dict[str, dict[int, float]]:
        pm = ppid_map()
        return {name: tree_cpu_seconds(pid, pm) for name, pid in self.roots.items()}

    def start(self) -> CpuWindow:
        self.t0 = time.monotonic()
        self.m0 = machine_cpu()
        self.s0 = self._sample()
        return self

    def stop(self) -> dict:
        s1 = self._sample()
        m1 = machine_cpu()
        wall = time.monotonic() - self.t0
        per = {}
        for name, pids in s1.items():
            before = self.s0.get(name, {})
            # processes alive at both ends: the difference; new ones: all their time
            per[name] = round(sum(v - before.get(p, 0.0) for p, v in pids.items()), 4) if pids else None
        total = m1[2] - self.m0[2]
        return {
            "wall_s": round(wall, 3),
            "cpu_s": per,
            "machine_busy_pct": round(100.0 * (m1[0] - self.m0[0]) / total, 1) if total > 0 else None,
            "machine_steal_pct": round(100.0 * (m1[1] - self.m0[1]) / total, 1) if total > 0 else None,
        }
