"""CPU seconds spent by the processes a run started, per process role, between two readings.

A process's reading includes its live descendants and the children it has reaped (PostgreSQL
forks a backend per connection and reaps it on disconnect; `children_*` keeps that CPU)."""

from __future__ import annotations

from collections.abc import Mapping

import psutil


def _tree_cpu(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


class CpuMeter:
    """`with CpuMeter({"worker": pid, ...}) as m: ...` then `m.per_task(n)`: CPU seconds per
    task of each role; roles whose pid is None are reported as None (not part of that side)."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self.spent: dict[str, float | None] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {k: _tree_cpu(p) for k, p in self.pids.items() if p is not None}
        return self

    def __exit__(self, *exc: object) -> None:
        self.spent = {
            k: (None if p is None else _tree_cpu(p) - self._start[k]) for k, p in self.pids.items()
        }

    def per_task(self, tasks: int) -> dict[str, float | None]:
        return {
            k: (None if v is None else round(v / max(1, tasks), 4)) for k, v in self.spent.items()
        }


def median_per_task(reps: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per-role median over repetitions."""
    out: dict[str, float | None] = {}
    for role in reps[0] if reps else {}:
        vals = sorted(v for r in reps if (v := r.get(role)) is not None)
        out[role] = vals[(len(vals) - 1) // 2] if vals else None
    return out
