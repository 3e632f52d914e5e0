"""The real-data table: real emotional speech (RAVDESS) and real faces (FER2013) through avafn.

Reads ``$AVAFN_REAL_DIR`` (``ravdess/``, ``fer2013/``, ``diarization/``; never part of the
repository), caches every extracted feature store, fold store, trained run and table cell
under ``--work`` (default ``/tmp/avafn-real``: run it again and finished work is reused),
prints one JSON object and writes the Markdown table (``--out``)::

    nice python benchmarks/real_table.py --out real_table.md
    nice python benchmarks/real_table.py --parts ravdess --sets eGeMAPSv02 --folds 6

Protocols (the folds are recorded in every run's ``config.json`` and in the JSON):

- RAVDESS speech, 1,440 clips, 24 actors: ``--folds`` (6) actor-independent folds of
  consecutive actors (4 each: 2 female, 2 male); fold i tests its actors, fold i+1 is dev,
  the rest train. 8 classes, and MELD's 7 (neutral + calm -> neutral, ...). openSMILE
  functionals as avafn extracts them (``opensmile`` extractor: 16 kHz mono).
  Logistic regression: standardised, C = 0.1, fitted on train + dev actors (no selection).
  AVAFN: audio only, every clip a one-utterance dialogue (no context to use), features
  standardised on the fold's train actors, dev weighted F1 selects the epoch.
- FER2013 PrivateTest, 3,589 faces: the shipped mini-Xception's own 7-way head on the
  already cropped faces (``--fer-input whole``), and through the face detector on the same
  faces enlarged 2x and padded into grey 192x192 frames; LR / AVAFN on its pooled 128-d
  features over ``--folds`` label-stratified folds (no identities in FER2013).
- Majority: the most frequent training label of each fold.
- Cross-corpus: AVAFN on raw eGeMAPS of all RAVDESS actors (MELD-7; dev = fold 0's actors)
  predicts the two real conversations of ``diarization/`` through ``avafn predict`` (audio
  alone: VAD + diarization find the utterances).

Figures are mean ± sample std over folds (and seeds).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from avafn.data.acted import fold_store, read_folder, read_ravdess
from avafn.extract.fer import FER_LABELS, FerEncoder, FerFacesExtractor
from avafn.extract.job import run_extraction
from avafn.io import atomic_write_json
from avafn.store import FeatureStore
from avafn.training.evaluate import score

#: published figures checked against their source (see the README's real-data section)
PUBLISHED = [
    {"data": "FER2013", "what": "mini-Xception (the shipped network), validation = the last "
     "20 % of fer2013.csv (PublicTest + PrivateTest), the checkpoint chosen on it",
     "accuracy": 66.0, "source": "Arriaga et al. 2017, arXiv:1710.07557; file name "
     "fer2013_mini_XCEPTION.102-0.66.hdf5 and split_data() in oarriaga/face_classification"},
    {"data": "FER2013", "what": "human accuracy", "accuracy": 65.0,
     "source": "Goodfellow et al. 2013, 'Challenges in representation learning' (±5 %)"},
]


def _cached(path: Path, fn):
    if path.is_file():
        return json.loads(path.read_text())
    out = fn()
    atomic_write_json(path, out)
    return out


def _ms(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": round(float(v.mean()), 2), "std": round(float(v.std(ddof=1)), 2)
            if len(v) > 1 else 0.0, "per_fold": [round(float(x), 2) for x in v]}


def _xy(corpus, store, split_names, modality="audio"):
    utts = [u for s in split_names for u in corpus.utterances(s)]
    x, present = store.load(modality, [u.uid for u in utts])
    y = np.array([corpus.labels.index(u.label) for u in utts])
    return x[present], y[present]


def _scores(y, p, k) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    return {"accuracy": 100 * accuracy_score(y, p),
            "uar": 100 * recall_score(y, p, labels=list(range(k)), average="macro",
                                      zero_division=0),
            "weighted_f1": 100 * f1_score(y, p, average="weighted", zero_division=0)}


def lr_cell(corpus, store, modality="audio") -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = _xy(corpus, store, ["train", "dev"], modality)
    xte, yte = _xy(corpus, store, ["test"], modality)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    clf.fit(xtr, ytr)
    return _scores(yte, clf.predict(xte), len(corpus.labels))


def majority_cell(corpus, store, modality="audio") -> dict:
    _, ytr = _xy(corpus, store, ["train"], modality)
    _, yte = _xy(corpus, store, ["test"], modality)
    return _scores(yte, np.full_like(yte, np.bincount(ytr).argmax()), len(corpus.labels))


def avafn_cell(corpus, store, run_dir: Path, seeds, modality="audio", max_epochs=60) -> dict:
    from avafn.training.loop import train

    settings = {"modalities": [modality], "max_epochs": max_epochs, "patience": 10,
                "bucket": True}
    train(corpus, store, run_dir, settings, seeds=seeds, progress=False)
    rep = score(run_dir, "test", corpus, store)
    recalls = [c["recall"] for c in rep["per_class"].values()]
    return {"accuracy": rep["accuracy"]["mean"], "uar": float(np.mean(recalls)),
            "weighted_f1": rep["weighted_f1"]["mean"], "seeds": rep["seeds"]}


def summarise(cells: list[dict]) -> dict:
    return {k: _ms([c[k] for c in cells]) for k in ("accuracy", "uar", "weighted_f1")}


# ------------------------------------------------------------------------------ RAVDESS
def ravdess_part(args, work: Path) -> dict:
    from avafn.extract.opensmile import OpenSmileExtractor

    root = Path(args.real_dir) / "ravdess"
    base_corpus = read_ravdess(root, k=args.folds, fold=0)
    out = {}
    for fs in args.sets:
        base = FeatureStore(work / f"ravdess-{fs}")
        t = time.perf_counter()
        rep = run_extraction(base_corpus, None, base, OpenSmileExtractor(fs), progress=False)
        extract_s = time.perf_counter() - t
        for task in ("8-class", "meld7"):
            rows: dict[str, list] = {"majority": [], "lr": [], "avafn": []}
            folds = None
            for fold in range(args.folds):
                c = read_ravdess(root, meld7=task == "meld7", k=args.folds, fold=fold)
                folds = c.source["folds"]["groups"]
                raw = fold_store(base, c, work / "folds" / fs / f"f{fold}")
                z = fold_store(base, c, work / "folds" / f"{fs}-z" / f"f{fold}",
                               standardize=True)
                name = f"ravdess-{fs}-{task}-f{fold}"
                rows["majority"].append(_cached(work / "cells" / f"{name}-majority.json",
                                                lambda c=c, raw=raw: majority_cell(c, raw)))
                rows["lr"].append(_cached(work / "cells" / f"{name}-lr.json",
                                          lambda c=c, raw=raw: lr_cell(c, raw)))
                if "avafn" in args.models and fs in args.avafn_sets:
                    rows["avafn"].append(_cached(
                        work / "cells" / f"{name}-avafn.json",
                        lambda c=c, z=z, name=name: avafn_cell(c, z, work / "runs" / name,
                                                               args.seeds, "audio",
                                                               args.max_epochs)))
                print(f"{name}: " + ", ".join(f"{m} {r[-1]['accuracy']:.1f}"
                                              for m, r in rows.items() if r),
                      file=sys.stderr, flush=True)
            out[f"{fs}/{task}"] = {
                "feature_set": fs, "task": task, "folds": folds,
                "extraction": {"clips": rep.n_written, "seconds": round(extract_s, 1)},
                **{m: summarise(r) for m, r in rows.items() if r}}
    return out


# ------------------------------------------------------------------------------ FER2013
def _padded_frames(root: Path, dst: Path, scale: int = 2, side: int = 192) -> Path:
    """Each 48x48 face enlarged ``scale``x and centred in a grey ``side``x``side`` frame."""
    import cv2

    if (dst / "labels.csv").is_file():
        return dst
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        g = cv2.imread(str(root / r["path"]), cv2.IMREAD_GRAYSCALE)
        g = cv2.resize(g, (g.shape[1] * scale, g.shape[0] * scale),
                       interpolation=cv2.INTER_LINEAR)
        frame = np.full((side, side), 128, np.uint8)
        y0, x0 = (side - g.shape[0]) // 2, (side - g.shape[1]) // 2
        frame[y0:y0 + g.shape[0], x0:x0 + g.shape[1]] = g
        rel = Path(r["path"]).with_suffix(".png")
        (dst / rel.parent).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst / rel), frame)
        out.append((rel.as_posix(), r["label"]))
    with open(dst / "labels.csv.tmp", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(out)
    os.replace(dst / "labels.csv.tmp", dst / "labels.csv")
    return dst


def _head_scores(corpus, store) -> dict:
    """The pretrained head's own prediction (argmax of the stored logits) per test fold."""
    x, y = _xy(corpus, store, ["test"], "video")
    names = list(FER_LABELS)
    # corpus labels are FER_LABELS in the network's order
    assert list(corpus.labels) == names
    return _scores(y, x.argmax(1), len(names))


