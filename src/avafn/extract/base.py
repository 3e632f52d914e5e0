"""What every extractor is: the interface the extraction job, ``predict`` and ``stream`` use.

An extractor turns one utterance (its media clip, or its text) into one vector per output
modality. It registers itself by name in :data:`avafn.extract.registry.EXTRACTORS`; its
:meth:`Extractor.meta` names it (``"extractor": NAME``) with every setting that changes the
vectors (under ``config``, which the feature store hashes), and :meth:`Extractor.from_meta`
rebuilds it from that record, so a store or a run needs no per-extractor code to be extracted
again on new media.

The job calls, for each *unit* of ``unit_size`` consecutive utterances of its work list:
``loader(workers)(path, start, end)`` in decoding processes (``input == "media"``; the
utterance's text is the payload when ``input == "text"``), then ``process(payloads)`` in the
main process on the unit's decoded payloads. A unit's vectors depend only on that unit, which
makes a resumed job bit-identical to an uninterrupted one (:mod:`avafn.extract.job`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avafn.errors import UserError

#: one utterance's outcome: vector (None = missing; a dict modality -> vector for extractors
#: with several outputs, or modality -> (vector | None, count, reason) when they differ per
#: modality, as in a combined job), count (samples, frames with a face, tokens...), reason
#: when missing
Result = tuple["np.ndarray | dict[str, np.ndarray] | None", int, str]

#: ``--precision`` choices: float32, or bfloat16 autocast of the network's forward
PRECISIONS = ("fp32", "bf16")


class Extractor:
    """Base class of the registered extractors (plug-ins subclass it too): every layer reads
    these declared attributes and methods, none probes an extractor for what it has."""

    #: the registered name, written as ``meta()["extractor"]`` (set by ``register``)
    name: ClassVar[str] = ""
    #: which ``avafn extract`` subcommand offers it: "audio", "video" or "text"
    kind: ClassVar[str] = "audio"
    #: what the job feeds ``process``: decoded media ("media") or the utterance's text ("text")
    input: ClassVar[str] = "media"
    #: the store modality written (instances may rename it, e.g. ``audio-l12``)
    modality: str = "audio"
    #: utterances per unit of work (the job never batches across units)
    unit_size: int = 32
    #: the network it runs, if any (its ``device`` is where the job runs). A text extractor's
    #: is a :class:`~avafn.extract.text.TextEncoder` (or None): prediction reads its
    #: ``tokenizer``, ``max_length``, ``model_id``, ``context_turns`` and ``inputs``
    encoder: Any = None
    #: the extractors a combined job runs (none for a single one)
    parts: tuple[Extractor, ...] = ()

    # ---- what it records ---------------------------------------------------------------
    def meta(self) -> dict:
        """``{"extractor": name, "width": int, "model_id": ..., "config": {settings}}``."""
        raise NotImplementedError

    def outputs(self) -> dict[str, dict]:
        """Output modality -> its store metadata (one entry, unless the extractor has several)."""
        return {self.modality: self.meta()}

    def prepare_corpus(self, corpus: Any) -> Any:
        """The corpus the job extracts from (by default ``corpus`` itself; a text extractor
        may give each utterance its preceding turns)."""
        return corpus

    # ---- what it runs ------------------------------------------------------------------
    def loader(self, workers: int) -> Callable[[str, float | None, float | None], Any]:
        """A picklable function ``(path, start, end) -> payload`` run in decoding processes;
        raises :class:`~avafn.extract.media.MediaError` for unusable clips."""
        raise NotImplementedError

    def process(self, payloads: list[Any]) -> list[Result]:
        """The unit's payloads -> one :data:`Result` each, in order."""
        raise NotImplementedError

    # ---- how it is built ---------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Its own ``avafn extract KIND --extractor NAME`` options (none by default)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> Extractor:
        """Build it from the parsed command line (the shared options: ``model``,
        ``batch_size``, ``precision``; its own from :meth:`add_arguments`). By default: with
        no arguments (an extractor without options)."""
        return cls()

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> Extractor:
        """Rebuild it from its stored ``meta``; ``model_override`` is where its model lives on
        this machine when that differs from the recorded location."""
        raise NotImplementedError


def recorded_precision(config: Mapping[str, Any], device: str) -> str:
    """The precision a store was extracted with; records without one (written before the
    setting existed) ran bf16 autocast on CUDA and float32 elsewhere."""
    p = config.get("precision")
    if p is not None:
        return str(p)
    return "bf16" if str(device).startswith("cuda") else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16 in its flags, read
    from ``/proc/cpuinfo``): there bf16 extraction runs about 2.5-3x faster than float32
    (``bench_extract.py``); elsewhere bf16 is emulated and slower.
    ``AVAFN_CPU_PRECISION=fp32|bf16`` decides instead."""
    forced = os.environ.get("AVAFN_CPU_PRECISION", "").strip().lower()
    if forced in ("fp32", "bf16"):
        return forced == "bf16"
    if forced:
        raise UserError(f"AVAFN_CPU_PRECISION={forced!r}: expected fp32 or bf16")
    return _cpu_flags() & {"amx_bf16", "avx512_bf16"} != set()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def default_precision(device: str) -> str:
    """bf16 on CUDA and on CPUs with native bf16 (:func:`cpu_has_native_bf16`), fp32
    elsewhere (``benchmarks/bench_extract.py`` measures both side by side)."""
    if str(device).startswith("cuda"):
        return "bf16"
    if str(device).startswith("cpu") and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def check_precision(precision: str | None, device: str) -> str:
    p = default_precision(device) if precision is None else str(precision)
    if p not in PRECISIONS:
        raise UserError(f"--precision {p!r}: expected one of {', '.join(PRECISIONS)}")
    return p


def local_model_or_id(model: str, what: str, markers: tuple[str, ...] = ("config.json",)) -> str:
    """``model`` as a resolved local folder, or as given (a Hugging Face id). A path that is no
    model folder (missing, a file, a folder holding none of ``markers``) is refused in one line
    naming ``what`` (e.g. ``"--model"``)."""
    p = Path(model).expanduser()
    if p.is_dir():
        if not any((p / m).is_file() for m in markers):
            raise UserError(f"{what} {model}: not a model folder (no {' or '.join(markers)} "
                            "in it)")
        return str(p.resolve())
    if p.exists():
        raise UserError(f"{what} {model}: a file, not a model folder")
    if model.startswith(("/", ".", "~", "\\")) or p.drive:
        raise UserError(f"{what} {model}: no such model folder (give a local folder, or a "
                        "Hugging Face id reachable from this machine)")
    return model
