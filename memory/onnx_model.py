"""The embedding model run by ONNX Runtime: exported once from the sentence-transformers model,
then loaded without torch.

Why: on this machine's CPU, ONNX Runtime embeds a short query for about 40% of torch's CPU and a
128-word-piece text for about 75% (docs/memory.md, "Backend"), with the same vectors. And a
process that finds the export starts embedding in well under a second without importing torch,
transformers or sentence-transformers (~400 MB, ~10 s of CPU), so the API stays small.

The export is the model's whole sentence-transformers pipeline (transformer, pooling,
normalisation) as one graph, so the runtime side only tokenizes (with the model's own
`tokenizer.json`) and runs it. It is kept in a cache directory under a name made from the
model's files, written under a temporary name and renamed: a reader never sees half a file, and
two processes exporting at once both end with a whole one. The export runs in a child process
(`python -m memory.onnx_model`): a process that imports torch keeps it resident until it exits,
and the worker or API that asked needs only the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

log = structlog.get_logger(__name__)

# Part of the export's name: a change to what `_export` writes must not read an older file.
EXPORT_FORMAT = 1
_EXPORTING = threading.Lock()
# How the exporting child says what stopped it, so that the parent raises the same.
_EXIT_UNSUPPORTED, _EXIT_UNWRITABLE = 3, 4
# The model inputs we know how to fill from a tokenizers Encoding.
_ENCODING_FIELD = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class UnsupportedModel(Exception):
    """The model cannot run here (no tokenizer.json, or inputs we cannot fill): use torch."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "durable-orchestrator" / "embeddings"


def export_name(model_path: str) -> str:
    """`<model dir>-<digest>`: the digest covers every file's name, size and modification time,
    so a model changed in place gets a new export."""
    root = Path(model_path)
    digest = hashlib.sha256(f"format {EXPORT_FORMAT}".encode())
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return f"{root.name}-{digest.hexdigest()[:16]}"


