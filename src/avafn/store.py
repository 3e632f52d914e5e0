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
already stored (:meth:`FeatureStore.done_uids`).

**Several processes at once.** Any number of processes may write one store together (other
splits, modalities or ranks): every writer names its shards ``part-<tag>-<token>-<seq>.npz``
with a token of its own, so no two writers ever publish the same file; a temp file is named
after its owner (``.tmp-<file>~<pid>@<host>~<random>``) and :meth:`FeatureStore.clean_temp`
removes only those whose owner is gone; readers and :meth:`FeatureStore.compact` (which merges
the shards) meet at a lock on ``<modality>/.lock`` (``fcntl.flock``), so a reader never sees a
shard disappear under it and a compaction never drops a shard it did not read.

**Damage.** Shards are read with ``allow_pickle=False`` and checked (keys, dtypes, shapes,
finite vectors); a damaged shard or ``meta.json`` raises :class:`StoreError` naming the file.
:meth:`FeatureStore.check` (``avafn store check STORE [--repair]``) lists every problem;
``repair`` moves damaged files to ``<modality>/damaged/``, so that the same extraction command
run again redoes exactly what they held.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avafn.errors import ConfigFileError, UserError, read_json
from avafn.io import atomic_write_bytes, atomic_write_json, config_hash, temp_owner_alive

try:
    import fcntl
except ImportError:  # not POSIX: no locks (one writer at a time there)
    fcntl = None

FORMAT = "avafn-feature-store"
VERSION = 1
#: the largest vector width a meta.json may declare
MAX_WIDTH = 1 << 20
_SHARD_KEYS = ("uid", "vector", "present", "count", "reason")


class StoreError(UserError):
    """A store that is incomplete, inconsistent or does not match what was asked of it."""


def repair_hint(root: str | os.PathLike) -> str:
    return (f"run `avafn store check {root} --repair`, then the same extraction command again "
            "to redo what it held")


