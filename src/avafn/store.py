"""The feature store: one vector per utterance and modality, written atomically and resumably.

Layout (a folder)::

    STORE/
      store.json                       {"format": "avafn-feature-store", "version": 1}
      <modality>/                      audio | video | text | any other name
        meta.json                      the extractor: name, model_id, layer, width, config,
                                       config_hash (sha256 of the canonical JSON of config)
        part-<tag>-<seq>.npz           shards, each written to a temp file then renamed:
                                         uid      (N,) str     "{split}/{dialogue_id}/{turn}"
                                         vector   (N, width)   float32 (zeros where missing)
                                         present  (N,) bool    False = modality missing
                                         count    (N,) int64   frames with a face / audio
                                                               samples / tokens (extractor's)
                                         reason   (N,) str     why missing ("" if present)

A shard is either fully there or absent (temp file + ``os.replace``), so a job killed at any
moment loses at most the entries it had not yet flushed; starting it again skips every uid
already stored (:meth:`FeatureStore.done_uids`). Several processes (ranks) may write the same
modality at once, each with its own ``tag``; :meth:`FeatureStore.compact` merges the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "avafn-feature-store"
VERSION = 1


class StoreError(ValueError):
    """A store that is incomplete, inconsistent or does not match what was asked of it."""


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


@dataclass
class ModalityTable:
    """Everything stored for one modality, in memory."""

    meta: dict
    uids: np.ndarray  # (N,) str
    vectors: np.ndarray  # (N, width) float32
    present: np.ndarray  # (N,) bool
    count: np.ndarray  # (N,) int64
    reason: np.ndarray  # (N,) str
    row: dict[str, int]  # uid -> row
    #: sha256 of the content, set by :meth:`FeatureStore.fingerprint` (a table is replaced,
    #: never changed, when the modality is written, so it stays valid)
    content_sha256: str | None = None

    @property
    def width(self) -> int:
        return int(self.meta["width"])


class StoreWriter:
    """Buffers entries and flushes them as atomic shards of ``shard_size`` entries.

    Use as a context manager; entries added after the last flush are written on exit (also
    on an exception, so that work done before a crash is kept).
    """

    def __init__(self, store: FeatureStore, modality: str, tag: str, shard_size: int):
        self.store, self.modality, self.tag, self.shard_size = store, modality, tag, shard_size
        self.width = int(store.meta(modality)["width"])
        self._buf: list[tuple[str, np.ndarray | None, int, str]] = []
        self._seen = set(store.done_uids(modality))
        d = store.root / modality
        seqs = [int(p.stem.rsplit("-", 1)[1]) for p in d.glob(f"part-{tag}-*.npz")]
        self._seq = max(seqs, default=-1) + 1
        self.n_written = 0

    def add(self, uid: str, vector: np.ndarray | None, count: int = 0, reason: str = "") -> None:
        """Store ``vector`` for ``uid``; ``vector=None`` records the modality as missing."""
        if uid in self._seen:
            raise StoreError(f"{self.store.root}/{self.modality}: utterance {uid} is already stored")
        if vector is not None:
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
            if vector.shape[0] != self.width:
                raise StoreError(
                    f"{self.store.root}/{self.modality}: utterance {uid} has a vector of width "
                    f"{vector.shape[0]}, expected {self.width}"
                )
            if not np.isfinite(vector).all():
                raise StoreError(f"{self.store.root}/{self.modality}: utterance {uid} has NaN/inf")
        elif not reason:
            reason = "missing"
        self._seen.add(uid)
        self._buf.append((uid, vector, int(count), reason))
        if len(self._buf) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        n = len(self._buf)
        vec = np.zeros((n, self.width), dtype=np.float32)
        for i, (_, v, _, _) in enumerate(self._buf):
            if v is not None:
                vec[i] = v
        arrays = {
            "uid": np.array([b[0] for b in self._buf], dtype=str),
            "vector": vec,
            "present": np.array([b[1] is not None for b in self._buf], dtype=bool),
            "count": np.array([b[2] for b in self._buf], dtype=np.int64),
            "reason": np.array([b[3] for b in self._buf], dtype=str),
        }
        path = self.store.root / self.modality / f"part-{self.tag}-{self._seq:06d}.npz"
        self.store._write_npz(path, arrays)
        self._seq += 1
        self.n_written += n
        self._buf.clear()
        self.store._cache.pop(self.modality, None)

    def __enter__(self) -> StoreWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


class FeatureStore:
    """A folder of per-utterance feature vectors (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._cache: dict[str, ModalityTable] = {}

    # ----------------------------------------------------------------- writing
    def _write_npz(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    def create_modality(self, modality: str, meta: dict, overwrite: bool = False) -> dict:
        """Declare ``modality`` with its extractor metadata; ``meta`` needs ``width`` and
        ``extractor``, ``config`` is hashed. Reopening with the same config is allowed (that is
        how jobs resume); a different config raises unless ``overwrite`` (which deletes)."""
        if "width" not in meta or "extractor" not in meta:
            raise StoreError(f"meta for {modality!r} needs 'width' and 'extractor': {meta}")
        meta = dict(meta)
        meta["modality"] = modality
        meta["width"] = int(meta["width"])
        meta.setdefault("config", {})
        meta["config_hash"] = config_hash(meta["config"])
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "store.json").exists():
            atomic_write_json(self.root / "store.json", {"format": FORMAT, "version": VERSION})
        mdir = self.root / modality
        old = self._read_meta(modality) if (mdir / "meta.json").exists() else None
        if old is not None:
            same = (old["config_hash"], old["width"], old["extractor"]) == (
                meta["config_hash"], meta["width"], meta["extractor"])
            if same:
                return old
            if not overwrite:
                raise StoreError(
                    f"{mdir}: already holds {modality} features from {old['extractor']} "
                    f"(width {old['width']}, config {old['config_hash']}); asked for "
                    f"{meta['extractor']} (width {meta['width']}, config {meta['config_hash']}). "
                    "Use another store folder or overwrite."
                )
            for p in mdir.glob("part-*.npz"):
                p.unlink()
        mdir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(mdir / "meta.json", meta)
        self._cache.pop(modality, None)
        return meta

    def writer(self, modality: str, tag: str = "r000", shard_size: int = 256) -> StoreWriter:
        """A writer for an already created modality; ``tag`` names this process's shards."""
        if not tag.replace("_", "").isalnum():
            raise StoreError(f"writer tag must be alphanumeric, got {tag!r}")
        self.meta(modality)
        return StoreWriter(self, modality, tag, shard_size)

    def clean_temp(self) -> int:
        """Remove temp files left by killed writers; returns how many."""
        n = 0
        for p in self.root.glob("*/.tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    def compact(self, modality: str) -> int:
        """Merge all shards of ``modality`` into one (after a multi-process job)."""
        parts = sorted((self.root / modality).glob("part-*.npz"))
        if len(parts) <= 1:
            return len(parts)
        t = self.table(modality)
        self._write_npz(self.root / modality / "part-merged-000000.npz", {
            "uid": t.uids, "vector": t.vectors, "present": t.present, "count": t.count,
            "reason": t.reason})
        for p in parts:
            if p.name != "part-merged-000000.npz":
                p.unlink()
        self._cache.pop(modality, None)
        return 1

    # ----------------------------------------------------------------- reading
    def _read_meta(self, modality: str) -> dict:
        path = self.root / modality / "meta.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(
                f"{self.root}: no {modality!r} features (no {path}); stored: {self.modalities()}"
            ) from None

    def modalities(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/meta.json"))

    def meta(self, modality: str) -> dict:
        return self._read_meta(modality)

    def table(self, modality: str) -> ModalityTable:
        """All entries of ``modality`` (cached until the next write through this object)."""
        if modality in self._cache:
            return self._cache[modality]
        meta = self._read_meta(modality)
        width = int(meta["width"])
        uids, vecs, pres, cnt, rsn = [], [], [], [], []
        for p in sorted((self.root / modality).glob("part-*.npz")):
            try:
                with np.load(p, allow_pickle=False) as z:
                    u, v = z["uid"], z["vector"]
                    if v.ndim != 2 or v.shape[1] != width or len(u) != len(v):
                        raise StoreError(
                            f"{p}: vectors of shape {v.shape}, expected (N, {width}) as meta.json says"
                        )
                    uids.append(u), vecs.append(v), pres.append(z["present"])
                    cnt.append(z["count"]), rsn.append(z["reason"])
            except (OSError, ValueError, KeyError) as e:
                if isinstance(e, StoreError):
                    raise
                raise StoreError(f"{p}: unreadable shard ({e})") from e
        if uids:
            t = ModalityTable(meta, np.concatenate(uids), np.concatenate(vecs).astype(np.float32),
                              np.concatenate(pres).astype(bool), np.concatenate(cnt),
                              np.concatenate(rsn), {})
        else:
            t = ModalityTable(meta, np.zeros(0, dtype=str), np.zeros((0, width), np.float32),
                              np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, dtype=str), {})
        keep = np.ones(len(t.uids), dtype=bool)
        for i, u in enumerate(t.uids.tolist()):
            j = t.row.get(u)
            if j is None:
                t.row[u] = i
                continue
            # a duplicate is only legal as an identical copy (a compaction cut short)
            if t.present[i] != t.present[j] or not np.array_equal(t.vectors[i], t.vectors[j]):
                raise StoreError(f"{self.root}/{modality}: utterance {u} is stored twice, differently")
            keep[i] = False
        if not keep.all():
            t = ModalityTable(meta, t.uids[keep], t.vectors[keep], t.present[keep], t.count[keep],
                              t.reason[keep], {u: i for i, u in enumerate(t.uids[keep].tolist())})
        self._cache[modality] = t
        return t

    def done_uids(self, modality: str) -> set[str]:
        return set(self.table(modality).row)

    def load(self, modality: str, uids: Iterable[str], width: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors ``(N, width)`` and present flags ``(N,)`` for ``uids``, in that order.

        Raises :class:`StoreError` naming the first utterance with no entry (present or
        explicitly missing), or when the stored width differs from ``width``.
        """
        t = self.table(modality)
        if width is not None and t.width != width:
            raise StoreError(
                f"{self.root}/{modality}: features are {t.width}-d, expected {width}-d "
                f"(extractor {t.meta.get('extractor')}, model {t.meta.get('model_id')})"
            )
        uids = list(uids)
        rows = np.empty(len(uids), dtype=np.int64)
        for i, u in enumerate(uids):
            r = t.row.get(u)
            if r is None:
                raise StoreError(
                    f"{self.root}/{modality}: no entry for utterance {u} "
                    f"({len(uids) - i} utterances from there on unchecked; {len(t.row)} stored). "
                    "Run the extraction for this split, or record it as missing."
                )
            rows[i] = r
        return t.vectors[rows], t.present[rows]

    def missing(self, modality: str) -> list[tuple[str, str]]:
        """(uid, reason) of every entry stored as missing."""
        t = self.table(modality)
        return [(u, r) for u, r, p in zip(t.uids.tolist(), t.reason.tolist(), t.present) if not p]

    def fingerprint(self, modalities: Iterable[str] | None = None) -> dict:
        """What a run records about the features it was trained on."""
        out = {"root": str(self.root.resolve()), "modalities": {}}
        for m in modalities if modalities is not None else self.modalities():
            t = self.table(m)
            if t.content_sha256 is None:  # hashed once per loaded table, not once per run
                order = np.argsort(t.uids)
                h = hashlib.sha256()
                h.update("\n".join(t.uids[order].tolist()).encode())
                h.update(np.ascontiguousarray(t.vectors[order]).tobytes())
                h.update(t.present[order].tobytes())
                t.content_sha256 = h.hexdigest()[:16]
            out["modalities"][m] = {
                "extractor": t.meta.get("extractor"), "model_id": t.meta.get("model_id"),
                "layer": t.meta.get("layer"), "width": t.width,
                "config_hash": t.meta.get("config_hash"), "n_entries": len(t.uids),
                "n_present": int(t.present.sum()), "content_sha256": t.content_sha256,
            }
        return out