class OnnxModel:
    """One exported model in one ONNX Runtime session (thread-safe; run releases the GIL)."""

    def __init__(self, graph: Path, meta: dict, model_path: str, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warnings are about graph fusions, not our data
        if threads > 0:
            # Same reason as torch's one thread (memory/embedder.py): spinning OpenMP-style
            # threads only fight the other processes on a busy 2-core machine.
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.inputs: list[str] = meta["inputs"]
        self.own_limit: int = meta["max_seq_length"]
        self.dim: int = self.session.get_outputs()[0].shape[1]  # (batch, dim): only the batch varies
        self.tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        padding = meta["padding"]
        # To the batch's longest text (no length given), whatever fixed length the file pads to.
        self.tokenizer.enable_padding(pad_id=padding["id"], pad_token=padding["token"], pad_type_id=padding["type_id"])

    def encode(self, texts: Sequence[str], max_tokens: int, batch_size: int) -> np.ndarray:
        self.tokenizer.enable_truncation(max_tokens)
        # Shortest first, like sentence-transformers: a batch pads to its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in chunk])
            feed = {
                name: np.array([getattr(e, _ENCODING_FIELD[name]) for e in encodings], dtype=np.int64)
                for name in self.inputs
            }
            out[chunk] = self.session.run(None, feed)[0]
        return out


def ensure_export(model_path: str, cache_dir: Path) -> Path:
    """The export's path, made first if it is missing (for processes that load it later)."""
    graph = _graph(model_path, cache_dir)
    with _EXPORTING:  # a second asker in this process waits for the first one's file
        if not (graph.exists() and graph.with_suffix(".json").exists()):
            _export_in_child(model_path, graph)
    return graph


def load(model_path: str, cache_dir: Path, threads: int) -> OnnxModel:
    """The model's export from the cache, exported first if it is missing or unreadable."""
    graph = _graph(model_path, cache_dir)
    meta_file = graph.with_suffix(".json")
    if graph.exists() and meta_file.exists():
        try:
            return OnnxModel(graph, json.loads(meta_file.read_text()), model_path, threads)
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("embedding_export_unreadable", path=str(graph), error=str(exc))
    with _EXPORTING:
        _export_in_child(model_path, graph)
    return OnnxModel(graph, json.loads(meta_file.read_text()), model_path, threads)


def _graph(model_path: str, cache_dir: Path) -> Path:
    return cache_dir / f"{export_name(model_path)}.onnx"


def _export_in_child(model_path: str, graph: Path) -> None:
    """`_export` in a child process (~400 MB of torch and transformers, resident in the parent
    until it exited otherwise); what stopped it is raised here as the child met it. A cache
    that cannot be written (e.g. a read-only home) is UnsupportedModel: torch still works."""
    _check_exportable(model_path)
    unwritable = f"cannot write the export to {graph.parent}"
    try:
        graph.parent.mkdir(parents=True, exist_ok=True)  # fails here, not after torch loads
    except OSError as exc:
        raise UnsupportedModel(f"{unwritable}: {exc}") from exc
    child = subprocess.run(
        [sys.executable, "-m", "memory.onnx_model", model_path, str(graph)], capture_output=True, text=True,
        check=False,
    )
    reason = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
    if child.returncode == _EXIT_UNSUPPORTED:
        raise UnsupportedModel(reason)
    if child.returncode == _EXIT_UNWRITABLE:
        raise UnsupportedModel(f"{unwritable}: {reason}")
    if child.returncode != 0:
        raise RuntimeError(f"exporting {model_path} to ONNX failed: {reason}")
    log.info("embedding_model_exported", path=str(graph))


def _check_exportable(model_path: str) -> None:
    if not (Path(model_path) / "tokenizer.json").exists():
        raise UnsupportedModel(f"{model_path} has no tokenizer.json")


def _export(model_path: str, graph: Path) -> None:
    _check_exportable(model_path)
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in service logs
    model = SentenceTransformer(model_path, device="cpu").eval()
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    # Besides tensors, sentence-transformers 6 passes along which modality the text is (a str).
    sample = {k: v for k, v in tokenize(["an example sentence"]).items() if isinstance(v, torch.Tensor)}
    inputs = [name for name in _ENCODING_FIELD if name in sample]
    if set(sample) - set(inputs):
        raise UnsupportedModel(f"{model_path} takes inputs {sorted(set(sample) - set(inputs))}")

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(inputs, tensors, strict=True)))["sentence_embedding"]

    graph.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=graph.parent, prefix=graph.stem, suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared cache to its first user
    try:
        axes = {name: {0: "batch", 1: "tokens"} for name in inputs}
        # The tracer's warnings are about branches on shapes that hold for every input here
        # (the mask is as long as the tokens); the round trip is checked in tests instead.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pipeline(), tuple(sample[name] for name in inputs), tmp, input_names=inputs,
                output_names=["sentence_embedding"], dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                opset_version=17, dynamo=False,
            )
        tokenizer = model.tokenizer
        meta = {
            "inputs": inputs,
            "max_seq_length": int(model.max_seq_length),
            "padding": {"id": int(tokenizer.pad_token_id or 0), "token": str(tokenizer.pad_token or "[PAD]"),
                        "type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0)},
        }
        meta_file = graph.with_suffix(".json")
        # The graph's name is what readers look for, so it goes last.
        meta_tmp = Path(tmp).with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_file)
        os.replace(tmp, graph)
    finally:
        Path(tmp).unlink(missing_ok=True)


def main(argv: Sequence[str]) -> int:
    """`python -m memory.onnx_model MODEL_DIR GRAPH`: export MODEL_DIR's pipeline to GRAPH."""
    model_path, graph = argv
    try:
        _export(model_path, Path(graph))
    except UnsupportedModel as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_UNSUPPORTED
    except OSError as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_UNWRITABLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
