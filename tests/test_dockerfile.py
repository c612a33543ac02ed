"""The Dockerfile's COPY lines hold everything the image runs: they are replayed into an empty
directory, installed from there the way the image does (`pip install .`, without
dependencies: those come from the test's own environment), and the entry points the image and
docker-compose.yml start are imported from that install, in a directory without the sources."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(rel, pattern) or any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def _replay_copies(dest_root: Path) -> list[str]:
    """Copy what the build context would give each COPY into dest_root (= WORKDIR)."""
    ignore = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    copied = []
    for word, args in _instructions():
        if word != "COPY":
            continue
        parts = [a for a in shlex.split(args) if not a.startswith("--")]
        *sources, dest = parts
        target = dest_root / dest
        for source in sources:
            for match in sorted(glob.glob(str(REPO / source))):
                path = Path(match)
                rel = path.relative_to(REPO).as_posix()
                if _ignored(rel, ignore):
                    continue
                copied.append(rel)
                if path.is_dir():
                    to = (
                        target
                        if len(sources) == 1 and not dest.endswith("/")
                        else target / path.name
                    )
                    shutil.copytree(
                        path,
                        to,
                        dirs_exist_ok=True,
                        ignore=lambda d, names: [
                            n
                            for n in names
                            if _ignored((Path(d) / n).relative_to(REPO).as_posix(), ignore)
                        ],
                    )
                else:
                    (target if not dest.endswith("/") else target / path.name).parent.mkdir(
                        parents=True, exist_ok=True
                    )
                    shutil.copy2(path, target / path.name if dest.endswith("/") else target)
    return copied


def _image_check_command() -> str:
    """The import check the Dockerfile runs after `pip install .`."""
    for word, args in _instructions():
        if word == "RUN" and "pip install ." in args:
            m = re.search(r'python -c "([^"]+)"', args)
            assert m, "the Dockerfile's install step no longer checks its imports"
            return m.group(1)
    raise AssertionError("no `pip install .` in the Dockerfile")


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image")
    app = root / "app"
    app.mkdir()
    copied = _replay_copies(app)
    assert "worker.py" in copied and "pyproject.toml" in copied
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies come from this environment's site-packages as plain path entries: its
    # .pth files (the editable install of the repo among them) are not run, so the product
    # can only come from what is installed below.
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",  # the build itself gets setuptools from the index, as in the image
            str(app),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_image_install_runs_the_api_worker_and_cli(image_venv: Path, tmp_path: Path) -> None:
    py = str(image_venv / "bin" / "python")
    elsewhere = tmp_path / "elsewhere"  # no sources here: only the install can answer
    elsewhere.mkdir()
    check = _image_check_command()
    result = _run(image_venv, py, "-c", check, cwd=elsewhere)
    assert result.returncode == 0, result.stderr

    probe = (
        "import api.main, worker, activities, workflows, planner, memory, durable_orchestrator\n"
        "from durable_orchestrator.data.engine import MIGRATIONS_DIR\n"
        "from durable_orchestrator.tools import registry\n"
        "import sys, pathlib\n"
        "for m in (api.main, worker, durable_orchestrator, registry):\n"
        "    assert pathlib.Path(m.__file__).is_relative_to(sys.prefix), m.__file__\n"
        "assert list((MIGRATIONS_DIR / 'versions').glob('0001_*.py')), MIGRATIONS_DIR\n"
        "assert api.main.app.title\n"
    )
    result = _run(image_venv, py, "-c", probe, cwd=elsewhere)
    assert result.returncode == 0, result.stderr

    cli = _run(image_venv, str(image_venv / "bin" / "orchestrator"), "--help", cwd=elsewhere)
    assert cli.returncode == 0 and "migrate" in cli.stdout, cli.stderr
    ref = _run(
        image_venv, str(image_venv / "bin" / "orchestrator"), "config", "--reference", cwd=elsewhere
    )
    assert ref.returncode == 0 and "DATABASE_URL" in ref.stdout, ref.stderr


def test_the_image_compiles_the_sources_its_processes_run_from() -> None:
    """PYTHONDONTWRITEBYTECODE stops the processes writing bytecode into /app, the workflow
    sandbox re-imports the workflow modules on every run, and the worker runs as a user who
    cannot write /app: so the build compiles /app (the WORKDIR the processes import from)."""
    instructions = _instructions()
    assert ("WORKDIR", "/app") in instructions
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    install = next(args for word, args in instructions if word == "RUN" and "pip install ." in args)
    assert "python -m compileall -q /app" in install


def test_the_image_ships_the_embedding_models_export_in_the_app_users_cache(
    image_venv: Path, tmp_path: Path
) -> None:
    """Containers would otherwise each import torch and export the model at start: the build
    does it once, as the user the processes run as, into that user's cache."""
    instructions = _instructions()
    user_at = instructions.index(("USER", "app"))
    export = next(
        (i, args) for i, (word, args) in enumerate(instructions) if word == "RUN" and "Embedder" in args
    )
    assert export[0] > user_at, "the export must land in the app user's home, not root's"
    command = re.search(r'python -c "([^"]+)"', export[1])
    assert command
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", command.group(1)],
        cwd=tmp_path, env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cache = home / ".cache" / "durable-orchestrator" / "embeddings"
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".onnx"]
