"""`python -m benchmarks [SUITE...] [--quick]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.report import RESULTS_DIR
from benchmarks.suites import SUITES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="1 repetition, tiny sizes (CI smoke run)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and data of the run")
    args = parser.parse_args(argv)
    from benchmarks.runner import run

    try:
        out = run(args.suites, quick=args.quick, results_dir=args.results_dir, keep_workdir=args.keep_workdir)
    except ValueError as err:
        parser.error(str(err))
    except KeyboardInterrupt:
        print("interrupted; all started processes were stopped", file=sys.stderr)
        return 130
    return 1 if any("error" in p for p in out.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
