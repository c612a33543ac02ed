"""Bytecode for the modules the workflow sandbox imports afresh.

Temporal's sandbox imports a workflow's module (and what it imports that is not passed through)
again for every workflow run, so one run cannot leak module state into another. Without a .pyc
each of those imports compiles the source first: measured here, importing the three modules of
`workflows` behind TaskWorkflow took 6.0-7.0 ms of CPU without bytecode and 1.2-1.3 ms with it,
on every workflow run. Python writes the .pyc on first import, except where
PYTHONDONTWRITEBYTECODE is set (our Dockerfile sets it, as many images do; the image compiles
its sources at build instead), so the worker writes it itself once, at start."""

from __future__ import annotations

import compileall
from types import ModuleType

import structlog

log = structlog.get_logger(__name__)


def ensure_bytecode(*packages: ModuleType) -> bool:
    """Write the missing or stale .pyc files of `packages` (importing still reads them when
    PYTHONDONTWRITEBYTECODE stops it writing them). False, with a warning, where they cannot
    be written (a read-only tree): the sandbox then compiles on every run, slower but correct."""
    written = True
    for package in packages:
        for path in package.__path__:
            # quiet=2: a file that cannot be written is reported here, not printed.
            if not compileall.compile_dir(path, quiet=2):
                log.warning("workflow_bytecode_not_written", path=path)
                written = False
    return written
