"""`python -m benchmarks [SUITE...] [--quick]`: start what the suites
need, run them, print one table, write benchmarks/results/<suite>.json."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.env import BenchEnv
from benchmarks.report import RESULTS_DIR, machine_info, write_result
from benchmarks.suites import NEEDS_ENV, SUITES

console = Console(width=None if Console().is_terminal else 140)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: children are stopped by pid


def run(suites: list[str] | None = None, *, quick: bool = False,
        results_dir: Path = RESULTS_DIR, keep_workdir: bool = False) -> dict[str, Any]:
    """Run the suites (all by default); returns {suite: payload}. Raises ValueError on an
    unknown suite name. A suite that fails is reported (table + JSON "error") and the run goes on."""
    names = suites or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(SUITES)}")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    env: BenchEnv | None = None
    out: dict[str, Any] = {}
    table = Table(title=f"orchestrator bench{' --quick' if quick else ''} · {machine['cores']} cores · "
                        f"{machine['cpu_model']}")
    for col in ("suite", "measurement", "this product", "baseline / goal", "ratio"):
        table.add_column(col)
    started = time.monotonic()
    try:
        for name in names:
            if name in NEEDS_ENV and env is None:
                console.print("[dim]starting embedded PostgreSQL and Temporal dev server…[/dim]")
                env = BenchEnv(workdir, quick)
                env.start()
            console.print(f"[bold]running {name}[/bold]{' (quick)' if quick else ''}…")
            t0 = time.monotonic()
            try:
                payload, rows = SUITES[name](env, quick)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                console.print(f"[red]{name} failed:[/red] {err}")
                payload = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
                rows = [("error", f"{type(err).__name__}", str(err)[:120], "")]
            # The machine may be shared: the load average says how much CPU the run really had.
            payload = {"quick": quick, "machine": machine, "secs": round(time.monotonic() - t0, 1),
                       "load_avg_at_end": [round(x, 2) for x in os.getloadavg()], **payload}
            write_result(name, payload, results_dir)
            out[name] = payload
            for i, row in enumerate(rows):
                table.add_row(name if i == 0 else "", *row)
            table.add_section()
    finally:
        if env is not None:
            env.close()
        if keep_workdir:
            console.print(f"[dim]kept {workdir}[/dim]")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    console.print(table)
    console.print(f"results: {results_dir}  ·  {time.monotonic() - started:.0f}s in all")
    return out