def fer_part(args, work: Path) -> dict:
    root = Path(args.real_dir) / "fer2013"
    base_corpus = read_folder(root, k=args.folds, fold=0, labels=FER_LABELS)
    n = len(base_corpus.utterances())
    stores = {}
    timing = {}
    for layer in ("logits", "pooled"):
        st = FeatureStore(work / f"fer-{layer}")
        t = time.perf_counter()
        run_extraction(base_corpus, None, st,
                       FerFacesExtractor(FerEncoder(layer), face_input="whole"), progress=False)
        timing[layer] = round(time.perf_counter() - t, 1)
        stores[layer] = st
    # through the face detector: the same faces padded into frames
    padded = _padded_frames(root, work / "fer-padded")
    pcorpus = read_folder(padded, k=args.folds, fold=0, labels=FER_LABELS)
    pstore = FeatureStore(work / "fer-detected-logits")
    run_extraction(pcorpus, None, pstore, FerFacesExtractor(FerEncoder("logits")),
                   progress=False)
    xs, present = pstore.load("video", [u.uid for u in pcorpus.utterances()])
    y = np.array([FER_LABELS.index(u.label) for u in pcorpus.utterances()])
    detected = present.astype(bool)
    pred = np.where(detected, xs.argmax(1), -1)
    whole_x, _ = stores["logits"].load("video", [u.uid for u in base_corpus.utterances()])
    yw = np.array([FER_LABELS.index(u.label) for u in base_corpus.utterances()])
    out = {
        "faces": n,
        "head_whole": _scores(yw, whole_x.argmax(1), 7),
        "head_detected": {"detection_rate": round(100 * float(detected.mean()), 2),
                          "accuracy_of_detected": round(100 * float(
                              (pred[detected] == y[detected]).mean()), 2),
                          "accuracy_all_missed_wrong": round(100 * float((pred == y).mean()), 2),
                          "frames": "face x2 (96 px) centred in grey 192x192, opencv-haar"},
        "extraction_seconds": timing,
    }
    rows: dict[str, list] = {"majority": [], "head": [], "lr": [], "avafn": []}
    for fold in range(args.folds):
        c = read_folder(root, k=args.folds, fold=fold, labels=FER_LABELS)
        lg = fold_store(stores["logits"], c, work / "folds" / "fer-logits" / f"f{fold}")
        raw = fold_store(stores["pooled"], c, work / "folds" / "fer-pooled" / f"f{fold}")
        z = fold_store(stores["pooled"], c, work / "folds" / "fer-pooled-z" / f"f{fold}",
                       standardize=True)
        name = f"fer-f{fold}"
        rows["head"].append(_cached(work / "cells" / f"{name}-head.json",
                                    lambda c=c, lg=lg: _head_scores(c, lg)))
        rows["majority"].append(_cached(work / "cells" / f"{name}-majority.json",
                                        lambda c=c, raw=raw: majority_cell(c, raw, "video")))
        rows["lr"].append(_cached(work / "cells" / f"{name}-lr.json",
                                  lambda c=c, raw=raw: lr_cell(c, raw, "video")))
        if "avafn" in args.models:
            rows["avafn"].append(_cached(
                work / "cells" / f"{name}-avafn.json",
                lambda c=c, z=z, name=name: avafn_cell(c, z, work / "runs" / name, args.seeds,
                                                       "video", args.max_epochs)))
        print(f"{name}: " + ", ".join(f"{m} {r[-1]['accuracy']:.1f}" for m, r in rows.items()
                                      if r), file=sys.stderr, flush=True)
    out["folds"] = {m: summarise(r) for m, r in rows.items() if r}
    return out


