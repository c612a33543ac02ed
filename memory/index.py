"""The FAISS cache: one small index per user, chosen by that user's size.

Why per-user indexes: isolation holds by construction (a query only ever touches the asking
user's vectors, so nothing is post-filtered and a result list never comes back short because
another user's vectors crowded the top-k), and the cost of a search follows the user's own
memory count, not everyone's.

Every user index is an `IndexIDMap` (ids are the `memories.id` primary keys):
- up to `flat_max` vectors: `IndexFlatIP` (exact; removal with `remove_ids`);
- above it: `IndexHNSWFlat` (inner product). HNSW cannot remove in place, so deletions become
  tombstones excluded through an `IDSelectorNot` at search time; once they pass 10% of the
  index, the user's index is rebuilt from its live vectors.

Vectors are L2-normalised float32, so inner product is cosine similarity. Thread-safe (one
lock); callers run it in a thread so the event loop never waits on FAISS.
"""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

TOMBSTONE_REBUILD_FRACTION = 0.10
SNAPSHOT_VERSION = 1


@dataclass
class IndexParams:
    flat_max: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128


@dataclass
class UserIndex:
    index: faiss.IndexIDMap
    kind: str  # "flat" | "hnsw"
    tombstones: set[int] = field(default_factory=set)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def vectors(self) -> np.ndarray:
        return self.index.index.reconstruct_n(0, self.ntotal)


def _flat(dim: int) -> faiss.IndexIDMap:
    return faiss.IndexIDMap(faiss.IndexFlatIP(dim))


