"""The extraction job shared by audio and video: corpus -> feature store, resumable and sharded.

- **Work list.** The selected splits' utterances in corpus order; rank ``r`` of ``w`` takes
  ``utterances[r::w]`` and skips every uid already in the store (present or missing), so a job
  killed at any moment (even ``kill -9``) redoes only what is not stored. Shards are written
  atomically by :class:`~avafn.store.StoreWriter`; temp files of killed writers are removed at
  start (:meth:`~avafn.store.FeatureStore.clean_temp`).
- **Decoding** runs in ``workers`` processes (spawned; 0 = in this process) with at most
  ``workers * prefetch`` clips in flight, so memory is bounded whatever the corpus size.
- **Inference** runs in the main process on pools of decoded clips (batched across clips).
- **Failures** (unreadable, truncated, empty, audio-less or face-less clips, no media file)
  are stored as missing with the reason, counted and listed in the report; the job goes on.
- **Several processes / GPUs.** Rank and world size come from the arguments or from
  torchrun's ``RANK`` / ``WORLD_SIZE``; each rank writes shards tagged ``r{rank:03d}``. With
  torchrun (``MASTER_ADDR`` set) the ranks meet at a gloo barrier and rank 0 merges the shards
  (:meth:`~avafn.store.FeatureStore.compact`); started any other way, run :func:`merge`
  (``avafn extract ... --merge``) once every rank has finished.
- **Segments.** With ``segments=True`` an utterance's ``start`` / ``end`` cut its media file
  (one long recording per dialogue). Default: on, except for MELD, whose clips are already cut
  and whose StartTime/EndTime are times in the episode.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any, Protocol

import numpy as np

from avafn.data.corpus import Corpus, DataError, Utterance
from avafn.errors import UserError
from avafn.extract.media import MediaError, decode_audio
from avafn.store import FeatureStore, StoreError

#: (uid, path or None, start, end); path None = the utterance has no media file
Task = tuple[str, "str | None", "float | None", "float | None"]
Result = tuple["np.ndarray | None", int, str]  # vector (None = missing), count, reason


class Extractor(Protocol):
    """What the job needs from a modality's extractor."""

    modality: str

    def meta(self) -> dict: ...

    def loader(self, workers: int) -> Callable[[str, float | None, float | None], Any]:
        """A picklable function (path, start, end) -> payload, run in worker processes;
        raises :class:`~avafn.extract.media.MediaError` for unusable clips."""

    def pool_full(self, payloads: list[Any]) -> bool:
        """Whether enough decoded clips are waiting to run inference on them."""

    def process(self, payloads: list[Any]) -> list[Result]: ...


# ------------------------------------------------------------------------------ extractors
class AudioExtractor:
    """wav2vec 2.0 features (:class:`~avafn.extract.audio.Wav2Vec2Encoder`) for the job."""

    modality = "audio"

    def __init__(self, encoder, pool_clips: int | None = None):
        self.encoder = encoder
        # length grouping happens inside a pool: several batches' worth of clips
        self.pool_clips = pool_clips or max(8 * encoder.batch_size, 32)

    def meta(self) -> dict:
        return self.encoder.meta()

    def loader(self, workers: int) -> Callable:
        return decode_audio

    def pool_full(self, payloads: list) -> bool:
        return len(payloads) >= self.pool_clips

    def process(self, payloads: list[np.ndarray]) -> list[Result]:
        from avafn.extract.audio import MIN_SAMPLES

        ok = [i for i, w in enumerate(payloads) if len(w) >= MIN_SAMPLES]
        vecs = dict(zip(ok, self.encoder.encode([payloads[i] for i in ok])))
        return [(vecs[i], len(w), "") if i in vecs else
                (None, len(w), f"audio too short ({len(w)} samples at 16 kHz)")
                for i, w in enumerate(payloads)]