def validate_meta(meta: object, path: Path, root: Path) -> dict:
    """``meta`` if it is what a ``meta.json`` holds; :class:`StoreError` naming ``path``."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{path}: damaged meta.json ({why}); {repair_hint(root)}")

    if not isinstance(meta, dict):
        raise bad(f"a JSON {type(meta).__name__}, expected an object")
    width = meta.get("width")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
        raise bad(f"width {width!r}, expected an integer in 1..{MAX_WIDTH}")
    for key in ("extractor", "config_hash"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise bad(f"{key} {meta.get(key)!r}, expected a non-empty string")
    if not isinstance(meta.get("config", {}), dict):
        raise bad(f"config is a {type(meta['config']).__name__}, expected an object")
    return meta


def read_shard(path: Path, width: int, root: Path) -> dict[str, np.ndarray]:
    """The five arrays of one shard, checked against ``width`` (pickles refused);
    :class:`StoreError` naming the shard and the way out otherwise."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{path}: damaged shard ({why}); {repair_hint(root)}")

    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        raise bad("empty file" if not head else "not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _SHARD_KEYS if k not in z.files]
            if missing:
                raise bad(f"no array {', '.join(missing)}")
            a = {k: z[k] for k in _SHARD_KEYS}
    except StoreError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise bad("holds pickled Python objects, refused: a shard holds plain arrays only"
                      ) from None
        raise bad(f"{type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, OSError ...
        raise bad(f"truncated or corrupt: {type(e).__name__}: {e}") from None
    u, v = a["uid"], a["vector"]
    n = len(u) if u.ndim == 1 else -1
    if n < 0 or u.dtype.kind != "U":
        raise bad(f"uid is {u.dtype} of shape {u.shape}, expected a 1-d string array")
    if v.shape != (n, width) or v.dtype.kind != "f":
        raise bad(f"vector is {v.dtype} of shape {v.shape}, expected ({n}, {width}) float32 "
                  "as meta.json says")
    for k, kinds in (("present", "b"), ("count", "iu"), ("reason", "U")):
        if a[k].shape != (n,) or a[k].dtype.kind not in kinds:
            raise bad(f"{k} is {a[k].dtype} of shape {a[k].shape}, expected ({n},)")
    if not np.isfinite(v).all():
        raise bad("non-finite vector values (NaN/inf)")
    a["vector"] = v.astype(np.float32, copy=False)
    return a


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


@dataclass
class CheckReport:
    """What :meth:`FeatureStore.check` found (and, with ``repair``, did)."""

    root: Path
    n_shards: int = 0  # sound shards
    n_entries: int = 0  # entries in the sound shards
    problems: list[str] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    removed_temp: int = 0
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems or self.repaired

    def summary(self) -> str:
        head = (f"{self.root}: {self.n_shards} sound shard(s), {self.n_entries} entries, "
                f"{len(self.problems)} problem(s)")
        lines = [head]
        lines += [f"  {p}" for p in self.problems]
        lines += [f"  moved aside: {a} -> {b}" for a, b in self.moved]
        if self.removed_temp:
            lines.append(f"  removed {self.removed_temp} temp file(s) of dead writers")
        if self.moved:
            lines.append("  run the same extraction command(s) again to redo what the moved "
                         "files held")
        return "\n".join(lines)


class StoreWriter:
    """Buffers entries and flushes them as atomic shards of ``shard_size`` entries.

    Use as a context manager; entries added after the last flush are written on exit (also
    on an exception, so that work done before a crash is kept). Shards are named
    ``part-<tag>-<token>-<seq>.npz`` with a random token per writer: writers in other
    processes (even with the same tag) never publish the same file.
    """

    def __init__(self, store: FeatureStore, modality: str, tag: str, shard_size: int):
        self.store, self.modality, self.tag, self.shard_size = store, modality, tag, shard_size
        self.width = int(store.meta(modality)["width"])
        self._buf: list[tuple[str, np.ndarray | None, int, str]] = []
        self._seen = set(store.done_uids(modality))
        self._token = secrets.token_hex(4)
        self._seq = 0
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
        name = f"part-{self.tag}-{self._token}-{self._seq:06d}.npz"
        self.store._write_npz(self.store.root / self.modality / name, arrays)
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

    # ----------------------------------------------------------------- locking
    @contextlib.contextmanager
    def _lock(self, modality: str, exclusive: bool) -> Iterator[None]:
        """Shared (readers) or exclusive (compaction, repair) lock on ``<modality>/.lock``.
        A store that cannot be written (read-only) is read without a lock: nobody writes it."""
        path = self.root / modality / ".lock"
        fd = None
        if fcntl is not None and path.parent.is_dir():
            for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
                try:
                    fd = os.open(path, flags, 0o666)
                    break
                except OSError:
                    continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    # ----------------------------------------------------------------- writing
    def _write_npz(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
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
            with self._lock(modality, exclusive=True):
                for p in self._parts(modality):
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
        """Remove the temp files of writers that are gone (killed); returns how many. Temp
        files of live writers, in this process or any other, are left alone."""
        n = 0
        for p in [*self.root.glob(".tmp-*"), *self.root.glob("*/.tmp-*")]:
            if temp_owner_alive(p):
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n

    def compact(self, modality: str) -> int:
        """Merge all shards of ``modality`` into one (after a multi-process job). Safe while
        other processes write: shards published after the listing are kept as they are."""
        with self._lock(modality, exclusive=True):
            parts = self._parts(modality)
            if len(parts) <= 1:
                return len(parts)
            t = self._load_parts(modality, self._read_meta(modality), parts)
            merged = self.root / modality / "part-merged-000000.npz"
            self._write_npz(merged, {"uid": t.uids, "vector": t.vectors, "present": t.present,
                                     "count": t.count, "reason": t.reason})
            for p in parts:
                if p != merged:
                    p.unlink(missing_ok=True)
        self._cache.pop(modality, None)
        return 1

    # ----------------------------------------------------------------- reading
    def _parts(self, modality: str) -> list[Path]:
        return sorted((self.root / modality).glob("part-*.npz"))

    def _read_meta(self, modality: str) -> dict:
        path = self.root / modality / "meta.json"
        if not path.is_file():
            raise StoreError(
                f"{self.root}: no {modality!r} features (no {path}); stored: {self.modalities()}"
            )
        try:
            meta = read_json(path, "meta.json")
        except ConfigFileError as e:
            raise StoreError(f"{e}; {repair_hint(self.root)}") from None
        return validate_meta(meta, path, self.root)

    def modalities(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/meta.json"))

    def meta(self, modality: str) -> dict:
        return self._read_meta(modality)

    def _load_parts(self, modality: str, meta: dict, parts: list[Path]) -> ModalityTable:
        width = int(meta["width"])
        shards = [read_shard(p, width, self.root) for p in parts]
        if shards:
            t = ModalityTable(meta, *(np.concatenate([s[k] for s in shards]) for k in _SHARD_KEYS),
                              {})
            t.present = t.present.astype(bool)
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
                raise StoreError(f"{self.root}/{modality}: utterance {u} is stored twice, "
                                 f"differently; {repair_hint(self.root)}")
            keep[i] = False
        if not keep.all():
            t = ModalityTable(meta, t.uids[keep], t.vectors[keep], t.present[keep], t.count[keep],
                              t.reason[keep], {u: i for i, u in enumerate(t.uids[keep].tolist())})
        return t

    def table(self, modality: str) -> ModalityTable:
        """All entries of ``modality`` (cached until the next write through this object)."""
        if modality in self._cache:
            return self._cache[modality]
        meta = self._read_meta(modality)
        with self._lock(modality, exclusive=False):
            t = self._load_parts(modality, meta, self._parts(modality))
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

    # ----------------------------------------------------------------- damage
    def check(self, repair: bool = False) -> CheckReport:
        """Verify ``store.json``, every ``meta.json`` and every shard; list what is wrong.

        ``repair`` (only in a folder with the store's ``store.json`` marker: a folder without
        it is refused, so that no user's file is ever moved) moves damaged files to
        ``<modality>/damaged/`` (a damaged ``meta.json``
        takes its modality's shards with it: nothing tells what made them), shards holding
        the two differing copies of an utterance likewise, rewrites a damaged ``store.json``
        and removes temp files of dead writers; the same extraction run again then redoes
        exactly what was moved.
        """
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such feature store folder")
        rep = CheckReport(self.root, repaired=repair)
        dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
                      and ((d / "meta.json").exists() or any(d.glob("part-*.npz"))))
        sj = self.root / "store.json"
        try:
            info = read_json(sj, "store.json")
            if not isinstance(info, dict) or info.get("format") != FORMAT:
                # JSON of something else: a file of the user's, never rewritten
                raise StoreError(f"{self.root}: not a feature store ({sj} is not an avafn "
                                 f"feature store's marker: {info!r:.80})")
        except ConfigFileError as e:
            if not dirs:
                raise StoreError(f"{self.root}: not a feature store ({e})") from None
            if repair and not sj.is_file():
                # the marker is what says avafn wrote this folder: without it, repair would
                # move a user's own files (any meta.json, any part-*.npz) aside
                raise StoreError(f"{self.root}: not a feature store (no store.json); --repair "
                                 "refused, nothing moved") from None
            rep.problems.append(str(e))
            if repair:  # a damaged marker (truncated, not JSON) of a store
                atomic_write_json(sj, {"format": FORMAT, "version": VERSION})
        for d in dirs:
            with self._lock(d.name, exclusive=True):
                self._check_modality(d, rep, repair)
            self._cache.pop(d.name, None)
        stale = [p for p in [*self.root.glob(".tmp-*"), *self.root.glob("*/.tmp-*")]
                 if not temp_owner_alive(p)]
        if repair:
            rep.removed_temp = self.clean_temp()
        elif stale:
            rep.problems.append(f"{len(stale)} temp file(s) of dead writers, e.g. {stale[0]}")
        return rep

    def _check_modality(self, d: Path, rep: CheckReport, repair: bool) -> None:
        parts = self._parts(d.name)
        try:
            meta = self._read_meta(d.name)
        except StoreError as e:
            rep.problems.append(str(e).split("; run `avafn store check")[0]
                                + f" ({len(parts)} shard(s) cannot be trusted without it)")
            if repair:
                for p in [d / "meta.json", *parts]:
                    if p.exists():
                        rep.moved.append((p, _move_aside(p)))
            return
        sound: list[tuple[Path, dict[str, np.ndarray]]] = []
        for p in parts:
            try:
                sound.append((p, read_shard(p, int(meta["width"]), self.root)))
            except StoreError as e:
                rep.problems.append(str(e).split("; run `avafn store check")[0])
                if repair:
                    rep.moved.append((p, _move_aside(p)))
        seen: dict[str, tuple[Path, int, dict]] = {}
        clash: set[Path] = set()
        for p, a in sound:
            for i, u in enumerate(a["uid"].tolist()):
                if u not in seen:
                    seen[u] = (p, i, a)
                    continue
                q, j, b = seen[u]
                if a["present"][i] != b["present"][j] or not np.array_equal(a["vector"][i],
                                                                          b["vector"][j]):
                    if not {p, q} <= clash:
                        rep.problems.append(f"{d}: utterance {u} is stored twice, differently "
                                            f"({q.name} and {p.name})")
                    clash |= {p, q}
        for p, a in sound:
            if p in clash:
                if repair:
                    rep.moved.append((p, _move_aside(p)))
                continue
            rep.n_shards += 1
            rep.n_entries += len(a["uid"])


def _move_aside(path: Path) -> Path:
    """Move ``path`` to ``damaged/`` beside it (never overwriting); returns where it went."""
    dest_dir = path.parent / "damaged"
    dest_dir.mkdir(exist_ok=True)
    dest, k = dest_dir / path.name, 1
    while dest.exists():
        dest, k = dest_dir / f"{path.name}.{k}", k + 1
    os.replace(path, dest)
    return dest
