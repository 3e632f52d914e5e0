import json

import pytest
import torch
from train_synth import (
    make_corpus,
    make_store,
)

from avafn.config import ModelSpec, TrainConfig, split_settings
from avafn.run import Run, finished_seeds
from avafn.store import StoreError
from avafn.training.loop import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    corpus = make_corpus()
    store = make_store(tmp_path_factory.mktemp("store"), corpus)
    return corpus, store


def cfg(**kw):
    base = {"model": "tiny", "lr": 1e-2, "max_epochs": 6, "patience": 3, "batch_size": 8}
    base.update(kw)
    return base  # one flat mapping of settings (avafn.config.split_settings)


def _weights(run, seed):
    from safetensors.torch import load_file

    return load_file(run / f"seed-{seed}" / "model" / "model.safetensors")


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learns_and_run_folder_is_self_describing(data, tmp_path):
    corpus, store = data
    run = train(corpus, store, tmp_path / "run", cfg(max_epochs=15, patience=15), seeds=[0],
                progress=False)
    h = json.loads((run / "seed-0" / "history.json").read_text())
    assert h["best_dev_f1"] > 70  # chance is ~33
    assert h["history"][-1]["train_loss"] < h["history"][0]["train_loss"]
    c = json.loads((run / "config.json").read_text())
    assert c["labels"] == corpus.labels and c["modalities"] == ["audio", "video"]
    assert c["train"]["lr"] == 1e-2 and c["model"]["input_dims"] == {"audio": 8, "video": 6}
    assert c["store"]["modalities"]["audio"]["width"] == 8
    assert c["extractors"]["video"]["extractor"] == "synth"
    assert c["avafn_version"] and c["seeds"] == [0]
    assert not (run / "seed-0" / "state.safetensors").exists()
    mc = json.loads((run / "seed-0" / "model" / "config.json").read_text())
    assert mc["model"] == "tiny" and mc["config"]["n_classes"] == 3 and mc["avafn_version"]
    assert not list(run.rglob("*.pt"))  # nothing pickle-based
    models = Run.open(run).models()
    assert len(models) == 1 and not models[0].training


def test_paper_defaults():
    from avafn.model import AVAFNConfig

    c = TrainConfig()
    assert (c.lr, c.batch_size, c.weight_decay) == (1e-4, 32, 3e-4)
    assert AVAFNConfig().dropout == 0.3 and ModelSpec().name == "avafn"
    with pytest.raises(ValueError, match="unknown ablation"):
        split_settings({"ablations": ("no_xyz",)})
    with pytest.raises(ValueError, match="not trained"):
        TrainConfig(modalities=("audio",), modality_dropout={"video": 0.3})
    with pytest.raises(ValueError, match="max_epochs must be >= 1"):
        TrainConfig(max_epochs=0)  # would finish a seed with no weights in model.pt


def test_deterministic_on_cpu(data, tmp_path):
    corpus, store = data
    c = cfg(modality_dropout={"audio": 0.3}, bucket=True)
    a = train(corpus, store, tmp_path / "a", c, seeds=[1], progress=False)
    b = train(corpus, store, tmp_path / "b", c, seeds=[1], progress=False)
    assert _same(_weights(a, 1), _weights(b, 1))
    ha = json.loads((a / "seed-1" / "history.json").read_text())["history"]
    hb = json.loads((b / "seed-1" / "history.json").read_text())["history"]
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    c2 = train(corpus, store, tmp_path / "c", c, seeds=[2], progress=False)
    assert not _same(_weights(a, 1), _weights(c2, 2))


