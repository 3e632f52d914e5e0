"""Run folders: self-describing model folders, pickle-free state, the Run object, the earlier
layout's conversion, portability (another working directory, a copied folder)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from train_synth import make_corpus, make_store

from avafn.checkpoint import (
    CheckpointError,
    from_pretrained,
    load_state,
    save_pretrained,
    save_state,
)
from avafn.cli import main
from avafn.model import AVAFN, AVAFNConfig
from avafn.run import Run, RunError, convert_run
from avafn.training.evaluate import fmt
from avafn.training.loop import train

SMALL = {"d_model": 8, "d_ff": 16, "d_context": 8, "d_party": 8, "d_emotion": 8, "d_att": 8}


def _avafn(seed=0, **kw):
    torch.manual_seed(seed)
    return AVAFN(AVAFNConfig(modalities=("audio",), input_dims={"audio": 5}, n_classes=3,
                             n_parties=2, **{**SMALL, **kw}))


def _out(model):
    g = torch.Generator().manual_seed(1)
    feats = {"audio": torch.randn(1, 4, 5, generator=g)}
    present = {"audio": torch.ones(1, 4, dtype=torch.bool)}
    with torch.no_grad():
        return model.eval()(feats, present, torch.tensor([[0, 1, 0, 1]]),
                            torch.ones(1, 4, dtype=torch.bool))["logits"]


def test_model_folder_round_trip(tmp_path):
    m = _avafn(bidirectional=False)
    save_pretrained(tmp_path / "m", m)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model"] == "avafn" and cfg["config"]["bidirectional"] is False
    assert cfg["config"]["d_model"] == 8 and cfg["avafn_version"]
    back = from_pretrained(tmp_path / "m")
    assert isinstance(back, AVAFN) and not back.training
    assert torch.equal(_out(m), _out(back))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"m/model.safetensors: damaged"):
        from_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="Linear is not a registered model"):
        save_pretrained(tmp_path / "x", torch.nn.Linear(2, 2))

    class Unregistered(AVAFN):
        pass

    with pytest.raises(CheckpointError, match="Unregistered is not a registered model"):
        save_pretrained(tmp_path / "x", Unregistered(m.cfg))


def test_conversation_model_seam(tmp_path):
    """The typed seam: a ConversationModel saves and loads itself, its forward gives a
    ModelOutput (also read as a mapping), and loading through the wrong class is refused."""
    from avafn.model.base import ConversationModel, ModelOutput
    from avafn.model.registry import MODELS

    m = _avafn(bidirectional=False)
    assert isinstance(m, ConversationModel) and type(m).name == "avafn"
    assert MODELS.get("avafn") is AVAFN and m.causal
    with torch.no_grad():
        out = m.eval()({"audio": torch.randn(1, 3, 5)}, None, torch.tensor([[0, 1, 0]]),
                       torch.ones(1, 3, dtype=torch.bool), return_states=True)
    assert isinstance(out, ModelOutput) and out.loss is None
    assert out["logits"] is out.logits and out["context_attention"] is out.attention
    assert {"u", "E", "q_s"} <= set(out.states) and out["E"] is out.states["E"]
    m.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == "avafn"
    back = AVAFN.from_pretrained(tmp_path / "m")
    assert isinstance(back, AVAFN) and torch.equal(_out(m), _out(back))
    assert isinstance(ConversationModel.from_pretrained(tmp_path / "m"), AVAFN)

    class Other(AVAFN):
        pass

    with pytest.raises(CheckpointError, match="holds a 'avafn' model"):
        Other.from_pretrained(tmp_path / "m")


def test_training_state_round_trip_without_pickle(tmp_path):
    m = _avafn()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    feats = {"audio": torch.randn(1, 4, 5)}
    present = {"audio": torch.ones(1, 4, dtype=torch.bool)}
    m.train()(feats, present, torch.tensor([[0, 1, 0, 1]]),
              torch.ones(1, 4, dtype=torch.bool))["logits"].sum().backward()
    opt.step()
    st = {"optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "best": {
        "dev_f1": -float("inf"), "state": None}, "history": [{"epoch": 1, "f1": 3.5}],
        "epoch": 1}
    save_state(tmp_path / "s.safetensors", st)
    raw = (tmp_path / "s.safetensors").read_bytes()
    assert b"pickle" not in raw and raw[8:9] == b"{"  # a safetensors header, no pickle stream
    back = load_state(tmp_path / "s.safetensors")
    assert back["best"]["dev_f1"] == -float("inf") and back["history"] == st["history"]
    assert torch.equal(back["rng"], st["rng"])
    opt2 = torch.optim.Adam(m.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["betas"] == tuple(b["param_groups"][0]["betas"])
    assert all(torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])
               for k in a["state"])
    (tmp_path / "s.safetensors").write_bytes(raw[:50])
    with pytest.raises(CheckpointError, match="damaged training state"):
        load_state(tmp_path / "s.safetensors")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny run trained on a manifest + store in ``ROOT/data``, run in ``ROOT/runs/r``."""
    root = tmp_path_factory.mktemp("runs")
    corpus = make_corpus()
    store = make_store(root / "data" / "store", corpus)
    rows = ["dialogue_id,turn,speaker,label,split"]
    rows += [f"{u.dialogue_id},{u.turn},{u.speaker},{u.label},{u.split}"
             for u in corpus.utterances()]
    (root / "data" / "m.csv").write_text("\n".join(rows) + "\n")
    run = train(corpus, store, root / "runs" / "r",
                {"model": "tiny", "lr": 1e-2, "max_epochs": 2, "batch_size": 8,
                 "dataset": str(root / "data" / "m.csv")}, seeds=[0], progress=False)
    return root, run