class VideoExtractor:
    """Faces + DAN (:mod:`avafn.extract.video`) for the job."""

    modality = "video"

    def __init__(self, encoder, fps: float | None = None, face_config=None):
        from avafn.extract.faces import DEFAULT_FPS, FaceConfig

        self.encoder = encoder
        self.fps = DEFAULT_FPS if fps is None else fps
        self.face_config = face_config or FaceConfig()

    def meta(self) -> dict:
        from dataclasses import asdict

        return {
            "extractor": "dan-faces-mean", "model_id": self.encoder.checkpoint, "layer": None,
            "width": self.encoder.width,
            "config": {"checkpoint": self.encoder.checkpoint, "fps": self.fps,
                       "feature": "pooled trunk 512 + fused heads 512", "pooling": "mean",
                       "face_rule": "largest", "detector": "opencv-haar",
                       **{f"face_{k}": v for k, v in asdict(self.face_config).items()}},
        }

    def loader(self, workers: int) -> Callable:
        from avafn.extract.faces import load_faces  # no torch in the worker processes

        return functools.partial(_load_faces_segment, load_faces, self.fps, self.face_config,
                                 1 if workers > 0 else 0)

    def pool_full(self, payloads: list) -> bool:
        return sum(len(c) for c, _ in payloads) >= self.encoder.batch_size

    def process(self, payloads: list) -> list[Result]:
        from avafn.extract.video import NO_FACE

        outs = self.encoder.encode_clips([c for c, _ in payloads])
        return [(v, n, "") if v is not None else (None, 0, NO_FACE) for v, n in outs]


def _load_faces_segment(load_faces, fps, face_config, threads, path, start, end):
    return load_faces(path, fps=fps, start=start, end=end, face_config=face_config,
                      threads=threads)


# ------------------------------------------------------------------------------ the job
@dataclass
class ExtractReport:
    modality: str
    rank: int
    world_size: int
    n_selected: int  # utterances of this rank in the selected splits
    n_skipped: int  # already stored before this run
    n_written: int = 0
    n_present: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # written this run
    seconds: float = 0.0
    merged: bool = False
    interrupted: bool = False
    store_missing: int = 0  # entries stored as missing in the whole modality after this run
    n_left: int = 0  # utterances of this rank still to do (after --limit or an interruption)

    @property
    def clips_per_s(self) -> float:
        return self.n_written / self.seconds if self.seconds > 0 else 0.0

    def summary(self, max_listed: int = 20) -> str:
        lines = [f"{self.modality} (rank {self.rank}/{self.world_size}): "
                 f"{self.n_selected} utterances, {self.n_skipped} already stored, "
                 f"{self.n_written} written ({self.n_present} present, {len(self.missing)} "
                 f"missing) in {self.seconds:.1f} s ({self.clips_per_s:.2f} clips/s)"
                 + ("; INTERRUPTED, run again to resume" if self.interrupted else "")
                 + (f"; {self.n_left} left for the next run" if self.n_left else "")
                 + f"; the store holds {self.store_missing} missing {self.modality} entries "
                 f"in all (FeatureStore.missing)"]
        by_reason = Counter(r for _, r in self.missing)
        for reason, n in by_reason.most_common():
            uids = [u for u, r in self.missing if r == reason]
            more = f" ... (+{n - max_listed})" if n > max_listed else ""
            lines.append(f"  missing, {reason}: {n}: " + ", ".join(uids[:max_listed]) + more)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"modality": self.modality, "rank": self.rank, "world_size": self.world_size,
                "n_selected": self.n_selected, "n_skipped": self.n_skipped,
                "n_written": self.n_written, "n_present": self.n_present,
                "n_missing": len(self.missing),
                "missing_by_reason": dict(Counter(r for _, r in self.missing)),
                "seconds": round(self.seconds, 3), "clips_per_s": round(self.clips_per_s, 3),
                "merged": self.merged, "interrupted": self.interrupted,
                "store_missing": self.store_missing, "n_left": self.n_left}