def _hnsw(dim: int, p: IndexParams) -> faiss.IndexIDMap:
    inner = faiss.IndexHNSWFlat(dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = p.ef_construction
    inner.hnsw.efSearch = p.ef_search
    return faiss.IndexIDMap(inner)


class MemoryIndex:
    def __init__(self, params: IndexParams | None = None, dim: int | None = None) -> None:
        self.params = params or IndexParams()
        self.dim = dim
        self.users: dict[str, UserIndex] = {}
        self._lock = threading.RLock()

    # --- writes -------------------------------------------------------------------------------

    def add(self, user_id: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            if self.dim is None:
                self.dim = int(vectors.shape[1])
            if vectors.shape[1] != self.dim:
                raise ValueError(f"vector dim {vectors.shape[1]} != index dim {self.dim}")
            ui = self.users.get(user_id)
            if ui is None:
                ui = self.users[user_id] = UserIndex(_flat(self.dim), "flat")
            if ui.kind == "flat" and ui.ntotal + len(ids) > self.params.flat_max:
                self._to_hnsw(user_id, ui, ids, vectors)
                return
            ui.index.add_with_ids(vectors, ids)

    def _to_hnsw(self, user_id: str, ui: UserIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
        all_ids = np.concatenate([ui.ids(), ids]) if ui.ntotal else ids
        all_vecs = np.concatenate([ui.vectors(), vectors]) if ui.ntotal else vectors
        if ui.tombstones:
            keep = ~np.isin(all_ids, np.fromiter(ui.tombstones, np.int64))
            all_ids, all_vecs = all_ids[keep], all_vecs[keep]
        idx = _hnsw(self.dim or all_vecs.shape[1], self.params)
        idx.add_with_ids(np.ascontiguousarray(all_vecs), np.ascontiguousarray(all_ids))
        self.users[user_id] = UserIndex(idx, "hnsw")

    def remove(self, user_id: str, ids: list[int] | np.ndarray) -> None:
        if len(ids) == 0:
            return
        with self._lock:
            ui = self.users.get(user_id)
            if ui is None:
                return
            if ui.kind == "flat":
                ui.index.remove_ids(np.asarray(ids, dtype=np.int64))
                return
            ui.tombstones.update(int(i) for i in ids)
            if len(ui.tombstones) > TOMBSTONE_REBUILD_FRACTION * max(1, ui.ntotal):
                self._compact(user_id, ui)

    def _compact(self, user_id: str, ui: UserIndex) -> None:
        all_ids, vecs = ui.ids(), ui.vectors()
        keep = ~np.isin(all_ids, np.fromiter(ui.tombstones, np.int64))
        del self.users[user_id]
        self.add(user_id, all_ids[keep], vecs[keep])

    def clear(self) -> None:
        with self._lock:
            self.users.clear()

    # --- reads --------------------------------------------------------------------------------

    def kind(self, user_id: str) -> str | None:
        ui = self.users.get(user_id)
        return ui.kind if ui else None

    def count(self, user_id: str | None = None) -> int:
        with self._lock:
            if user_id is not None:
                ui = self.users.get(user_id)
                return ui.live if ui else 0
            return sum(u.live for u in self.users.values())

    def search(
        self,
        user_id: str,
        query: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k (id, score) among `user_id`'s vectors (and among `allowed` ids when given).

        With `allowed`, a flat index is searched exactly through an `IDSelectorBatch`; an HNSW
        index is searched exactly over the allowed vectors when they are at most
        `exact_max` (a restrictive selector makes graph search miss matches and come back
        short), else through the graph with the selector."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with self._lock:
            ui = self.users.get(user_id)
            if ui is None or ui.live == 0 or k <= 0:
                return []
            if allowed is not None and ui.kind == "hnsw" and len(allowed) <= self.exact_max:
                return self._exact_among(ui, q, k, allowed)
            keep: list[Any] = []  # SWIG selectors hold raw pointers: keep the Python objects alive
            if allowed is not None:
                keep.append(faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64)))
            if ui.tombstones:
                dead = faiss.IDSelectorBatch(np.fromiter(ui.tombstones, np.int64))
                keep += [dead, faiss.IDSelectorNot(dead)]
            sel = None
            if allowed is not None and ui.tombstones:
                sel = faiss.IDSelectorAnd(keep[0], keep[2])
                keep.append(sel)
            elif keep:
                sel = keep[-1]
            k_eff = min(k, ui.ntotal)
            if ui.kind == "hnsw":
                params = faiss.SearchParametersHNSW()
                params.efSearch = max(ef_search or self.params.ef_search, k_eff)
            else:
                params = faiss.SearchParameters()
            if sel is not None:
                params.sel = sel
            scores, ids = ui.index.search(q, k_eff, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    exact_max = 200_000

    def _exact_among(
        self, ui: UserIndex, q: np.ndarray, k: int, allowed: np.ndarray
    ) -> list[tuple[int, float]]:
        all_ids = ui.ids()
        order = np.argsort(all_ids, kind="stable")
        sorted_ids = all_ids[order]
        wanted = np.asarray(allowed, dtype=np.int64)
        if ui.tombstones:
            wanted = wanted[~np.isin(wanted, np.fromiter(ui.tombstones, np.int64))]
        pos = np.searchsorted(sorted_ids, wanted)
        pos = np.clip(pos, 0, max(0, len(sorted_ids) - 1))
        hit = sorted_ids[pos] == wanted
        wanted, positions = wanted[hit], order[pos[hit]]
        if len(wanted) == 0:
            return []
        vecs = ui.index.index.reconstruct_batch(np.ascontiguousarray(positions, dtype=np.int64))
        scores = vecs @ q[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(wanted[i]), float(scores[i])) for i in top]

    # --- snapshot -----------------------------------------------------------------------------

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write every user index plus `state` (the sync watermark) atomically to `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            users = list(self.users.items())
            manifest = {
                "version": SNAPSHOT_VERSION,
                "dim": self.dim,
                "state": state,
                "users": [
                    {"user_id": u, "kind": ui.kind, "tombstones": sorted(ui.tombstones)}
                    for u, ui in users
                ],
            }
            arrays = {f"u{i}": faiss.serialize_index(ui.index) for i, (_, ui) in enumerate(users)}
        arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: Path) -> dict[str, Any]:
        """Replace the contents with the snapshot at `path`; returns its `state`."""
        with open(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()))
        manifest = json.loads(bytes(data["manifest"]).decode())
        if manifest.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {manifest.get('version')} not supported")
        users: dict[str, UserIndex] = {}
        for i, u in enumerate(manifest["users"]):
            idx = faiss.deserialize_index(data[f"u{i}"])
            if u["kind"] == "hnsw":
                faiss.downcast_index(idx.index).hnsw.efSearch = self.params.ef_search
            users[u["user_id"]] = UserIndex(idx, u["kind"], set(u["tombstones"]))
        with self._lock:
            self.users = users
            self.dim = manifest["dim"]
        return manifest["state"]