def test_run_opens_from_anywhere_and_after_being_copied(made, tmp_path, monkeypatch, capsys):
    root, run = made
    desc = json.loads((run / "config.json").read_text())
    assert desc["provenance"]["dataset"] == os.path.join("..", "..", "data", "m.csv")
    assert desc["provenance"]["store"] == os.path.join("..", "..", "data", "store")
    copy = tmp_path / "moved"
    shutil.copytree(root, copy)
    monkeypatch.chdir(tmp_path / "..")  # another working directory
    r = Run.open(copy / "runs" / "r")
    assert r.store().root.resolve() == (copy / "data" / "store").resolve()
    assert main(["evaluate", str(copy / "runs" / "r")]) == 0
    assert "weighted F1" in capsys.readouterr().out
    # a changed manifest is refused by its hash; a missing store asks for --store
    m = copy / "data" / "m.csv"
    m.write_text(m.read_text().replace("calm", "happy", 1))
    with pytest.raises(RunError, match="m.csv: not the manifest the run was trained on"):
        r.corpus()
    # the run folder alone: the store's recorded absolute path is the fallback
    gone = tmp_path / "alone"
    shutil.copytree(copy / "runs" / "r", gone)
    alone = Run.open(gone)
    assert alone.store().root.resolve() == (root / "data" / "store").resolve()
    elsewhere = dataclasses.replace(alone, config=dataclasses.replace(alone.config, store={
        **alone.store_fingerprint, "root": str(tmp_path / "gone")}))
    with pytest.raises(RunError, match="feature store .* is not on this machine; pass it"):
        elsewhere.store()
    other = make_store(tmp_path / "other", make_corpus(seed=1))
    with pytest.raises(RunError, match="other: its .* features differ from those the run"):
        alone.store(other.root)


def test_evaluate_other_split_keeps_the_test_report(made, capsys):
    _, run = made
    assert main(["evaluate", str(run)]) == 0
    test_md = (run / "report.md").read_text()
    assert main(["evaluate", str(run), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert (run / "report.md").read_text() == test_md
    train_rep = json.loads((run / "report-train.json").read_text())
    assert "train" in train_rep and "test" not in train_rep
    assert "| train |" in (run / "report-train.md").read_text() and "| train |" in out
    assert "±" not in test_md  # one seed: the value alone
    assert fmt({"mean": 50.0, "std": 0.0, "per_seed": [50.0]}) == "50.00"
    assert fmt({"mean": 50.0, "std": 1.0, "per_seed": [49.0, 51.0]}) == "50.00 ± 1.00"


def test_run_validation_names_the_file(made, tmp_path):
    _, run = made
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    cfg = bad / "config.json"
    d = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**d, "labels": ["a", "b", "c", "d"]}))
    with pytest.raises(RunError, match=r"bad/config.json: 4 labels .* with 3 classes"):
        Run.open(bad)
    # labels that agree with the run config but not with a finished model
    mc = bad / "seed-0" / "model" / "config.json"
    m = json.loads(mc.read_text())
    cfg.write_text(json.dumps(d))
    mc.write_text(json.dumps({**m, "config": {**m["config"], "n_classes": 5}}))
    with pytest.raises(RunError, match=r"seed-0/model/config.json: a model with 5 classes"):
        Run.open(bad)
    cfg.write_text(json.dumps({k: v for k, v in d.items() if k != "modalities"}))
    with pytest.raises(RunError, match=r"bad/config.json: missing 'modalities'"):
        Run.open(bad)
    cfg.write_text(json.dumps(d)[:40])
    with pytest.raises(RunError, match=r"bad/config.json: unreadable"):
        Run.open(bad)


