"""`orchestrator bench [SUITE...] [--quick]`: the benchmark harness (see benchmarks/)."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmarks.report import RESULTS_DIR
from cli.common import fail


def bench(
    suites: list[str] = typer.Argument(None, help="overhead, throughput, api, memory, startup (default: all)"),
    quick: bool = typer.Option(False, "--quick", help="1 repetition, tiny sizes (CI smoke run)."),
    results_dir: Path = typer.Option(RESULTS_DIR, "--results-dir", help="Where <suite>.json go."),
    keep_workdir: bool = typer.Option(False, "--keep-workdir", help="Keep the run's logs and data."),
) -> None:
    """Benchmark this product against a raw Temporal SDK and a Celery + Redis baseline."""
    from benchmarks.runner import run

    try:
        out = run(suites or None, quick=quick, results_dir=results_dir, keep_workdir=keep_workdir)
    except ValueError as err:
        raise fail(str(err), code=2) from None
    except KeyboardInterrupt:
        raise fail("interrupted; all started processes were stopped", code=130) from None
    if any("error" in p for p in out.values()):
        raise typer.Exit(1)
