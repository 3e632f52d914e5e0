"""From MELD.Raw to the paper's Tables 2 and 3 in one call: extract audio (wav2vec 2.0) and
video (faces + DAN) features of the three official splits into a feature store, then train
and evaluate every table row over several seeds (:func:`avafn.reporting.table.run_table`).

Every stage resumes: extraction skips stored clips, the table reuses finished runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avafn.data import load_corpus
from avafn.extract.job import ExtractReport, extract_modality
from avafn.store import FeatureStore

SPLITS = ("train", "dev", "test")

log = logging.getLogger(__name__)


def check_meld_root(meld_root: str | os.PathLike, media_subdirs: dict[str, str]) -> Path:
    """The MELD.Raw folder, checked to hold the three splits' clip folders."""
    root = Path(meld_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--meld-root {root} is not a folder (MELD.Raw, extracted)")
    absent = [sub for s, sub in media_subdirs.items() if s in SPLITS and not (root / sub).is_dir()]
    if absent:
        tars = sorted(p.name for p in root.glob("*.tar.gz"))
        hint = (f"; extract the inner archives first ({', '.join(tars)}: "
                f"`tar -xzf train.tar.gz` etc. inside {root})" if tars else "")
        raise FileNotFoundError(
            f"{root}: no clip folder(s) {', '.join(absent)} (MELD.Raw holds train_splits/, "
            f"dev_splits_complete/, output_repeated_splits_test/){hint}")
    return root


def reproduce(meld_root: str | os.PathLike, store: str | os.PathLike, out_dir: str | os.PathLike,
              seeds: Sequence[int] = (0, 1, 2), *, meld_dir: str | os.PathLike | None = None,
              audio_model: str | os.PathLike | None = None, audio_layer: int | None = None,
              dan_checkpoint: str | os.PathLike, fps: float | None = None, device: str = "cpu",
              precision: str | None = None,
              workers: int = 4, audio_batch_size: int | None = None,
              video_batch_size: int | None = None, rows: Sequence[str] | None = None,
              progress: bool = True, **train_overrides: Any) -> tuple[Path, list[ExtractReport]]:
    """Extract both modalities for MELD's three splits, then build the tables.

    ``meld_dir``: MELD's annotation CSVs (default: ``meld_root`` when it holds
    ``train_sent_emo.csv``, else ``$AVAFN_MELD_DIR`` / the download cache). Returns the path
    of the markdown table and the extraction reports. ``precision``: "fp32" or "bf16" for
    both extractors (default: bf16 on CUDA, fp32 elsewhere).
    """
    if meld_dir is None and (Path(meld_root) / "train_sent_emo.csv").is_file():
        meld_dir = meld_root
    corpus = load_corpus("meld", meld_dir=None if meld_dir is None else str(meld_dir))
    root = check_meld_root(meld_root, corpus.media_subdirs)
    reports = []
    for modality, model, batch in (("audio", audio_model, audio_batch_size),
                                   ("video", dan_checkpoint, video_batch_size)):
        rep = extract_modality(modality, corpus, root, store, model=model,
                               layer=audio_layer if modality == "audio" else None,
                               device=device, batch_size=batch, precision=precision,
                               fps=fps if modality == "video" else None, splits=list(SPLITS),
                               workers=workers, progress=progress)
        log.info(rep.summary())
        reports.append(rep)
    from avafn.reporting.table import run_table

    table = run_table(corpus, FeatureStore(store), out_dir, list(seeds), device=device,
                      rows=rows, progress=progress, **train_overrides)
    return Path(table), reports