def dist_env(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    r = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    w = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if w < 1 or not 0 <= r < w:
        raise UserError(f"rank {r} is not in 0..{w - 1} (world size {w})")
    return r, w


def resolve_device(device: str) -> str:
    """``"cuda"`` under torchrun means this rank's GPU: ``cuda:$LOCAL_RANK``."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def select_utterances(corpus: Corpus, splits: Iterable[str] | None = None) -> list[Utterance]:
    names = list(splits) if splits else list(corpus.splits)
    unknown = [s for s in names if s not in corpus.splits]
    if unknown:
        raise DataError(f"corpus {corpus.name!r} has no split(s) {unknown}; it has "
                         f"{list(corpus.splits)}")
    return [u for s in names for u in corpus.utterances(s)]


def _tasks(corpus: Corpus, media_root, utts: list[Utterance], segments: bool) -> list[Task]:
    out = []
    for u in utts:
        if not u.media:
            path = None
        elif media_root is None:  # manifests give paths (made absolute by the reader)
            path = u.media
        else:
            path = str(corpus.media_path(u, media_root))
        start, end = (u.start, u.end) if segments else (None, None)
        out.append((u.uid, path, start, end))
    return out


def _call(loader: Callable, task: Task) -> tuple[str, Any, str]:
    """Run ``loader`` on one task; failures become a reason (never an exception)."""
    uid, path, start, end = task
    if path is None:
        return uid, None, "no media file"
    try:
        return uid, loader(path, start, end), ""
    except MediaError as e:
        return uid, None, e.reason
    except Exception as e:  # noqa: BLE001 - a clip must never stop the job: record it
        return uid, None, f"{type(e).__name__}: {e}"[:300]


CRASHED = "decoder process crashed"


def _results(loader: Callable, tasks: list[Task], workers: int, prefetch: int
             ) -> Iterator[tuple[str, Any, str]]:
    """Decoded tasks in order; at most ``workers * prefetch`` in flight.

    A clip that kills its worker process (a crash inside FFmpeg, the OOM killer) breaks the
    pool: the tasks that were in flight are then retried one by one, each in a process of its
    own, so that only the culprit is recorded as missing (``CRASHED``); a new pool goes on.
    """
    if workers <= 0:
        for t in tasks:
            yield _call(loader, t)
        return
    queue: deque[Task] = deque(tasks)
    while queue:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
            pending: deque = deque()  # (task, future)
            try:
                while queue or pending:
                    while queue and len(pending) < workers * prefetch:
                        t = queue.popleft()
                        pending.append((t, ex.submit(_call, loader, t)))
                    t, fut = pending[0]
                    try:
                        r = fut.result()
                    except BrokenProcessPool:
                        break
                    pending.popleft()
                    yield r
            finally:
                for _, f in pending:
                    f.cancel()
        if pending:  # the pool broke: isolate the tasks that were in flight
            for t, _ in pending:
                yield _isolated(loader, t)
            pending.clear()


def _isolated(loader: Callable, task: Task) -> tuple[str, Any, str]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as ex:
        try:
            return ex.submit(_call, loader, task).result()
        except BrokenProcessPool:
            return task[0], None, CRASHED


def run_extraction(corpus: Corpus, media_root: str | os.PathLike | None,
                   store: FeatureStore | str | os.PathLike, extractor: Extractor, *,
                   splits: Iterable[str] | None = None, workers: int = 0, prefetch: int = 4,
                   rank: int | None = None, world_size: int | None = None,
                   segments: bool | None = None, shard_size: int = 256,
                   limit: int | None = None, progress: bool = True, merge_at_end: bool = True,
                   on_written: Callable[[str], None] | None = None) -> ExtractReport:
    """Extract ``extractor.modality`` for the selected utterances into ``store``.

    ``limit``: stop after this many utterances written in this run (the rest is left for a
    later run, as if interrupted). ``on_written(uid)`` is called after each entry is added
    (tests use it to interrupt a job). Returns an :class:`ExtractReport`.
    """
    from tqdm.auto import tqdm

    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    rank, world = dist_env(rank, world_size)
    if segments is None:
        segments = corpus.name.lower() != "meld"
    modality = extractor.modality
    store.root.mkdir(parents=True, exist_ok=True)
    store.clean_temp()
    store.create_modality(modality, extractor.meta())
    mine = select_utterances(corpus, splits)[rank::world]
    done = store.done_uids(modality)
    todo = [u for u in mine if u.uid not in done]
    report = ExtractReport(modality, rank, world, len(mine), len(mine) - len(todo))
    n_todo = len(todo)
    if limit is not None:
        todo = todo[:limit]
    t0 = time.perf_counter()
    loader = extractor.loader(workers)
    bar = tqdm(total=len(todo), unit="clip", desc=f"extract {modality} r{rank}",
               disable=not progress, dynamic_ncols=True, mininterval=1.0, smoothing=0.05)
    try:
        with store.writer(modality, tag=f"r{rank:03d}", shard_size=shard_size) as w:

            def put(uid: str, res: Result) -> None:
                vec, count, reason = res
                w.add(uid, vec, count=count, reason=reason)
                report.n_written += 1
                if vec is None:
                    report.missing.append((uid, reason))
                else:
                    report.n_present += 1
                bar.update(1)
                if on_written is not None:
                    on_written(uid)

            pool_uids: list[str] = []
            pool: list[Any] = []  # decoded payloads of pool_uids, waiting for inference

            def flush() -> None:
                if pool:
                    for uid, res in zip(pool_uids, extractor.process(pool)):
                        put(uid, res)
                    pool_uids.clear()
                    pool.clear()

            for uid, payload, reason in _results(loader, _tasks(corpus, media_root, todo,
                                                                segments), workers, prefetch):
                if reason:
                    put(uid, (None, 0, reason))
                    continue
                pool_uids.append(uid)
                pool.append(payload)
                if extractor.pool_full(pool):
                    flush()
            flush()
    except BaseException:
        report.interrupted = True
        raise
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t0
        report.n_left = n_todo - report.n_written
    if merge_at_end:
        report.merged = _finish(store, modality, rank, world)
    try:
        report.store_missing = len(store.missing(modality))
    except StoreError:  # another rank compacting right now: the count is only informative
        report.store_missing = -1
    return report


def _finish(store: FeatureStore, modality: str, rank: int, world: int) -> bool:
    """Merge shards when this process may: alone, or rank 0 after a barrier. Returns merged."""
    if world == 1:
        store.compact(modality)
        return True
    if not _barrier(world, rank):
        print(f"rank {rank}/{world} finished; once every rank has, merge the shards with "
              f"`avafn extract {modality} ... --merge` (avafn.extract.job.merge)",
              file=sys.stderr)
        return False
    if rank == 0:
        store.compact(modality)
    _barrier(world, rank)  # nobody reads the store while rank 0 rewrites it
    return rank == 0


def _barrier(world: int, rank: int) -> bool:
    """A barrier across ranks when torch.distributed is (or can be) initialised."""
    import torch.distributed as dist

    if not dist.is_available():
        return False
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            return False
        from datetime import timedelta

        dist.init_process_group("gloo", rank=rank, world_size=world,
                                timeout=timedelta(hours=48))
    dist.barrier()
    return True


def merge(store: FeatureStore | str | os.PathLike, modality: str, corpus: Corpus | None = None,
          splits: Iterable[str] | None = None) -> dict:
    """Merge the ranks' shards into one and check completeness against ``corpus``.

    Returns ``{"entries", "present", "missing", "not_extracted": [uids...]}``.
    """
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    store.clean_temp()
    store.compact(modality)
    done = store.done_uids(modality)
    todo = [u.uid for u in select_utterances(corpus, splits)] if corpus is not None else []
    t = store.table(modality)
    return {"entries": len(done), "present": int(t.present.sum()),
            "missing": len(t.present) - int(t.present.sum()),
            "not_extracted": [u for u in todo if u not in done]}


def extract_modality(modality: str, corpus: Corpus, media_root: str | os.PathLike | None,
                     store: FeatureStore | str | os.PathLike, *, model: str | os.PathLike | Any
                     = None, layer: int | None = None, device: str = "cpu",
                     batch_size: int | None = None, fps: float | None = None,
                     face_config=None, **job_kwargs) -> ExtractReport:
    """Build the extractor for ``modality`` ("audio": ``model`` = wav2vec 2.0 id/folder;
    "video": ``model`` = DAN checkpoint) and run :func:`run_extraction`."""
    device = resolve_device(device)
    if modality == "audio":
        from avafn.extract.audio import DEFAULT_MODEL, Wav2Vec2Encoder

        enc = Wav2Vec2Encoder(model if model is not None else DEFAULT_MODEL, layer=layer,
                              device=device, batch_size=batch_size or 16)
        ext: Extractor = AudioExtractor(enc)
    elif modality == "video":
        from avafn.extract.video import DANVideoEncoder

        if model is None:
            raise UserError("video extraction needs a DAN checkpoint (--model PATH): the "
                             "public AffectNet-7/8 or RAF-DB checkpoints of DAN")
        if layer is not None:
            raise UserError("--layer applies to audio (wav2vec 2.0) only")
        ext = VideoExtractor(DANVideoEncoder(model, device=device, batch_size=batch_size or 256),
                             fps=fps, face_config=face_config)
    else:
        raise UserError(f"unknown modality {modality!r} (audio or video)")
    return run_extraction(corpus, media_root, store, ext, **job_kwargs)