class Stop(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(data, tmp_path):
    corpus, store = data
    c = cfg(modality_dropout={"video": 0.2}, max_epochs=5, patience=5)
    ref = train(corpus, store, tmp_path / "ref", c, seeds=[0, 1], progress=False)

    def stop_at(seed_, epoch_):
        def cb(seed, rec):
            if seed == seed_ and rec["epoch"] == epoch_:
                raise Stop
        return cb

    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(corpus, store, run, c, seeds=[0, 1], progress=False, on_epoch_end=stop_at(1, 2))
    assert finished_seeds(run) == [0] and (run / "seed-1" / "state.safetensors").exists()
    m0 = (run / "seed-0" / "model" / "model.safetensors").stat().st_mtime_ns
    epochs = []
    train(corpus, store, run, c, seeds=[0, 1], progress=False,
          on_epoch_end=lambda s, r: epochs.append((s, r["epoch"])))
    assert epochs == [(1, 3), (1, 4), (1, 5)]  # continued; seed 0 not redone
    assert (run / "seed-0" / "model" / "model.safetensors").stat().st_mtime_ns == m0
    for s in (0, 1):
        assert _same(_weights(ref, s), _weights(run, s))
        hr = json.loads((ref / f"seed-{s}" / "history.json").read_text())["history"]
        hx = json.loads((run / f"seed-{s}" / "history.json").read_text())["history"]
        assert [r["dev_f1"] for r in hr] == [r["dev_f1"] for r in hx]
    # a finished run is not trained again
    train(corpus, store, run, c, seeds=[0, 1], progress=False,
          on_epoch_end=lambda s, r: pytest.fail("retrained"))


def test_resume_refuses_another_setting(data, tmp_path):
    corpus, store = data
    run = train(corpus, store, tmp_path / "r", cfg(max_epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"other settings \(train\.lr: [0-9.e-]+ -> 0\.5\)"):
        train(corpus, store, run, cfg(max_epochs=1, lr=0.5), progress=False)
    # every setting that differs is named, with both values
    with pytest.raises(ValueError) as e:
        train(corpus, store, run, cfg(max_epochs=2, lr=0.5, model_overrides={"hidden": 8}),
              progress=False)
    msg = str(e.value)
    assert "train.lr: " in msg and "-> 0.5" in msg and "train.max_epochs: 1 -> 2" in msg
    assert "model.hidden: 16 -> 8" in msg, msg
    assert msg.count("\n") == 0 and "Use another --out folder" in msg


def test_width_mismatch_with_checkpoint(data, tmp_path):
    corpus, store = data
    run = train(corpus, store, tmp_path / "r", cfg(max_epochs=1), progress=False)
    other = make_store(tmp_path / "wide", corpus, widths={"audio": 12, "video": 6})
    from avafn.training.evaluate import score
    with pytest.raises(StoreError, match=r"audio features are 12-d but the checkpoint expects 8-d"):
        score(run, "dev", corpus, other)


def test_missing_modality_in_store(data, tmp_path):
    corpus, store = data
    with pytest.raises(StoreError, match="text"):
        train(corpus, store, tmp_path / "r", cfg(modalities=("text",)), progress=False)


SMALL = {"d_model": 16, "d_ff": 32, "d_context": 16, "d_party": 16, "d_emotion": 16,
         "d_att": 16}


def test_real_avafn_learns_with_ablation_and_reloads(data, tmp_path):
    from avafn.model import AVAFN

    corpus, store = data
    c = {"lr": 5e-3, "max_epochs": 10, "patience": 10, "batch_size": 8,
         "ablations": ("no_ssm",), "model_overrides": SMALL, "modality_dropout": {"video": 0.2},
         "bucket": True}
    run = train(corpus, store, tmp_path / "avafn", c, seeds=[0], progress=False)
    desc = json.loads((run / "config.json").read_text())
    assert desc["model"]["no_ssm"] is True and desc["model"]["no_acm"] is False
    assert desc["model"]["d_model"] == 16 and desc["model"]["n_parties"] == corpus.max_parties
    assert desc["model"]["input_dims"] == {"audio": 8, "video": 6}
    h = json.loads((run / "seed-0" / "history.json").read_text())
    assert h["best_dev_f1"] > 60, h  # chance ~33
    models = Run.open(run).models()
    assert isinstance(models[0], AVAFN) and models[0].cfg.no_ssm


def test_settings_have_one_place_each():
    tc, spec, prov = split_settings({"lr": 0.1, "dropout": 0.2, "ablations": ["no_acm"],
                                     "model_overrides": {"d_model": 8}, "dataset": "x.csv",
                                     "device": "cpu", "store": "s"})
    assert tc.lr == 0.1 and not hasattr(tc, "dropout") and not hasattr(tc, "dataset")
    assert spec.config == {"d_model": 8, "dropout": 0.2, "no_acm": True}
    assert spec.ablations == ("no_acm",)
    assert (prov.dataset, prov.store, prov.device) == ("x.csv", "s", "cpu")
    with pytest.raises(ValueError, match="dropout given twice"):
        split_settings({"dropout": 0.2, "model_overrides": {"dropout": 0.5}})
    with pytest.raises(ValueError, match="fixed by the data"):
        split_settings({"model_overrides": {"n_classes": 4}})
    with pytest.raises(ValueError, match="unknown setting"):
        split_settings({"lr": 0.1, "learning_rate": 0.2})


def test_seeds_in_parallel_processes_equal_one_at_a_time(data, tmp_path, monkeypatch):
    """On a GPU the seeds train at once, one process each; every seed's weights and history
    are the ones it gets alone (checked here on the CPU, where one at a time is the default)."""
    from avafn.config import ConfigError
    from avafn.training.loop import parallel_seeds

    corpus, store = data
    c = {"lr": 5e-3, "max_epochs": 2, "patience": 2, "batch_size": 8, "model_overrides": SMALL,
         "modality_dropout": {"video": 0.2}, "bucket": True}
    seq = train(corpus, store, tmp_path / "seq", c, seeds=[0, 1], progress=False)
    par = train(corpus, store, tmp_path / "par", c, seeds=[0, 1], progress=False, parallel=2)
    for s in (0, 1):
        assert _same(_weights(seq, s), _weights(par, s))
        hs = json.loads((seq / f"seed-{s}" / "history.json").read_text())["history"]
        hp = json.loads((par / f"seed-{s}" / "history.json").read_text())["history"]
        assert [(r["train_loss"], r["dev_f1"]) for r in hs] == [
            (r["train_loss"], r["dev_f1"]) for r in hp]
    assert not _same(_weights(par, 0), _weights(par, 1))
    assert parallel_seeds("cpu", 3) == 1 and parallel_seeds("cuda", 3) == 3
    assert parallel_seeds("cuda", 20) == 8 and parallel_seeds("cpu", 3, parallel=5) == 3
    monkeypatch.setenv("AVAFN_PARALLEL_SEEDS", "2")
    assert parallel_seeds("cpu", 3) == 2
    monkeypatch.setenv("AVAFN_PARALLEL_SEEDS", "x")
    with pytest.raises(ConfigError, match="AVAFN_PARALLEL_SEEDS"):
        parallel_seeds("cuda", 3)