def test_folder_of_runs_names_them(made, capsys):
    root, run = made
    with pytest.raises(RunError, match=r"not a run folder .* contains the run folder\(s\) .*runs/r"):
        Run.open(root / "runs")
    rc = main(["predict", str(root / "runs"), "--video", "v.mp4", "--segments", "s.csv",
               "--out", str(root / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "contains the run folder(s)" in err and str(run) in err


def _old_layout(run, dst):
    """``run`` rewritten in the earlier layout: seed-0/model.pt + a flat ``train`` setting."""
    shutil.copytree(run, dst)
    d = json.loads((dst / "config.json").read_text())
    from safetensors.torch import load_file

    sd = load_file(dst / "seed-0" / "model" / "model.safetensors")
    shutil.rmtree(dst / "seed-0" / "model")
    torch.save({"model": sd, "seed": 0, "best_epoch": 1, "dev_f1": 50.0},
               dst / "seed-0" / "model.pt")
    prov = d.pop("provenance")
    d.pop("layout")
    d["train"].update(dropout=0.3, ablations=[], model_overrides={}, model=d["model_name"],
                      device="cpu", dataset=str((run / prov["dataset"]).resolve()),
                      meld_dir=None)
    d["store"]["root"] = str((run / prov["store"]).resolve())
    (dst / "config.json").write_text(json.dumps(d))
    return sd


def test_old_layout_refused_then_converted(made, tmp_path, capsys):
    _, run = made
    old = tmp_path / "old"
    sd = _old_layout(run, old)
    with pytest.raises(RunError, match=r"seed-0/model.pt: a run folder of the earlier layout .*"
                                       r"avafn run convert"):
        Run.open(old)
    assert main(["run", "convert", str(old)]) == 0
    assert not list(old.rglob("*.pt"))
    r = Run.open(old)
    (model,) = r.models()
    assert all(torch.equal(model.state_dict()[k], sd[k]) for k in sd)
    assert r.train.max_epochs == 2 and r.model_config["dropout"] == 0.3
    assert main(["evaluate", str(old)]) == 0


class Payload:  # anything torch.load(weights_only=True) must not build
    def __reduce__(self):
        return (os.system, ("echo hacked",))


def test_convert_refuses_a_file_that_needs_pickle(made, tmp_path):
    _, run = made
    old = tmp_path / "evil"
    _old_layout(run, old)
    torch.save({"model": {}, "x": Payload()}, old / "seed-0" / "model.pt")
    before = (old / "config.json").read_text()
    with pytest.raises(RunError, match=r"seed-0/model.pt: cannot be loaded without pickle"):
        convert_run(old)
    assert (old / "config.json").read_text() == before  # nothing changed
    assert (old / "seed-0" / "model.pt").exists()


def test_empty_lists_refused_on_the_command_line(made, capsys):
    root, _ = made
    for opt in (["--seeds", ","], ["--modalities", ","]):
        with pytest.raises(SystemExit) as e:
            main(["train", "--dataset", str(root / "data" / "m.csv"), "--store",
                  str(root / "data" / "store"), "--out", str(root / "x"), *opt])
        assert e.value.code == 2
        assert "expected at least one" in capsys.readouterr().err
    assert not (root / "x").exists()


def test_no_import_of_pickle_loading(made):
    """Reading a run never calls torch.load (the one legacy reader is convert_run)."""
    import inspect

    import avafn.checkpoint
    import avafn.inference.offline
    import avafn.training.evaluate
    import avafn.training.loop

    for mod in (avafn.checkpoint, avafn.training.evaluate, avafn.inference.offline,
                avafn.training.loop):
        assert "torch.load(" not in inspect.getsource(mod), mod.__name__
    assert np.isfinite(Run.open(made[1]).models()[0].out.weight.detach().numpy()).all()


def test_quiet_loading_hides_transformers_bars_and_restores_them():
    from transformers.utils import logging as hf_logging

    from avafn.inference.featurizer import quiet_loading

    hf_logging.enable_progress_bar()
    with quiet_loading(True):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with quiet_loading(False):
        assert hf_logging.is_progress_bar_enabled()


def test_dataset_recorded_as_a_name_or_not_at_all(made):
    from avafn.config import Provenance

    r = Run.open(made[1])

    def recorded(run, **kw):  # the run, as if its config.json said ``kw``
        return dataclasses.replace(run, config=dataclasses.replace(run.config, **kw))

    named = recorded(r, provenance=Provenance(dataset="meld"), recorded={})
    assert named.dataset_path() == "meld" and named.dataset_sha256 is None  # used as given
    unknown = recorded(r, provenance=Provenance(), recorded={})
    with pytest.raises(RunError, match="does not record which corpus .* --dataset"):
        unknown.dataset_path()  # the synthetic corpus is no registered reader
    meld = recorded(unknown, corpus={"name": "meld"})
    assert meld.dataset_path() == "meld"


@pytest.mark.skipif(not os.environ.get("AVAFN_MELD_DIR"), reason="AVAFN_MELD_DIR not set")
def test_meld_folder_read_through_the_environment_is_recorded(tmp_path, monkeypatch):
    """A MELD run trained with $AVAFN_MELD_DIR records that folder, so that evaluating it
    later needs neither the variable nor a download."""
    from avafn.config import Provenance
    from avafn.run import record_provenance

    meld = os.environ["AVAFN_MELD_DIR"]
    d = record_provenance(tmp_path / "run", Provenance(dataset="meld"))
    assert (tmp_path / "run" / d["data_dir"]).resolve() == Path(meld).resolve()
    monkeypatch.setenv("AVAFN_MELD_DIR", str(tmp_path / "elsewhere"))  # not a MELD folder
    assert record_provenance(tmp_path / "run", Provenance(dataset="meld"))["data_dir"] is None
    # an explicit folder is recorded as given (meld_dir: the earlier name of data_dir)
    d = record_provenance(tmp_path / "run", Provenance(dataset="meld", meld_dir=meld))
    assert (tmp_path / "run" / d["data_dir"]).resolve() == Path(meld).resolve()


def test_data_dir_read_under_its_earlier_name(made, tmp_path, capsys):
    """``meld_dir`` (settings, a run's provenance, ``--meld-dir``) is read as ``data_dir``,
    without a warning."""
    from avafn.config import ConfigError, Provenance, split_settings

    assert Provenance.from_dict({"dataset": "meld", "meld_dir": "m"}).data_dir == "m"
    assert split_settings({"meld_dir": "m"})[2].data_dir == "m"
    assert split_settings({"data_dir": "m"})[2] == Provenance(data_dir="m")
    with pytest.raises(ConfigError, match="data_dir given twice"):
        Provenance(data_dir="a", meld_dir="b")
    root, run = made
    for flag in ("--data-dir", "--meld-dir"):  # the folder of a manifest corpus: unused
        assert main(["evaluate", str(run), "--dataset", str(root / "data" / "m.csv"), flag,
                     str(tmp_path), "--store", str(root / "data" / "store")]) == 0
        captured = capsys.readouterr()
        assert "warning" not in (captured.err + captured.out).lower()


#: a run's config.json exactly as training wrote it before RunConfig and the fusion's own
#: config (a causal AVAFN with per-utterance eq. 7 weights; store and extractors abridged to
#: what the checks read)
OLD_RUN_CONFIG = {
    "avafn_version": "0.1.0",
    "corpus": {"n_dialogues": {"dev": 12, "test": 12, "train": 40},
               "n_utterances": {"dev": 80, "test": 53, "train": 228}, "name": "synth",
               "source": {}},
    "extractors": {
        "audio": {"config": {"signal": 2.0}, "config_hash": "9e6846c6f744e5fb",
                  "extractor": "synth", "modality": "audio", "model_id": "none", "width": 8},
        "video": {"config": {"signal": 1.0}, "config_hash": "58af3ba40b1d062f",
                  "extractor": "synth", "modality": "video", "model_id": "none", "width": 6}},
    "labels": ["calm", "happy", "angry"],
    "layout": 2,
    "modalities": ["audio", "video"],
    "model": {"bidirectional": False, "d_att": 5, "d_context": 6, "d_emotion": 6, "d_ff": 16,
              "d_model": 8, "d_party": 6, "dropout": 0.3, "fusion": "cam",
              "fusion_weights": "per_utterance", "input_dims": {"audio": 8, "video": 6},
              "input_dropout": None, "listener_modality": None,
              "modalities": ["audio", "video"], "n_classes": 3, "n_parties": 3,
              "no_acm": False, "no_acm_attention": False, "no_ilm": False, "no_ssm": False,
              "tie_directions": False},
    "model_name": "avafn",
    "provenance": {"dataset": None, "device": "cpu", "meld_dir": None,
                   "store": "../data/store", "threads": 2,
                   "torch_version": "2.14.1+cu130"},
    "seeds": [0],
    "store": {"modalities": {
        "audio": {"config_hash": "9e6846c6f744e5fb", "content_sha256": "31194dc497aead38",
                  "extractor": "synth", "layer": None, "model_id": "none", "n_entries": 361,
                  "n_present": 324, "width": 8},
        "video": {"config_hash": "58af3ba40b1d062f", "content_sha256": "78d79891e1226a63",
                  "extractor": "synth", "layer": None, "model_id": "none", "n_entries": 361,
                  "n_present": 334, "width": 6}},
        "root": "/tmp/seams_gen/data/store"},
    "train": {"batch_size": 8, "bucket": False, "eval_batch_size": 64, "grad_clip": None,
              "lr": 0.01, "max_epochs": 1, "modalities": ["audio", "video"],
              "modality_dropout": {}, "patience": 10, "weight_decay": 0.0003},
}


def test_run_config_written_before_runconfig_still_loads(tmp_path):
    """A run folder whose config.json (and model folder) were written before RunConfig and
    the fusion's own config opens, its model loads with the settings it was trained with, and
    RunConfig reads and writes it without losing a key (an unknown one is kept as it was)."""
    from avafn.checkpoint import save_weights
    from avafn.run import RunConfig

    run = tmp_path / "r"
    d = json.loads(json.dumps({**OLD_RUN_CONFIG, "notes": {"by": "a later version"}}))
    (run / "seed-0").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(d))
    torch.manual_seed(0)
    trained = AVAFN(AVAFNConfig.from_dict(dict(d["model"])))
    save_weights(run / "seed-0" / "model", "avafn", d["model"], trained.state_dict())
    opened = Run.open(run)
    assert opened.labels == ["calm", "happy", "angry"] and opened.seeds == [0]
    assert opened.provenance.store == "../data/store" and not opened.bidirectional
    assert opened.config.extra == {"notes": {"by": "a later version"}}
    (model,) = opened.models()
    assert model.cfg.d_model == 8 and model.fusion.weights == "per_utterance"
    assert model.fusion.cam["audio"].ff[0].out_features == 16  # the old d_ff
    feats = {"audio": torch.randn(1, 3, 8), "video": torch.randn(1, 3, 6)}
    args = (feats, None, torch.tensor([[0, 1, 0]]), torch.ones(1, 3, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(model(*args).logits, trained.eval()(*args).logits)
    # read as the current version writes it: "cam"'s settings in the fusion's own config
    assert opened.model_config["fusion_config"] == {"d_ff": 16, "weights": "per_utterance"}
    assert "d_ff" not in opened.model_config and "fusion_weights" not in opened.model_config
    assert {k: v for k, v in opened.model_config.items() if k != "fusion_config"} == \
        {k: v for k, v in d["model"].items() if k not in ("d_ff", "fusion_weights")}
    again = RunConfig.from_dict(opened.config.to_dict(), run / "config.json")
    assert again.to_dict() == opened.config.to_dict()
    assert again.to_dict()["notes"] == {"by": "a later version"}
    assert again.to_dict()["provenance"] == d["provenance"]
    bad = {**d, "labels": "calm"}
    with pytest.raises(RunError, match=r"r/config.json: 'labels' must be a list of names"):
        RunConfig.from_dict(bad, run / "config.json")
