"""The demo on a reduced budget, on the real MELD annotations with the real offline MiniLM
encoder fine-tuned (needs ``$AVAFN_MELD_DIR``; CI sets it)."""

import json
import logging
import os
from collections import Counter

import pytest
import torch

MELD = os.environ.get("AVAFN_MELD_DIR")
N = 120  # dialogues per split in the reduced-budget run
needs_meld = pytest.mark.skipif(not MELD, reason="AVAFN_MELD_DIR not set (real MELD CSVs)")


def test_the_demo_settings_have_one_source(capsys):
    from avafn import demo as demo_mod
    from avafn.cli import main
    from avafn.config import split_settings
    from avafn.demo import demo_config
    from avafn.training.finetune import FinetuneConfig

    cfg = demo_config()
    assert set(cfg) >= {"seeds", "threads", "finetune", "train", "why"}
    assert not [n for n in dir(demo_mod) if n.startswith("DEMO_")]  # no copy in the code
    FinetuneConfig.from_dict(cfg["finetune"])  # valid settings
    split_settings({"modalities": ["text"], **cfg["train"]})
    assert main(["demo", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == cfg
    # --config replaces whole parts, and unknown parts are refused in one line
    assert demo_config({"seeds": [5]})["seeds"] == [5]
    assert demo_config({"finetune": None})["train"] == cfg["train"]
    with pytest.raises(SystemExit, match="unknown demo setting 'epochs'"):
        main(["demo", "--config", '{"epochs": 3}'])


@pytest.mark.slow
@needs_meld
def test_demo_reduced_budget_learns_well_above_majority(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="avafn")
    from avafn.data import load_corpus
    from avafn.demo import demo, demo_config, predict_command, subset

    n_threads = torch.get_num_threads()
    # reduced budget: the first 120 dialogues of each split (all 114 of dev), one fine-tuning
    # epoch, smaller AVAFN batches so that a few epochs make enough steps
    cfg = demo_config()
    settings = {"finetune": {**cfg["finetune"], "max_epochs": 1, "lr": 1e-4},
                "train": {**cfg["train"], "batch_size": 8, "lr": 2e-3, "max_epochs": 5,
                          "patience": 5}}
    try:
        res = demo(tmp_path / "demo", seeds=[0], meld_dir=MELD, max_dialogues=N,
                   settings=settings, progress=False)
    finally:
        torch.set_num_threads(n_threads)
    out = "\n".join(r.getMessage() for r in caplog.records if r.name == "avafn.demo")
    run = tmp_path / "demo" / "runs" / "text"
    assert "test weighted F1" in out and "| text |" in out
    assert "fine-tuned encoder alone" in out
    # it ends with the command that predicts with the run it made, naming the real folder
    assert out.rstrip().endswith(predict_command(run, tmp_path / "demo"))
    # and its causal twin, for streaming: same settings and seeds, one direction
    from avafn.demo import TWIN, stream_command

    twin = tmp_path / "demo" / "runs" / TWIN
    assert stream_command(twin) in out and res["stream_twin"]["run"] == str(twin)
    twin_cfg = json.loads((twin / "config.json").read_text())
    assert twin_cfg["model"]["bidirectional"] is False and twin_cfg["seeds"] == [0]
    assert twin_cfg["train"] == json.loads((run / "config.json").read_text())["train"]
    assert f"avafn predict {run} " in out and (run / "config.json").is_file()
    # the majority-class baseline computed from the data itself
    corpus = subset(load_corpus("meld", meld_dir=MELD), N)
    test_labels = [u.label for u in corpus.utterances("test")]
    label, count = Counter(test_labels).most_common(1)[0]
    p = count / len(test_labels)
    majority_wf1 = 100 * p * (2 * p / (1 + p))  # F1 of the majority class × its share
    assert res["majority_baseline_test"]["label"] == label
    assert res["majority_baseline_test"]["weighted_f1"] == pytest.approx(majority_wf1)
    f1 = res["test_weighted_f1"]["mean"]
    assert f1 > majority_wf1 + 8, (f1, majority_wf1)
    assert res["dev_weighted_f1"]["mean"] > 35
    assert set(res["encoder_alone_weighted_f1"]) == {"dev", "test"}
    rep = json.loads((run / "report.json").read_text())
    assert rep["config"]["modalities"] == ["text"]
    text_meta = json.loads((run / "config.json").read_text())["extractors"]["text"]
    assert text_meta["config"]["finetune"]["base_model"].endswith("all-MiniLM-L6-v2")
    assert text_meta["model_path"] == str((tmp_path / "demo" / "text-encoder" / "model").resolve())
    assert rep["test"]["n_utterances"] == len(test_labels)
    model = {**rep["config"]["model"], **rep["config"]["model"]["fusion_config"]}  # d_ff
    assert {k: model[k] for k in cfg["train"]["model_overrides"]} == \
        cfg["train"]["model_overrides"]
    # resumable: a second call reuses the encoder, the features and the finished seed
    res2 = demo(tmp_path / "demo", seeds=[0], meld_dir=MELD, max_dialogues=N, settings=settings,
                progress=False, verbose=False)
    assert res2["test_weighted_f1"] == res["test_weighted_f1"]
    assert res2["encoder_alone_weighted_f1"] == res["encoder_alone_weighted_f1"]
    assert res2["seconds"]["finetune"] < res["seconds"]["finetune"] / 5
    assert res2["seconds"]["text_features"] < res["seconds"]["text_features"]
