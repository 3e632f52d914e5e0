"""The demo on a reduced budget, on the real MELD annotations with the real offline MiniLM
encoder (needs ``$AVAFN_MELD_DIR``; CI sets it)."""

import json
import os
from collections import Counter

import pytest
import torch

MELD = os.environ.get("AVAFN_MELD_DIR")
N = 120  # dialogues per split in the reduced-budget run
needs_meld = pytest.mark.skipif(not MELD, reason="AVAFN_MELD_DIR not set (real MELD CSVs)")


def test_configs_demo_json_is_what_the_demo_runs():
    from pathlib import Path

    from avafn.demo import DEMO_SEEDS, DEMO_TRAIN

    cfg = json.loads((Path(__file__).parents[1] / "configs" / "demo.json").read_text())
    assert cfg["train"] == DEMO_TRAIN and cfg["seeds"] == list(DEMO_SEEDS)
    from avafn.config import split_settings

    split_settings({"modalities": ["text"], **cfg["train"]})  # valid settings


@pytest.mark.slow
@needs_meld
def test_demo_reduced_budget_learns_well_above_majority(tmp_path, capsys):
    from avafn.data import load_corpus
    from avafn.demo import DEMO_TRAIN, demo, subset

    n_threads = torch.get_num_threads()
    # reduced budget: the first 120 dialogues of each split (all 114 of dev), smaller batches
    # so that a few epochs make enough steps
    settings = {**DEMO_TRAIN, "batch_size": 8, "lr": 2e-3, "max_epochs": 5, "patience": 5}
    try:
        res = demo(tmp_path / "demo", seeds=[0], meld_dir=MELD, max_dialogues=N,
                   settings=settings, progress=False)
    finally:
        torch.set_num_threads(n_threads)
    out = capsys.readouterr().out
    assert "test weighted F1" in out and "| text |" in out
    # the majority-class baseline computed from the data itself
    corpus = subset(load_corpus("meld", meld_dir=MELD), N)
    test_labels = [u.label for u in corpus.utterances("test")]
    label, count = Counter(test_labels).most_common(1)[0]
    p = count / len(test_labels)
    majority_wf1 = 100 * p * (2 * p / (1 + p))  # F1 of the majority class × its share
    assert res["majority_baseline_test"]["label"] == label
    assert res["majority_baseline_test"]["weighted_f1"] == pytest.approx(majority_wf1)
    f1 = res["test_weighted_f1"]["mean"]
    assert f1 > majority_wf1 + 12, (f1, majority_wf1)
    assert res["dev_weighted_f1"]["mean"] > 40
    rep = json.loads((tmp_path / "demo" / "runs" / "text" / "report.json").read_text())
    assert rep["config"]["modalities"] == ["text"]
    assert rep["store"]["modalities"]["text"]["model_id"].endswith("all-MiniLM-L6-v2")
    assert rep["test"]["n_utterances"] == len(test_labels)
    assert {k: rep["config"]["model"][k] for k in DEMO_TRAIN["model_overrides"]} == \
        DEMO_TRAIN["model_overrides"]
    # resumable: a second call reuses the features and the finished seed
    res2 = demo(tmp_path / "demo", seeds=[0], meld_dir=MELD, max_dialogues=N, settings=settings,
                progress=False, verbose=False)
    assert res2["test_weighted_f1"] == res["test_weighted_f1"]
    assert res2["seconds"]["text_features"] < res["seconds"]["text_features"]