# ------------------------------------------------------------------------- cross-corpus
def cross_part(args, work: Path) -> dict:
    """AVAFN on eGeMAPS of all 24 actors (MELD-7; standardised, the statistics recorded with
    the run), then ``avafn predict`` on real conversations (audio only)."""
    from avafn.data.acted import OneUtteranceCorpus
    from avafn.data.corpus import Dialogue
    from avafn.training.loop import train

    root = Path(args.real_dir) / "ravdess"
    base = FeatureStore(work / "ravdess-eGeMAPSv02")
    c0 = read_ravdess(root, meld7=True, k=args.folds, fold=0)
    splits: dict[str, list] = {"train": [], "dev": []}
    for u in c0.utterances():
        s = "dev" if u.split == "test" else "train"  # fold 0's actors select; all others train
        splits[s].append(Dialogue(s, u.dialogue_id, [dataclasses.replace(u, split=s)]))
    corpus = OneUtteranceCorpus("ravdess-meld7-all", list(c0.labels), splits, pre_cut=True,
                                reader="ravdess-meld7")
    corpus.source = {**c0.source, "folds": None,
                     "split": "dev = fold 0's actors, train = all other actors"}
    store = fold_store(base, corpus, work / "cross-store", standardize=True)
    run = work / "runs" / "cross-ravdess-meld7"
    train(corpus, store, run, {"modalities": ["audio"], "max_epochs": args.max_epochs,
                               "patience": 10, "bucket": True}, seeds=[0], progress=False)
    dev = score(run, "dev", corpus, store)
    out = {"run": str(run), "dev_accuracy": dev["accuracy"]["mean"],
           "dev_weighted_f1": dev["weighted_f1"]["mean"], "conversations": {}}
    for wav in sorted((Path(args.real_dir) / "diarization").glob("*.wav")):
        pdir = work / "predict" / wav.stem
        cmd = ["avafn", "predict", str(run), "--video", str(wav), "--out", str(pdir),
               "--no-html", "--no-progress"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            out["conversations"][wav.name] = {"error": res.stderr.strip().splitlines()[-1:]}
            continue
        preds = json.loads((pdir / "predictions.json").read_text())
        items = preds["utterances"] if isinstance(preds, dict) else preds
        labels = Counter(p.get("prediction") or p.get("label") for p in items)
        out["conversations"][wav.name] = {"utterances": len(items), "labels": dict(labels),
                                          "command": " ".join(cmd)}
    detected = work / "fer-detected-logits"
    if (detected / "video" / "meta.json").is_file():  # written by the fer part
        out["video_run"] = _video_run(args, work, FeatureStore(detected))
    return out


def _video_run(args, work: Path, detected: FeatureStore) -> dict:
    """AVAFN, video only, on the FER2013 faces found by the face detector in padded frames
    (mini-Xception logits, standardised; fold 0's dev for selection): a face model that
    ``avafn predict RUN --video FILE`` runs on any video, offline."""
    from avafn.training.loop import train

    corpus = read_folder(work / "fer-padded", k=args.folds, fold=0, labels=FER_LABELS)
    store = fold_store(detected, corpus, work / "cross-video-store", standardize=True)
    run = work / "runs" / "cross-fer-video"
    train(corpus, store, run, {"modalities": ["video"], "max_epochs": args.max_epochs,
                               "patience": 10, "bucket": True}, seeds=[0], progress=False)
    rep = score(run, "test", corpus, store)
    return {"run": str(run), "test_accuracy_fold0": rep["accuracy"]["mean"],
            "test_weighted_f1_fold0": rep["weighted_f1"]["mean"],
            "note": "faces missed by the detector are a missing modality (learned embedding)"}


# ----------------------------------------------------------------------------- markdown
def _f(d: dict) -> str:
    return f"{d['mean']:.1f} ± {d['std']:.1f}"


def markdown(res: dict) -> str:
    lines = ["| data | task | features | model | accuracy % | UAR % | weighted F1 % |",
             "|---|---|---|---|---|---|---|"]
    for r in res.get("ravdess", {}).values():
        for m in ("majority", "lr", "avafn"):
            if m in r:
                name = {"majority": "majority class", "lr": "logistic regression (C 0.1)",
                        "avafn": "AVAFN, audio only (one-utterance dialogues)"}[m]
                lines.append(f"| RAVDESS speech | {r['task']} | {r['feature_set']} | {name} | "
                             f"{_f(r[m]['accuracy'])} | {_f(r[m]['uar'])} | "
                             f"{_f(r[m]['weighted_f1'])} |")
    fer = res.get("fer")
    if fer:
        h = fer["head_whole"]
        lines.append(f"| FER2013 PrivateTest | 7-class | cropped faces, all {fer['faces']} | "
                     f"mini-Xception's own head | {h['accuracy']:.1f} | {h['uar']:.1f} | "
                     f"{h['weighted_f1']:.1f} |")
        d = fer["head_detected"]
        lines.append(f"| FER2013 PrivateTest | 7-class | padded frames, opencv-haar "
                     f"({d['detection_rate']:.1f} % detected) | mini-Xception's own head | "
                     f"{d['accuracy_of_detected']:.1f} of detected, "
                     f"{d['accuracy_all_missed_wrong']:.1f} of all | | |")
        for m, name in (("majority", "majority class"), ("head", "mini-Xception's own head"),
                        ("lr", "logistic regression (C 0.1)"),
                        ("avafn", "AVAFN, video only (one-image dialogues)")):
            if m in fer["folds"]:
                r = fer["folds"][m]
                feats = "pooled 128-d" if m in ("lr", "avafn") else "—"
                lines.append(f"| FER2013 PrivateTest, {len(r['accuracy']['per_fold'])} "
                             f"stratified folds | 7-class | {feats} | {name} | "
                             f"{_f(r['accuracy'])} | {_f(r['uar'])} | {_f(r['weighted_f1'])} |")
    for p in PUBLISHED:
        lines.append(f"| {p['data']} (published) | 7-class | — | {p['what']} | "
                     f"{p['accuracy']:.1f} | | | ")
    cross = res.get("cross")
    if cross:
        lines += ["", ("Cross-corpus (RAVDESS MELD-7 -> real conversations, no labels: a "
                       "domain shift from acted single sentences to spontaneous talk):"), ""]
        for name, c in cross["conversations"].items():
            lines.append(f"- {name}: {c}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real-dir", default=os.environ.get("AVAFN_REAL_DIR"))
    p.add_argument("--work", default="/tmp/avafn-real")
    p.add_argument("--out", default="real_table.md")
    p.add_argument("--parts", default="ravdess,fer,cross")
    p.add_argument("--sets", default="eGeMAPSv02,ComParE_2016")
    p.add_argument("--models", default="majority,lr,avafn")
    p.add_argument("--avafn-sets", default="eGeMAPSv02,ComParE_2016",
                   help="the RAVDESS feature sets AVAFN is trained on (LR: all of --sets)")
    p.add_argument("--folds", type=int, default=6)
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-epochs", type=int, default=60, help="AVAFN epochs at most (patience "
                   "10 on dev weighted F1)")
    args = p.parse_args(argv)
    if not args.real_dir or not Path(args.real_dir).is_dir():
        print("real_table: give --real-dir or $AVAFN_REAL_DIR (ravdess/, fer2013/, "
              "diarization/)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    args.sets = [s for s in args.sets.split(",") if s]
    args.models = [s for s in args.models.split(",") if s]
    args.avafn_sets = [s for s in args.avafn_sets.split(",") if s]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "load_average_start": os.getloadavg()},
                 "folds": args.folds, "seeds": args.seeds}
    parts = args.parts.split(",")
    if "ravdess" in parts:
        res["ravdess"] = ravdess_part(args, work)
    if "fer" in parts:
        res["fer"] = fer_part(args, work)
    if "cross" in parts:
        res["cross"] = cross_part(args, work)
    res["published"] = PUBLISHED
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["machine"]["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(markdown(res))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
