"""Hostile files, options and plug-ins that used to crash, corrupt memory or pass NaN silently:
each ends with one line naming the file / option, or keeps working around the broken piece."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_helpers import assert_user_error, fill_store, run_cli, small_manifest
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save_file
from safetensors.torch import save as st_save

from avafn import cli
from avafn.argtypes import finite, folder, json_object
from avafn.checkpoint import CheckpointError, from_pretrained
from avafn.config import ConfigError, TrainConfig
from avafn.data import load_corpus
from avafn.errors import UserError
from avafn.io import atomic_write_json
from avafn.registry import Registry, RegistryError
from avafn.run import Run, RunError, finished_seeds
from avafn.store import FeatureStore, StoreError
from avafn.training.kit import NonFiniteError
from avafn.training.loop import train

_FEATURES = '{"speaker": "a", "features": {"text": [0, 0, 0, 0, 0, 0, 0, 0]}}\n'
CAUSAL = {"bidirectional": False, "d_model": 8, "d_ff": 16, "d_context": 8, "d_party": 8,
          "d_emotion": 8, "d_att": 8}


@pytest.fixture
def data(tmp_path):
    m = small_manifest(tmp_path / "m.csv", n_dialogues=3)
    corpus = load_corpus(str(m))
    fill_store(tmp_path / "store", [u.uid for u in corpus.utterances()])
    return {"manifest": m, "store": tmp_path / "store", "tmp": tmp_path, "corpus": corpus}


def _cli(*args, env: dict | None = None, input: str | None = None):
    """``avafn ARGS`` in a process of its own, with ``input`` on stdin."""
    root = Path(__file__).resolve().parents[1]
    e = {k: v for k, v in os.environ.items() if k != "AVAFN_DEBUG"}
    e.update(PYTHONPATH=f"{root / 'src'}{os.pathsep}{root / 'tests'}", OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "avafn.cli", *map(str, args)], env=e,
                          input=input, capture_output=True, text=True, timeout=300, check=False)


def _settings(**kw):
    return {"modalities": ("text",), "max_epochs": 3, "batch_size": 2,
            "model_overrides": CAUSAL, **kw}


def _train_args(d, out, *extra):
    return ["train", "--dataset", d["manifest"], "--store", d["store"], "--out", out,
            "--modalities", "text", "--no-progress", "--max-epochs", "3", "--batch-size", "2",
            "--model", json.dumps(CAUSAL), *extra]


def _interrupted(d, name="run") -> Path:
    """A run stopped after its first epoch: seed-0/state.safetensors, no model yet."""
    def stop(seed, rec):
        raise KeyboardInterrupt

    out = d["tmp"] / name
    with pytest.raises(KeyboardInterrupt):
        train(d["corpus"], FeatureStore(d["store"]), out, _settings(), progress=False,
              on_epoch_end=stop)
    assert (out / "seed-0" / "state.safetensors").is_file()
    return out


def _edit_state(run: Path, fn) -> None:
    """Rewrite seed-0's training state through ``fn(tensors, tree)`` (what a damaged or
    hostile file holds)."""
    p = run / "seed-0" / "state.safetensors"
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    tensors, tree = st_load(raw), json.loads(meta["avafn_state"])
    fn(tensors, tree)
    meta["avafn_state"] = json.dumps(tree)
    p.write_bytes(st_save(tensors, metadata=meta))


def _first_param_buffers(tree) -> dict:
    return tree["optimizer"]["state"]["__items__"][0][1]


# ------------------------------------------------------------ 1. tensors read from disk
def test_optimizer_buffer_of_the_wrong_shape_is_refused_not_a_segfault(data):
    """A fused Adam step over a buffer of the wrong shape wrote out of bounds (SIGSEGV)."""
    run = _interrupted(data)

    def shrink(t, tree):
        t[_first_param_buffers(tree)["exp_avg"]["__tensor__"]] = torch.zeros(3)

    _edit_state(run, shrink)
    res = run_cli(*_train_args(data, run))  # a process of its own: a segfault would show
    line = assert_user_error(res, "train", "seed-0/state.safetensors: damaged training state",
                             "exp_avg has shape (3,)", "delete it to restart")
    assert "expected (" in line


@pytest.mark.parametrize("damage, needle", [
    (lambda t, tree: tree.__setitem__("epoch", "1"), "epoch is '1'"),
    (lambda t, tree: tree.__setitem__("history", [{"train_loss": "x"}]), "history is"),
    (lambda t, tree: tree["best"].__setitem__("dev_f1", "high"), "best is"),
    (lambda t, tree: t.__setitem__(tree["torch_rng"]["__tensor__"], torch.zeros(3, dtype=torch.uint8)),
     "torch_rng is not a random generator state"),
    (lambda t, tree: t.__setitem__(next(iter(tree["model"].values()))["__tensor__"],
                                   torch.zeros(2, 2, dtype=torch.float64)), "model:"),
    (lambda t, tree: t.__setitem__(next(iter(tree["model"].values()))["__tensor__"],
                                   torch.full_like(t[next(iter(tree["model"].values()))["__tensor__"]],
                                                   math.nan)), "non-finite"),
    (lambda t, tree: _first_param_buffers(tree).__setitem__("step", {"__tensor__": "t0"}),
     "step has shape"),
    (lambda t, tree: tree["optimizer"]["param_groups"][0].__setitem__("lr", "fast"),
     "lr is 'fast'"),
])
def test_mistyped_or_damaged_training_state_is_one_line(data, capsys, damage, needle):
    run = _interrupted(data)
    _edit_state(run, damage)
    assert cli.main([str(a) for a in _train_args(data, run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("avafn train: error: ") and "damaged training state" in line, line
    assert needle in line, (needle, line)


def test_a_sound_state_still_resumes_bit_identically(data):
    run = _interrupted(data)
    train(data["corpus"], FeatureStore(data["store"]), run, _settings(), progress=False)
    whole = data["tmp"] / "whole"
    train(data["corpus"], FeatureStore(data["store"]), whole, _settings(), progress=False)
    a = load_file(run / "seed-0" / "model" / "model.safetensors")
    b = load_file(whole / "seed-0" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_model_weights_of_another_dtype_or_non_finite_are_refused(data):
    run = data["tmp"] / "run"
    train(data["corpus"], FeatureStore(data["store"]), run, _settings(max_epochs=1),
          progress=False)
    p = run / "seed-0" / "model" / "model.safetensors"
    good = load_file(p)
    k = next(iter(good))
    save_file({**good, k: good[k].double()}, p)
    with pytest.raises(CheckpointError, match=rf"{k} is float64 .*expected float32"):
        from_pretrained(p.parent)
    save_file({**good, k: torch.full_like(good[k], math.nan)}, p)
    with pytest.raises(CheckpointError, match=rf"{k} holds non-finite values"):
        from_pretrained(p.parent)
    assert_user_error(run_cli("evaluate", run), "evaluate", "non-finite values")


# ------------------------------------------------------------ 3. non-finite weights
def test_a_diverging_training_stops_at_its_epoch_and_the_corrected_rerun_runs(data):
    run = data["tmp"] / "run"
    with pytest.raises(NonFiniteError, match=r"seed 0, epoch 1: the (training loss|weights) "
                                             r"became non-finite.*lower --lr \(now 1e\+38\)"):
        train(data["corpus"], FeatureStore(data["store"]), run, _settings(lr=1e38),
              progress=False)
    assert not (run / "seed-0" / "state.safetensors").exists()  # nothing non-finite saved
    assert finished_seeds(run) == []
    # the stopped run holds no training: the corrected command takes the folder over
    train(data["corpus"], FeatureStore(data["store"]), run, _settings(max_epochs=1),
          progress=False)
    assert finished_seeds(run) == [0]
    assert Run.open(run).train.lr == TrainConfig().lr


@pytest.mark.parametrize("setting, value", [("lr", math.inf), ("lr", math.nan), ("lr", -1.0),
                                            ("lr", 0.0), ("weight_decay", -1.0),
                                            ("weight_decay", math.nan), ("grad_clip", math.inf)])
def test_training_settings_must_be_finite(setting, value):
    with pytest.raises(ConfigError, match=rf"training setting {setting} must be a finite"):
        TrainConfig(**{setting: value})


def test_finetune_settings_must_be_finite():
    from avafn.training.finetune import FinetuneConfig, FinetuneError

    for k, v in (("class_weight_power", math.nan), ("lr", math.inf), ("weight_decay", -0.5)):
        with pytest.raises(FinetuneError, match=rf"finetune setting {k} must be a finite"):
            FinetuneConfig(**{k: v})


def test_json_is_never_written_with_nan(tmp_path):
    with pytest.raises(ValueError, match=r"out.json: not written, it would hold a non-finite"):
        atomic_write_json(tmp_path / "out.json", {"confidence": math.nan})
    assert not (tmp_path / "out.json").exists()
    atomic_write_json(tmp_path / "ok.json", {"confidence": 0.5})
    assert json.loads((tmp_path / "ok.json").read_text()) == {"confidence": 0.5}


# ------------------------------------------------------------ 4. broken plug-ins
def _broken_entry_point(monkeypatch, group: str, name: str) -> metadata.EntryPoint:
    import avafn.registry as reg

    ep = metadata.EntryPoint(name=name, value="no_such_plugin_module.sub:Thing", group=group)
    real = metadata.entry_points

    def entry_points(**kw):
        return [*real(**kw), ep] if kw.get("group") == group else real(**kw)

    monkeypatch.setattr(reg.metadata, "entry_points", entry_points)
    return ep


def test_a_broken_plug_in_is_one_warning_and_everything_else_works(monkeypatch, caplog):
    _broken_entry_point(monkeypatch, "avafn.widgets", "broken")
    r = Registry("widget", entry_points="avafn.widgets")
    r.register("good", int)
    with caplog.at_level(logging.WARNING, logger="avafn.registry"):
        assert r.names() == ["good"] and r.get("good") is int
        assert "good" in r and "broken" not in r
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 1, warnings  # once, however often the registry is asked
    assert "widget plug-in 'broken'" in warnings[0]
    assert "no_such_plugin_module.sub:Thing" in warnings[0] and "group avafn.widgets" in warnings[0]
    assert "ModuleNotFoundError" in warnings[0] and "distribution" in warnings[0]
    with pytest.raises(RegistryError, match=r"widget plug-in 'broken' .* failed to load"):
        r.get("broken")  # asked for by name: an error


def test_a_broken_plug_in_does_not_take_down_extract_or_predict(tmp_path, data):
    """A real installed distribution (a .dist-info folder on the path) whose entry points
    point at a module that is not there."""
    site = tmp_path / "site"
    info = site / "brokenplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[avafn.extractors]\nbroken = brokenplug_missing.mod:Thing\n"
        "[avafn.models]\nbroken-model = brokenplug_missing.mod:Model\n")
    env = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          str(Path(__file__).resolve().parent), str(site)])}
    res = _cli("extract", "audio", "--help", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "usage: avafn extract audio" in res.stdout and "wav2vec2-mean" in res.stdout
    warn = [ln for ln in res.stderr.splitlines() if "plug-in" in ln]
    assert len(warn) == 1 and "brokenplug 0.1" in warn[0] and "'broken'" in warn[0], res.stderr
    res = _cli("extract", "audio", "--dataset", data["manifest"], "--store",
               tmp_path / "st", "--extractor", "broken", env=env)
    assert_user_error(res, "extract audio", "extractor plug-in 'broken'", "brokenplug 0.1",
                      "ModuleNotFoundError")
    run = tmp_path / "run"
    train(data["corpus"], FeatureStore(data["store"]), run, _settings(max_epochs=1),
          progress=False)
    res = _cli("predict", run, "--stream", "--jsonl", env=env, input=_FEATURES)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[0])["label"] in ("joy", "sad")


# ------------------------------------------------------------ 5. one line, not a traceback
def test_file_size_limit_and_memory_errors_are_one_line():
    efbig = OSError(errno.EFBIG, "File too large", "/runs/r/seed-0/state.safetensors")
    assert cli.error_line(efbig) == ("/runs/r/seed-0/state.safetensors: file too large (the "
                                     "file-size limit, see `ulimit -f`, or the file system's)")
    try:
        torch.empty(1 << 55, dtype=torch.uint8)  # the CPU allocator's own RuntimeError
    except RuntimeError as e:
        line = cli.error_line(e)
    assert line.startswith("out of memory (DefaultCPUAllocator: can't allocate memory"), line
    assert line.endswith("use a smaller --batch-size, or a machine with more memory")
    try:  # raised while handling one (a library wrapping the MemoryError in its own error)
        try:
            raise MemoryError
        except MemoryError:
            raise KeyError("batch")
    except KeyError as e:
        assert cli.error_line(e).startswith("out of memory")
    assert cli.error_line(RuntimeError("a bug")) is None  # a bug keeps its traceback


def test_file_size_limit_through_a_real_process(data):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root / 'tests'}",
           "OMP_NUM_THREADS": "1"}
    env.pop("AVAFN_DEBUG", None)
    args = " ".join(f"'{a}'" for a in _train_args(data, data["tmp"] / "run"))
    script = f"ulimit -f 16; exec {sys.executable} -m avafn.cli {args}"
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert_user_error(res, "train", "file too large", "ulimit -f")


@pytest.mark.parametrize("argv, needle", [
    (["--model", ""], "argument --model: expected a JSON object or a JSON file, got an empty"),
    (["--config", ""], "argument --config: expected a JSON object or a JSON file, got an empty"),
    (["--config", "."], "argument --config: .: is a folder"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["--lr", "inf"], "argument --lr: expected a finite number > 0, got inf"),
    (["--lr", "-1"], "argument --lr: expected a finite number > 0, got -1"),
    (["--weight-decay", "-1"], "argument --weight-decay: expected a finite number >= 0"),
    (["--out", ""], "argument --out: expected a folder, got an empty path"),
    (["--store", ""], "argument --store: expected a folder, got an empty path"),
    (["--store", "m.csv"], "argument --store: m.csv: is a file, expected a folder"),
])
def test_options_refused_by_argparse(data, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(data["tmp"])
    base = _train_args(data, data["tmp"] / "run")
    flag, value = argv
    if flag in base:
        base[base.index(flag) + 1] = value
    else:
        base += [flag, value]
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in base])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err.strip().splitlines()[-1], err
    assert not (data["tmp"] / "run").exists() and not (data["tmp"] / "config.json").exists()


def test_nan_in_config_and_a_store_naming_a_file(data, capsys):
    assert cli.main([str(a) for a in _train_args(data, data["tmp"] / "run", "--config",
                                                 '{"lr": NaN}')]) == 1
    err = capsys.readouterr().err
    assert "training setting lr must be a finite number > 0, got nan" in err
    with pytest.raises(SystemExit):
        cli.main(["extract", "text", "--dataset", str(data["manifest"]), "--store",
                  str(data["manifest"])])
    err = capsys.readouterr().err
    assert "m.csv: is a file, expected a folder" in err and "Traceback" not in err


def test_argtypes_directly():
    assert finite(above=0)("1e-4") == 1e-4
    for bad in ("nan", "inf", "-inf", "0", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            finite(above=0)(bad)
    assert folder(".") == "."
    with pytest.raises(argparse.ArgumentTypeError):
        folder("  ")
    assert json_object('{"a": 1}') == {"a": 1}
    with pytest.raises(argparse.ArgumentTypeError, match="expected a JSON object"):
        json_object("[1]")


@pytest.fixture
def made(data):
    run = data["tmp"] / "run"
    train(data["corpus"], FeatureStore(data["store"]), run,
          _settings(max_epochs=1, dataset=str(data["manifest"])), progress=False)
    return run


def test_a_copy_of_a_seed_folder_beside_the_seeds_is_not_a_seed(made, capsys):
    shutil.copytree(made / "seed-0", made / "seed-0.bak")
    (made / "seed-x").mkdir()
    assert finished_seeds(made) == [0]
    assert Run.open(made).finished_seeds() == [0]
    assert cli.main(["evaluate", str(made)]) == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["model"].__setitem__("n_classes", "two"),
     "invalid avafn model config (model setting 'n_classes' must be an integer, got 'two')"),
    (lambda c: c["model"].__setitem__("d_model", "wide"), "'d_model' must be an integer"),
    (lambda c: c["model"].__setitem__("input_dims", {"text": "eight"}), "invalid avafn model"),
    (lambda c: c.__setitem__("extractors", {"text": "x"}), "'extractors' must be an object of"),
    (lambda c: c.__setitem__("corpus", [1]), "'corpus' must be an object"),
    (lambda c: c["provenance"].__setitem__("device", 3), "'device' must be a str"),
    (lambda c: c["train"].__setitem__("lr", "fast"), "'lr' must be a number"),
])
def test_mistyped_fields_of_a_runs_config_are_one_line(made, capsys, edit, needle):
    cfg = made / "config.json"
    c = json.loads(cfg.read_text())
    edit(c)
    cfg.write_text(json.dumps(c))
    with pytest.raises(RunError, match="config.json: ") as e:
        Run.open(made)
    assert needle in str(e.value)
    assert cli.main(["evaluate", str(made)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err.strip().splitlines()[-1]


def test_a_string_inside_a_streamed_feature_vector(made):
    res = _cli("predict", made, "--stream", "--jsonl",
               input='{"speaker": "a", "features": {"text": ["x", 0, 0, 0, 0, 0, 0, 0]}}\n')
    assert_user_error(res, "predict", "utterance 0: text vector must be a list of numbers")


class _Payload:  # what torch.load(weights_only=True) must never build
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_pickle_in_an_audio_model_folder_is_refused_without_running_it(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from avafn.extract.audio import Wav2Vec2Encoder

    folder = tmp_path / "w2v"
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, conv_dim=(8, 8), conv_stride=(5, 2),
                         conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                         num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"x": _Payload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"w2v: its weights are a pickle that would run code"):
        Wav2Vec2Encoder(str(folder))
    assert not marker.exists()


# ------------------------------------------------------------ 6. repairs that damage
def test_repair_refuses_a_folder_that_is_not_a_store(tmp_path):
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "meta.json").write_text("{}")
    (mine / "notes" / "part-1.npz").write_text("my own file")
    before = sorted(p.relative_to(mine) for p in mine.rglob("*"))
    with pytest.raises(StoreError, match=r"mine: not a feature store \(no store.json\); "
                                         r"--repair refused, nothing moved"):
        FeatureStore(mine).check(repair=True)
    assert_user_error(run_cli("store", "check", mine, "--repair"), "store check",
                      "--repair refused, nothing moved")
    assert sorted(p.relative_to(mine) for p in mine.rglob("*")) == before
    (mine / "store.json").write_text('{"name": "my shop"}')  # JSON of something else
    with pytest.raises(StoreError, match="not an avafn feature store's marker"):
        FeatureStore(mine).check(repair=True)
    assert json.loads((mine / "store.json").read_text()) == {"name": "my shop"}
    assert sorted(p.relative_to(mine) for p in mine.rglob("*") if p.name != "store.json") \
        == before
    res = run_cli("store", "check", "", "--repair", cwd=mine)  # '' is not "here"
    assert res.returncode == 2 and "expected a folder, got an empty path" in res.stderr


# ------------------------------------------------------------ 7. bounds and leftovers
def test_finetune_folds_above_the_training_dialogues_is_refused_before_any_model(data):
    from avafn.training.finetune import FinetuneConfig, FinetuneError, finetune_text

    with pytest.raises(FinetuneError, match=r"folds 50: .* the corpus has 3 \(give --folds "
                                            r"2\.\.3, or 0 for none\)"):
        finetune_text(data["corpus"], data["tmp"] / "ft",
                      FinetuneConfig(folds=50, base_model=str(data["tmp"] / "no-model")))
    assert not (data["tmp"] / "ft").exists()


def test_a_train_that_fails_on_its_data_does_not_block_the_corrected_rerun(data, capsys):
    half = data["tmp"] / "half"
    fill_store(half, [u.uid for u in data["corpus"].utterances()][3:])  # 3 train turns
    out = data["tmp"] / "run"
    args = _train_args(data, out, "--max-epochs", "1")
    bad = list(args)
    bad[bad.index("--store") + 1] = half
    assert cli.main([str(a) for a in bad]) == 1
    assert "no entry for utterance" in capsys.readouterr().err
    assert not (out / "config.json").exists()  # written only once the data is checked
    assert cli.main([str(a) for a in args]) == 0
    assert finished_seeds(out) == [0]
    capsys.readouterr()


def test_a_started_run_still_refuses_another_setting(made, data):
    with pytest.raises(RunError, match=r"other settings \(train\.lr: 0\.0001 -> 0\.001\)"):
        train(data["corpus"], FeatureStore(data["store"]), made,
              _settings(max_epochs=1, lr=1e-3, dataset=str(data["manifest"])), progress=False)


def test_provenance_records_torch_and_threads_and_old_runs_still_open(made):
    prov = json.loads((made / "config.json").read_text())["provenance"]
    assert prov["torch_version"] == torch.__version__
    assert prov["threads"] == torch.get_num_threads()
    assert Run.open(made).provenance.threads == torch.get_num_threads()
    c = json.loads((made / "config.json").read_text())
    for k in ("torch_version", "threads"):
        del c["provenance"][k]
    (made / "config.json").write_text(json.dumps(c))
    assert Run.open(made).provenance.torch_version is None  # a run that did not record them
    assert len(Run.open(made).models()) == 1


def test_store_shards_checked_before_use(tmp_path):
    """Store shards: shape, dtype and finiteness of every array checked on reading."""
    st = fill_store(tmp_path / "st", ["train/0/0", "train/0/1"], shard_size=8)
    (part,) = (tmp_path / "st" / "text").glob("part-*.npz")
    with np.load(part) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["vector"] = arrays["vector"][:, :3]
    np.savez(part, **arrays)
    with pytest.raises(StoreError, match=r"vector is float32 of shape \(2, 3\), expected"):
        FeatureStore(st.root).table("text")


def test_run_convert_keeps_the_old_file_until_the_converted_run_loads(made, capsys):
    """A model.pt whose weights do not fit the run's model: the conversion is refused and
    model.pt is still there (it used to be deleted before the converted run was loaded)."""
    sd = load_file(made / "seed-0" / "model" / "model.safetensors")
    shutil.rmtree(made / "seed-0" / "model")
    k = next(iter(sd))
    torch.save({"model": {**sd, k: torch.zeros(1)}}, made / "seed-0" / "model.pt")
    before = (made / "config.json").read_bytes()
    assert cli.main(["run", "convert", str(made)]) == 1
    err = capsys.readouterr().err
    assert "the converted run does not load" in err and "nothing converted" in err
    assert (made / "seed-0" / "model.pt").is_file()
    assert (made / "config.json").read_bytes() == before
    assert not (made / "seed-0" / "model").exists()
    assert not [p for p in (made / "seed-0").iterdir() if "converting" in p.name]
    torch.save({"model": sd}, made / "seed-0" / "model.pt")  # sound: converted, then deleted
    assert cli.main(["run", "convert", str(made)]) == 0
    assert not (made / "seed-0" / "model.pt").exists()
    (model,) = Run.open(made).models()
    assert all(torch.equal(model.state_dict()[n], sd[n]) for n in sd)


# ------------------------------------------------------------ the model's hand-written backward
def _model_and_batch(bidirectional: bool = True):
    from avafn.model import AVAFN, AVAFNConfig

    torch.manual_seed(0)
    model = AVAFN(AVAFNConfig(modalities=("audio",), input_dims={"audio": 5}, n_classes=3,
                              n_parties=2, bidirectional=bidirectional, dropout=0.0,
                              **{k: v for k, v in CAUSAL.items() if k != "bidirectional"}))
    model = model.double().train()
    g = torch.Generator().manual_seed(1)
    feats = {"audio": torch.randn(2, 4, 5, generator=g, dtype=torch.float64)}
    present = {"audio": torch.ones(2, 4, dtype=torch.bool)}
    speaker = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, False, False]])  # dialogue 2: 2 turns
    return model, (feats, present, speaker, mask)


def test_double_backward_through_the_recurrence_raises():
    model, batch = _model_and_batch()
    out = model(*batch)["logits"]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out.pow(2).sum(), params, create_graph=True, allow_unused=True)
    penalty = sum((g ** 2).sum() for g in grads if g is not None)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        penalty.backward()


def test_weights_changed_in_place_before_backward_are_caught():
    model, batch = _model_and_batch(bidirectional=False)
    out = model(*batch)["logits"]
    with torch.no_grad():
        model.rnn.gru_e.weight_hh_l0.add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_context_attention_is_zero_at_padded_positions():
    model, batch = _model_and_batch()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            att = model.eval()(*batch)["context_attention"]
        assert torch.equal(att[1, 2:], torch.zeros_like(att[1, 2:]))  # padded rows
        assert torch.equal(att[1, :, 2:], torch.zeros_like(att[1, :, 2:]))  # padded columns
        assert torch.allclose(att[1, 1, :1].sum(), torch.tensor(1.0, dtype=att.dtype))
        assert torch.allclose(att[0, 3].sum(), torch.tensor(1.0, dtype=att.dtype))


def test_check_finite_names_where_and_what():
    from avafn.training.kit import check_finite

    net = torch.nn.Linear(2, 2)
    check_finite(torch.tensor(3.0), net, "seed 0, epoch 1")  # finite: nothing
    check_finite(3.0, net, "seed 0, epoch 1")
    with pytest.raises(NonFiniteError, match=r"^fold 2/3, epoch 4: the training loss became "
                                             r"non-finite .*; lower --lr$"):
        check_finite(torch.tensor(math.inf), net, "fold 2/3, epoch 4", "lower --lr")
    with torch.no_grad():
        net.bias[0] = math.nan
    with pytest.raises(NonFiniteError, match=r"seed 1, epoch 2: the weights became non-finite"):
        check_finite(1.0, net, "seed 1, epoch 2")


def test_checked_loading_still_reads_a_tied_direction_checkpoint(tmp_path):
    """The weight checks leave names and shapes to load_state_dict, after the model's hooks:
    a checkpoint of the older tied-direction layout still loads into the untied model."""
    from avafn.checkpoint import save_weights
    from avafn.model import AVAFN, AVAFNConfig

    kw = {"modalities": ("audio",), "input_dims": {"audio": 5}, "n_classes": 3,
          "n_parties": 2, **{k: v for k, v in CAUSAL.items() if k != "bidirectional"}}
    torch.manual_seed(0)
    tied = AVAFN(AVAFNConfig(tie_directions=True, **kw))
    untied = AVAFNConfig(tie_directions=False, **kw)
    save_weights(tmp_path / "m", "avafn", untied.to_dict(), tied.state_dict())
    model = from_pretrained(tmp_path / "m")
    assert isinstance(model, AVAFN) and not model.cfg.tie_directions


def test_a_broken_plug_in_leaves_the_built_in_extractors_and_diarizers(monkeypatch, caplog):
    """What predict (rebuilding the run's extractor) and diarization look up."""
    from avafn.diarize.diarization import DIARIZERS
    from avafn.extract.registry import EXTRACTORS, extractor_class

    for reg, group in ((EXTRACTORS, "avafn.extractors"), (DIARIZERS, "avafn.diarizers")):
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_failed", {})
        monkeypatch.setattr(reg, "_loaded", False)
    import avafn.registry as reg_module

    real = metadata.entry_points

    def entry_points(**kw):
        if kw.get("group") not in ("avafn.extractors", "avafn.diarizers"):
            return real(**kw)
        return [*real(**kw), metadata.EntryPoint(name="broken", group=kw["group"],
                                                 value="no_such_plugin_module:Thing")]

    monkeypatch.setattr(reg_module.metadata, "entry_points", entry_points)
    with caplog.at_level(logging.WARNING, logger="avafn.registry"):
        assert extractor_class("wav2vec2-mean").name == "wav2vec2-mean"
        assert callable(DIARIZERS.get("resemblyzer"))
    assert len(caplog.records) == 2  # one per broken entry point
    with pytest.raises(RegistryError, match="diarizer plug-in 'broken'"):
        DIARIZERS.get("broken")
