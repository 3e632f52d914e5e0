"""The extraction job shared by every extractor: corpus -> feature store, resumable and sharded.

The extractor is any registered one (:mod:`avafn.extract.registry`; interface in
:mod:`avafn.extract.base`): the job has no per-extractor code.

- **Work list.** The selected splits' utterances in corpus order; rank ``r`` of ``w`` takes
  ``utterances[r::w]`` and skips every uid already in the store (present or missing), so a job
  killed at any moment (even ``kill -9``) redoes only what is not stored. Shards are written
  atomically by :class:`~avafn.store.StoreWriter`; temp files of killed writers are removed at
  start (:meth:`~avafn.store.FeatureStore.clean_temp`).
- **Units.** The work list is cut into units of ``extractor.unit_size`` consecutive
  utterances (fixed positions in the list); inference batches never cross a unit, and a unit
  that is partly stored is run again whole (only its missing entries are written). A unit's
  vectors therefore never depend on where a previous run stopped: a resumed job is
  bit-identical to an uninterrupted one, whatever the batch size.
- **Outputs.** An extractor may write several modalities at once (``outputs()``, e.g. three
  wav2vec 2.0 layers from one forward pass); an utterance is done when every output has it.
- **Decoding** runs in ``workers`` processes (spawned; 0 = in this process) with at most
  ``max(workers * prefetch, unit size)`` clips in flight, so memory is bounded whatever the
  corpus size, and the workers decode the next unit while the models run on the current one.
- **Inference** runs in the main process on pools of decoded clips (batched across clips).
- **Failures** (unreadable, truncated, empty, audio-less or face-less clips, no media file)
  are stored as missing with the reason, counted and listed in the report; the job goes on.
- **Several processes / GPUs.** Rank and world size come from the arguments or from
  torchrun's ``RANK`` / ``WORLD_SIZE``; each rank writes shards tagged ``r{rank:03d}``. With
  torchrun (``MASTER_ADDR`` set) the ranks meet at a gloo barrier and rank 0 merges the shards
  (:meth:`~avafn.store.FeatureStore.compact`); started any other way, run :func:`merge`
  (``avafn extract ... --merge``) once every rank has finished.
- **Segments.** With ``segments=True`` an utterance's ``start`` / ``end`` cut its media file
  (one long recording per dialogue). Default: on, except for corpora whose clips are already
  cut (``Corpus.pre_cut``, e.g. MELD, whose StartTime/EndTime are times in the episode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing import get_context
from typing import Any

from avafn.data.corpus import Corpus, DataError, Utterance
from avafn.errors import UserError
from avafn.extract.base import Extractor, Result, recorded_precision
from avafn.extract.media import MediaError, release_readers
from avafn.extract.registry import LEGACY_KEYS, setting_differences
from avafn.store import FeatureStore, StoreError

log = logging.getLogger(__name__)

#: (uid, path or None, start, end); path None = the utterance has no media file
Task = tuple[str, "str | None", "float | None", "float | None"]


def __getattr__(name: str) -> Any:
    """``AudioExtractor`` / ``VideoExtractor``: the wav2vec 2.0 and DAN extractors under the
    names this module gave them (imported on use: decoding workers never import torch)."""
    if name == "AudioExtractor":
        from avafn.extract.audio import Wav2Vec2Extractor

        return Wav2Vec2Extractor
    if name == "VideoExtractor":
        from avafn.extract.video import DANFacesExtractor

        return DANFacesExtractor
    raise AttributeError(name)


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
    splits: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # modalities written

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
                "store_missing": self.store_missing, "n_left": self.n_left,
                "outputs": self.outputs}


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


def split_names(corpus: Corpus, splits: Iterable[str] | None = None) -> list[str]:
    """The asked splits (default: all of the corpus's), checked to exist."""
    names = list(splits) if splits else list(corpus.splits)
    unknown = [s for s in names if s not in corpus.splits]
    if unknown:
        raise DataError(f"corpus {corpus.name!r} has no split(s) {unknown}; it has "
                        f"{list(corpus.splits)}")
    return names


def select_utterances(corpus: Corpus, splits: Iterable[str] | None = None) -> list[Utterance]:
    return [u for s in split_names(corpus, splits) for u in corpus.utterances(s)]


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


def _text_results(utts: list[Utterance]) -> Generator[tuple[str, Any, str]]:
    """The payloads of ``input == "text"`` extractors: each utterance's stripped text."""
    for u in utts:
        t = (u.text or "").strip()
        yield u.uid, (t or None), ("" if t else "no text" if u.text is None else "empty text")


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


def _results(loader: Callable, tasks: list[Task], workers: int, prefetch: int,
             in_flight: int | None = None) -> Generator[tuple[str, Any, str]]:
    """Decoded tasks in order; at most ``in_flight`` (default ``workers * prefetch``) in
    flight.

    A clip that kills its worker process (a crash inside FFmpeg, the OOM killer) breaks the
    pool: the tasks that were in flight are then retried one by one, each in a process of its
    own, so that only the culprit is recorded as missing (``CRASHED``); a new pool goes on.
    """
    if workers <= 0:
        for t in tasks:
            yield _call(loader, t)
        return
    limit = in_flight if in_flight is not None else workers * prefetch
    queue: deque[Task] = deque(tasks)
    while queue:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
            pending: deque = deque()  # (task, future)
            try:
                while queue or pending:
                    while queue and len(pending) < limit:
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
    """Extract ``extractor``'s output modalities for the selected utterances into ``store``.

    ``limit``: stop after this many utterances written in this run (the rest is left for a
    later run, as if interrupted). ``on_written(uid)`` is called after each entry is added
    (tests use it to interrupt a job). Returns an :class:`ExtractReport`.
    """
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    rank, world = dist_env(rank, world_size)
    segments = not corpus.pre_cut if segments is None else segments
    names = _create_outputs(store, extractor)
    corpus = extractor.prepare_corpus(corpus)  # e.g. text given with its preceding turns
    split_list = split_names(corpus, splits)
    mine = select_utterances(corpus, split_list)[rank::world]
    done_in = {m: store.done_uids(m) for m in names}
    units, n_todo, budget = _units_to_do(mine, set.intersection(*done_in.values()),
                                         extractor.unit_size, limit)
    report = ExtractReport(",".join(names), rank, world, len(mine), len(mine) - n_todo,
                           splits=split_list, outputs=names)
    flat = [u for un in units for u in un]
    t0 = time.perf_counter()
    writes = _Writes(report, done_in, budget, progress, on_written)
    if extractor.input == "text":
        results: Generator[tuple[str, Any, str]] = _text_results(flat)
    else:
        results = _decoded(extractor, _tasks(corpus, media_root, flat, segments), workers, prefetch)
    try:
        with contextlib.ExitStack() as stack:
            writes.writers = _open_writers(stack, store, report, shard_size)
            writes.run(extractor, units, results)
    except BaseException:
        report.interrupted = True
        raise
    finally:
        writes.bar.close()
        results.close()
        release_readers()  # a video kept open between its segments (decoded in this process)
        report.seconds = time.perf_counter() - t0
        report.n_left = n_todo - report.n_written
    if merge_at_end:
        merged = [_finish(store, m, rank, world) for m in names]
        report.merged = all(merged)
    report.store_missing = _store_missing(store, names)
    return report


def _create_outputs(store: FeatureStore, extractor: Extractor) -> list[str]:
    """The extractor's output modalities, created in ``store`` (temp files of killed writers
    removed first); their names."""
    outputs = outputs_of(extractor)
    store.root.mkdir(parents=True, exist_ok=True)
    store.clean_temp()
    for m, meta in outputs.items():
        store.create_modality(m, legacy_compatible(store, m, meta, _device(extractor)))
    return list(outputs)


def _decoded(extractor: Extractor, tasks: list[Task], workers: int, prefetch: int
             ) -> Generator[tuple[str, Any, str]]:
    """The media of ``tasks`` decoded by the extractor's loader in ``workers`` processes, at
    least a unit in flight: the workers decode the next unit while this process runs the
    models on the current one (with fewer, they idle once their few clips are done)."""
    return _results(extractor.loader(workers), tasks, workers, prefetch,
                    in_flight=max(workers * prefetch, max(1, int(extractor.unit_size))))


def _open_writers(stack: contextlib.ExitStack, store: FeatureStore, report: ExtractReport,
                  shard_size: int) -> dict[str, Any]:
    """A store writer per output of the report, its shards tagged with the rank, closed
    with ``stack``."""
    return {m: stack.enter_context(store.writer(m, tag=f"r{report.rank:03d}",
                                                shard_size=shard_size))
            for m in report.outputs}


def _units_to_do(mine: list[Utterance], done: set[str], size: int, limit: int | None
                 ) -> tuple[list[list[Utterance]], int, int]:
    """The units (``size`` consecutive utterances of ``mine``, at fixed positions) holding an
    utterance not ``done`` yet, only those that hold the first ``limit`` of them when given;
    (units, utterances to do, how many of them this run writes)."""
    size = max(1, int(size))
    units = [mine[i:i + size] for i in range(0, len(mine), size)]
    units = [un for un in units if any(u.uid not in done for u in un)]
    n_todo = sum(u.uid not in done for un in units for u in un)
    budget = n_todo if limit is None else max(0, min(int(limit), n_todo))
    if budget < n_todo:  # only the units that hold the first `budget` utterances to do
        kept, k = [], 0
        for un in units:
            if k >= budget:
                break
            kept.append(un)
            k += sum(u.uid not in done for u in un)
        units = kept
    return units, n_todo, budget


class _Writes:
    """The writing side of a job: each output's store writer (``writers``, set once they are
    open; an output skips the utterances it already holds), the report's counts, the progress
    bar and ``on_written``; at most ``budget`` utterances are written."""

    def __init__(self, report: ExtractReport, done_in: dict[str, set[str]], budget: int,
                 progress: bool, on_written: Callable[[str], None] | None) -> None:
        from tqdm.auto import tqdm

        self.report, self.done_in, self.budget, self.on_written = report, done_in, budget, \
            on_written
        self.done = set.intersection(*done_in.values())
        self.writers: dict[str, Any] = {}
        self.bar = tqdm(total=budget, unit="utt", desc=f"extract {report.modality} r{report.rank}",
                        disable=not progress, dynamic_ncols=True, mininterval=1.0,
                        smoothing=0.05)

    def run(self, extractor: Extractor, units: list[list[Utterance]],
            results: Iterator[tuple[str, Any, str]]) -> None:
        """Each unit's decoded payloads through ``extractor.process``, the results written."""
        for un in units:
            got = [next(results) for _ in un]
            ok = [i for i, (_, _, reason) in enumerate(got) if not reason]
            outs = dict(zip(ok, extractor.process([got[i][1] for i in ok]))) if ok else {}
            for i, (uid, _, reason) in enumerate(got):
                if uid in self.done:
                    continue  # stored by an earlier run: this unit was run whole again
                if self.report.n_written >= self.budget:
                    break
                self.put(uid, outs.get(i, (None, 0, reason)))

    def put(self, uid: str, res: Result) -> None:
        """One utterance's result, written to every output that does not hold it yet."""
        vec, count, reason = res
        present, why = False, reason
        for m, w in self.writers.items():
            v, c, r = (vec.get(m) if isinstance(vec, dict) else vec), count, reason
            if isinstance(v, tuple):  # per modality (vector | None, count, reason)
                v, c, r = v
            present = present or v is not None
            why = why or r
            if uid not in self.done_in[m]:
                w.add(uid, v, count=c, reason=r)
        self.report.n_written += 1
        if not present:
            self.report.missing.append((uid, why))
        else:
            self.report.n_present += 1
        self.bar.update(1)
        if self.on_written is not None:
            self.on_written(uid)


def _store_missing(store: FeatureStore, names: list[str]) -> int:
    """The entries stored as missing in the outputs, in all (-1 while another rank compacts
    them: the count is only informative)."""
    try:
        return sum(len(store.missing(m)) for m in names)
    except StoreError:
        return -1


def outputs_of(extractor: Extractor) -> dict[str, dict]:
    """Output modality -> metadata (:meth:`Extractor.outputs`)."""
    return extractor.outputs()


def _device(extractor: Extractor) -> str:
    if extractor.parts:  # a combined job: its parts share the command's device
        return _device(extractor.parts[0])
    return "cpu" if extractor.encoder is None else str(extractor.encoder.device)


def legacy_compatible(store: FeatureStore, modality: str, meta: dict, device: str = "cpu"
                      ) -> dict:
    """``meta``, or the stored one when the store was written before a setting was recorded
    and this run's value of it is what extraction then used on ``device`` (appending stays
    allowed; any other value is refused by the store as a different configuration)."""
    try:
        old = store.meta(modality)
    except StoreError:
        return meta
    lacking = {k for k in LEGACY_KEYS if k in meta.get("config", {})
               and k not in old.get("config", {})}
    if not lacking or old.get("extractor") != meta.get("extractor"):
        return meta
    legacy = {"precision": recorded_precision({}, device)}
    if any(k.startswith("face_") for k in lacking):
        from avafn.extract.faces import LEGACY_FACE_CONFIG

        legacy.update(LEGACY_FACE_CONFIG)
    if any(meta["config"][k] != legacy.get(k) for k in lacking):
        return meta
    if setting_differences(old, meta) or old.get("width") != meta.get("width"):
        return meta
    return old


def _finish(store: FeatureStore, modality: str, rank: int, world: int) -> bool:
    """Merge shards when this process may: alone, or rank 0 after a barrier. Returns merged."""
    if world == 1:
        store.compact(modality)
        return True
    if not _barrier(world, rank):
        log.warning(f"rank {rank}/{world} finished; once every rank has, merge the shards with "
                    f"`avafn extract {modality} ... --merge` (avafn.extract.job.merge)")
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
                     face_config=None, precision: str | None = None,
                     layers: list[int] | None = None, face_detector: str | None = None,
                     **job_kwargs) -> ExtractReport:
    """Build the default extractor of ``modality`` ("audio": ``model`` = wav2vec 2.0
    id/folder; "video": ``model`` = DAN checkpoint) and run :func:`run_extraction`. Any other
    registered extractor: build it (``EXTRACTORS.get(name)(...)``) and call
    :func:`run_extraction`."""
    device = resolve_device(device)
    if modality == "audio":
        from avafn.extract.audio import DEFAULT_MODEL, Wav2Vec2Encoder, Wav2Vec2Extractor

        enc = Wav2Vec2Encoder(model if model is not None else DEFAULT_MODEL, layer=layer,
                              layers=layers, device=device, batch_size=batch_size or 16,
                              precision=precision)
        ext: Extractor = Wav2Vec2Extractor(enc)
    elif modality == "video":
        from avafn.extract.faces import DEFAULT_DETECTOR
        from avafn.extract.video import DANFacesExtractor, DANVideoEncoder

        if model is None:
            raise UserError("video extraction needs a DAN checkpoint (--model PATH): the "
                             "public AffectNet-7/8 or RAF-DB checkpoints of DAN")
        if layer is not None or layers is not None:
            raise UserError("--layer applies to audio (wav2vec 2.0) only")
        ext = DANFacesExtractor(DANVideoEncoder(model, device=device, batch_size=batch_size or None,
                                                precision=precision),
                                fps=fps, face_config=face_config,
                                detector=face_detector or DEFAULT_DETECTOR)
    else:
        raise UserError(f"unknown modality {modality!r} (audio or video)")
    return run_extraction(corpus, media_root, store, ext, **job_kwargs)
