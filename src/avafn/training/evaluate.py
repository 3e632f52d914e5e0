"""Metrics, reports and plots of a run folder.

``evaluate(run_dir)`` scores every finished seed on dev and on the asked split and writes::

    RUN/report.json   {"dev": M, "test": M, "config": {...}, "store": {...}, "version": "..."}
                      M = {"weighted_f1": {"mean", "std", "per_seed"}, "accuracy": {...},
                           "per_class": {label: {"precision", "recall", "f1", "support"}},
                           "confusion": [[...]], ...}; numbers in percent except support and
                      counts; per-class P/R/F1 are means over seeds; "confusion" is summed over
                      seeds (rows = gold, columns = predicted; "confusion_per_seed" keeps each)
    RUN/report.md     the same numbers as tables
                      (another split than test: RUN/report-<split>.json / .md)
    RUN/confusion_<split>.png, RUN/per_class_<split>.png, RUN/training_curves.png

Means are over seeds, ``std`` is the sample standard deviation (0 for one seed, which the
tables show as the value alone). The run is opened through :class:`avafn.run.Run`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from avafn._version import __version__
from avafn.data.batching import SplitData
from avafn.data.corpus import Corpus
from avafn.io import atomic_write_bytes, atomic_write_json
from avafn.run import Run, RunError
from avafn.store import FeatureStore
from avafn.training.loop import predict, weighted_f1


def mean_std(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "per_seed": [float(x) for x in v]}


def split_metrics(y_true: Sequence[np.ndarray], y_pred: Sequence[np.ndarray],
                  labels: Sequence[str], seeds: Sequence[int]) -> dict:
    """Metrics of one split over seeds (``y_true[i]``, ``y_pred[i]`` for ``seeds[i]``)."""
    k = len(labels)
    f1s, accs, confs, pcs = [], [], [], []
    for yt, yp in zip(y_true, y_pred):
        f1s.append(weighted_f1(yt, yp))
        accs.append(100.0 * float(accuracy_score(yt, yp)))
        confs.append(confusion_matrix(yt, yp, labels=list(range(k))))
        p, r, f, s = precision_recall_fscore_support(yt, yp, labels=list(range(k)),
                                                     zero_division=0)
        pcs.append((p * 100, r * 100, f * 100, s))
    per_class = {}
    for i, lab in enumerate(labels):
        per_class[lab] = {
            "precision": float(np.mean([pc[0][i] for pc in pcs])),
            "recall": float(np.mean([pc[1][i] for pc in pcs])),
            "f1": float(np.mean([pc[2][i] for pc in pcs])),
            "support": int(pcs[0][3][i]),
            "f1_per_seed": [float(pc[2][i]) for pc in pcs],
        }
    majority = int(np.bincount(y_true[0], minlength=k).argmax())
    return {
        "weighted_f1": mean_std(f1s),
        "accuracy": mean_std(accs),
        "per_class": per_class,
        "confusion": np.sum(confs, axis=0).astype(int).tolist(),
        "confusion_per_seed": [c.astype(int).tolist() for c in confs],
        "labels": list(labels),
        "seeds": [int(s) for s in seeds],
        "n_utterances": len(y_true[0]),
        "majority_baseline": {
            "label": labels[majority],
            "weighted_f1": weighted_f1(y_true[0], np.full_like(y_true[0], majority)),
            "accuracy": 100.0 * float(np.mean(y_true[0] == majority)),
        },
    }


def _split_data(run: Run, corpus: Corpus, store: FeatureStore, split: str) -> SplitData:
    return SplitData(corpus.dialogues(split), store, run.modalities, run.labels, run.widths)


def _load(run_dir: str | Path | Run, corpus: Corpus | None, store: FeatureStore | None,
          device: str) -> tuple[Run, list, list[int], Corpus, FeatureStore]:
    """The run, its models and their seeds, and the corpus and store to score on (the run's
    own, found from its folder, unless given)."""
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    models = run.models(device)
    store = run.store() if store is None else store
    if corpus is None:
        corpus = run.corpus()
    run.check_labels(corpus.labels)
    return run, models, run.finished_seeds(), corpus, store


def _metrics(run: Run, models: list, seeds: list[int], data: SplitData,
             drop: Mapping[str, float] | None, drop_seed: int, device: str) -> dict:
    if drop:
        data = data.with_dropped(drop, drop_seed)
    yts, yps = [], []
    for model in models:
        yt, yp, _ = predict(model, data, device)
        yts.append(yt), yps.append(yp)
    out = split_metrics(yts, yps, run.labels, seeds)
    if drop:
        out["dropped"] = {m: float(f) for m, f in drop.items()}
    return out


def score(run_dir: str | Path, split: str = "test", corpus: Corpus | None = None,
          store: FeatureStore | None = None, drop: Mapping[str, float] | None = None,
          drop_seed: int = 0, device: str = "cpu") -> dict:
    """Metrics of every finished seed of a run on ``split`` (no files written).

    ``drop={"video": 0.5}`` marks the modality missing for that fraction of the split's
    utterances (the same utterances for every seed, drawn with ``drop_seed``).
    """
    run, models, seeds, corpus, store = _load(run_dir, corpus, store, device)
    return _metrics(run, models, seeds, _split_data(run, corpus, store, split), drop,
                    drop_seed, device)


def report_paths(run_dir: str | Path, split: str = "test") -> tuple[Path, Path]:
    """``(report.json, report.md)`` of a split: ``report.*`` for test, ``report-<split>.*``
    for any other, so that scoring dev or train never overwrites the test report."""
    run = Path(run_dir)
    stem = "report" if split == "test" else f"report-{split}"
    return run / f"{stem}.json", run / f"{stem}.md"


def evaluate(run_dir: str | Path, split: str = "test", corpus: Corpus | None = None,
             store: FeatureStore | None = None, drop: Mapping[str, float] | None = None,
             device: str = "cpu", plots: bool = True) -> dict:
    """Score a run on dev and ``split`` and write its report (:func:`report_paths`) and plots.

    With ``drop`` (robustness evaluation, see :func:`score`) nothing of the main report is
    overwritten: the result goes to ``robustness/<split>-<modality>-<fraction>.json``.
    """
    r, models, seeds, corpus, store = _load(run_dir, corpus, store, device)
    run = r.path
    if split not in corpus.splits:
        raise RunError(f"no split {split!r} in the corpus (splits: {', '.join(corpus.splits)})")
    if drop:
        res = _metrics(r, models, seeds, _split_data(r, corpus, store, split), drop, 0, device)
        tag = "-".join(f"{m}-{f:.2f}" for m, f in sorted(drop.items()))
        atomic_write_json(run / "robustness" / f"{split}-{tag}.json", res)
        return res
    # the models are loaded once for both splits
    report: dict[str, Any] = {
        s: _metrics(r, models, seeds, _split_data(r, corpus, store, s), None, 0, device)
        for s in dict.fromkeys(("dev", split))}
    report["config"] = r.summary()
    report["store"] = {**r.store_fingerprint, "extractors": r.extractors}
    report["version"] = __version__
    histories = _seed_histories(run, seeds)
    report["training"] = _training_summary(histories)
    js, md = report_paths(run, split)
    atomic_write_json(js, report)
    atomic_write_bytes(md, report_markdown(report, run.name).encode())
    if plots:
        import avafn.reporting.plots as P

        for s in [s for s in dict.fromkeys(("dev", split)) if s in report]:
            P.plot_confusion(report[s]["confusion"], r.labels, run / f"confusion_{s}.png",
                             title=f"{run.name}: {s} confusion (summed over seeds)")
            P.plot_per_class(report[s]["per_class"], run / f"per_class_{s}.png",
                             title=f"{run.name}: {s} per-class precision / recall / F1")
        P.plot_training_curves({s: h["history"] for s, h in histories.items()},
                               run / "training_curves.png", title=run.name)
    return report


def _seed_histories(run: Path, seeds: list[int]) -> dict[int, dict]:
    """``history.json`` of every finished seed that has one."""
    out = {}
    for s in seeds:
        p = run / f"seed-{s}" / "history.json"
        if p.exists():
            out[s] = json.loads(p.read_text())
    return out


def _training_summary(histories: dict[int, dict]) -> dict:
    out = {}
    for s, h in histories.items():
        out[str(s)] = {k: h[k] for k in ("best_epoch", "best_dev_f1", "epochs_run",
                                         "stopped_by")}
        out[str(s)]["seconds"] = float(sum(r["seconds"] for r in h["history"]))
    return out


def fmt(ms: dict) -> str:
    """``"57.61 ± 0.42"`` for a ``{"mean", "std", "per_seed"}`` dict; one seed has no spread
    to show: just ``"57.61"``."""
    if len(ms.get("per_seed", ())) == 1:
        return f"{ms['mean']:.2f}"
    return f"{ms['mean']:.2f} ± {ms['std']:.2f}"


def report_markdown(report: dict, name: str = "run") -> str:
    cfg = report.get("config", {})
    lines = [f"# Report: {name}", "",
             (f"avafn {report.get('version')}; modalities {', '.join(cfg.get('modalities', []))}; "
             f"ablations {', '.join(cfg.get('ablations', [])) or 'none'}; "
             f"seeds {cfg.get('seeds')}. Model selected on dev weighted F1."), "",
             ("| split | weighted F1 (%) | accuracy (%) | per seed (weighted F1) | "
             "majority-class weighted F1 |"), "|---|---|---|---|---|"]
    splits = [s for s in report if isinstance(report[s], dict) and "weighted_f1" in report[s]]
    for s in splits:
        r = report[s]
        lines.append(f"| {s} | {fmt(r['weighted_f1'])} | {fmt(r['accuracy'])} | "
                     + ", ".join(f"{x:.2f}" for x in r["weighted_f1"]["per_seed"])
                     + f" | {r['majority_baseline']['weighted_f1']:.2f} |")
    for s in splits:
        r = report[s]
        labels = list(r.get("labels") or cfg.get("labels") or r["per_class"])
        lines += ["", f"## {s}: per class (mean over seeds)", "",
                  "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for lab in labels:
            c = r["per_class"][lab]
            lines.append(f"| {lab} | {c['precision']:.2f} | {c['recall']:.2f} | {c['f1']:.2f} | "
                         f"{c['support']} |")
        lines += ["", (f"## {s}: confusion matrix (rows gold, columns predicted; summed over "
                  "seeds)"), "", "| gold \\ pred | " + " | ".join(labels) + " |",
                  "|---" * (len(labels) + 1) + "|"]
        for lab, row in zip(labels, r["confusion"]):
            lines.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    tr = report.get("training", {})
    if tr:
        lines += ["", "## Training", "", ("| seed | best epoch | best dev F1 | epochs run | "
                  "stopped by | seconds |"), "|---|---|---|---|---|---|"]
        for s, t in tr.items():
            lines.append(f"| {s} | {t['best_epoch']} | {t['best_dev_f1']:.2f} | "
                         f"{t['epochs_run']} | {t['stopped_by']} | {t['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def robustness(run_dir: str | Path, modalities: Sequence[str] | None = None,
               fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), split: str = "test",
               corpus: Corpus | None = None, store: FeatureStore | None = None,
               seed: int = 0, device: str = "cpu", out: str | Path | None = None) -> dict:
    """Weighted F1 vs the fraction of utterances with one modality removed, per modality.

    Returns ``{modality: {"fractions": [...], "weighted_f1": [{"mean", "std", "per_seed"}]}}``,
    writes it to ``RUN/robustness/<split>.json`` and the plot to ``out`` (default
    ``RUN/robustness_<split>.png``).
    """
    run = Path(run_dir)
    # models and the split's features are loaded once, not once per (modality, fraction)
    r, models, seeds, corpus, store = _load(run, corpus, store, device)
    data = _split_data(r, corpus, store, split)
    mods = list(modalities or r.modalities)
    res: dict[str, Any] = {}
    for m in mods:
        vals = [_metrics(r, models, seeds, data, {m: f}, seed, device)["weighted_f1"]
                for f in fractions]
        res[m] = {"fractions": [float(f) for f in fractions], "weighted_f1": vals}
    atomic_write_json(run / "robustness" / f"{split}.json", res)
    import avafn.reporting.plots as P

    P.plot_robustness(res, Path(out) if out else run / f"robustness_{split}.png",
                      title=f"{run.name}: {split} weighted F1 with a modality removed")
    return res
