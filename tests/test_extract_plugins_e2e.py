"""Extractors through the whole pipeline with no special case anywhere: the built-in openSMILE
extractor and a plug-in defined outside avafn (tests/plugin_extractor.py, found through an
``avafn.extractors`` entry point) go extract (CLI) -> train -> evaluate -> predict (API and
CLI) -> streaming, each rebuilt from its stored metadata alone."""

import json

import numpy as np
import pytest
from extract_helpers import install_entry_point, make_labelled_clips

from avafn.cli import main
from avafn.data import load_corpus
from avafn.extract.registry import EXTRACTORS, rebuild, setting_differences
from avafn.run import Run
from avafn.store import FeatureStore
from avafn.training.loop import train

SMALL = {"d_model": 8, "d_ff": 16, "d_context": 8, "d_party": 8, "d_emotion": 8, "d_att": 6,
         "bidirectional": False}  # causal, so that it streams too


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_labelled_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture
def plugin(monkeypatch):
    install_entry_point(monkeypatch, EXTRACTORS, "avafn.extractors", "band-energy",
                        "plugin_extractor:BandEnergy")


def _pipeline(manifest, tmp_path, extract_args, width, capsys):
    store = tmp_path / "store"
    argv = ["extract", "audio", "--dataset", str(manifest), "--store", str(store),
            "--workers", "0", "--no-progress", *extract_args]
    assert main(argv) == 0, capsys.readouterr().err
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_written"] == 18 and rep["n_present"] == 18 and rep["outputs"] == ["audio"]
    st = FeatureStore(store)
    meta = st.meta("audio")
    assert meta["width"] == width
    # the record alone rebuilds the extractor, which gives the stored vectors
    ext = rebuild(meta)
    assert setting_differences(meta, ext.meta()) == []
    corpus = load_corpus(str(manifest))
    u = corpus.utterances("test")[0]
    vec, _, reason = ext.process([ext.loader(0)(u.media, None, None)])[0]
    x, present = st.load("audio", [u.uid], width)
    assert reason == "" and present[0]
    np.testing.assert_array_equal(vec, x[0])

    run = tmp_path / "run"
    train(corpus, st, run, {"modalities": ("audio",), "model_overrides": SMALL,
                            "max_epochs": 2, "batch_size": 2, "dropout": 0.0},
          seeds=(0,), progress=False)
    assert Run.open(run).extractors["audio"]["extractor"] == meta["extractor"]
    from avafn.training.evaluate import evaluate

    report = evaluate(run, "test", corpus=corpus, store=st, plots=False)
    assert "test" in json.dumps(report)

    from avafn.inference import Streamer, predict

    res = predict(run, clips_dir=manifest.parent, manifest=manifest, out_dir=tmp_path / "pred",
                  html=False)
    assert len(res["utterances"]) == 18
    assert res["extractors"]["audio"]["extractor"] == meta["extractor"]
    assert all(r["modalities"]["audio"] for r in res["utterances"])
    # predict re-extracted exactly the stored vectors
    again = FeatureStore(tmp_path / "pred" / "features")
    uids = [v.uid for v in corpus.utterances()]
    np.testing.assert_array_equal(again.load("audio", uids, width)[0],
                                  st.load("audio", uids, width)[0])
    assert main(["predict", str(run), "--clips", str(manifest.parent), "--manifest",
                 str(manifest), "--out", str(tmp_path / "pred-cli"), "--no-html",
                 "--no-progress"]) == 0, capsys.readouterr().err
    cli_res = json.loads((tmp_path / "pred-cli" / "predictions.json").read_text())
    assert [r["label"] for r in cli_res["utterances"]] == [r["label"] for r in res["utterances"]]

    s = Streamer(run)
    out = s.push(str(manifest.parent / u.media), "S0")
    assert out.to_dict()["label"] in corpus.labels
    return meta


def test_opensmile_end_to_end(clips, tmp_path, capsys):
    meta = _pipeline(clips, tmp_path, ["--extractor", "opensmile"], 88, capsys)
    assert meta["extractor"] == "opensmile" and meta["config"]["feature_set"] == "eGeMAPSv02"


def test_opensmile_compare_set_and_short_audio():
    from avafn.extract.opensmile import OpenSmileExtractor

    ext = OpenSmileExtractor("ComParE_2016")
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    (v, n, reason), (none, _, why) = ext.process([wave, wave[:300]])
    assert ext.meta()["width"] == 6373 and v.shape == (6373,) and np.isfinite(v).all()
    assert n == 16000 and reason == ""
    assert none is None and why.startswith("audio too short for openSMILE (300 samples")
    with pytest.raises(ValueError, match="feature set 'nope' unknown"):
        OpenSmileExtractor("nope")


def test_plugin_extractor_outside_avafn_end_to_end(plugin, clips, tmp_path, capsys):
    assert "band-energy" in EXTRACTORS.names()
    meta = _pipeline(clips, tmp_path, ["--extractor", "band-energy", "--bands", "6"], 6, capsys)
    assert meta["extractor"] == "band-energy" and meta["config"]["bands"] == 6
    assert type(rebuild(meta)).__module__ == "plugin_extractor"


def test_cli_extractor_choice_errors(plugin, clips, tmp_path, capsys):
    base = ["extract", "audio", "--dataset", str(clips), "--store", str(tmp_path / "s"),
            "--workers", "0", "--no-progress"]
    assert main([*base, "--extractor", "nope"]) == 1
    err = capsys.readouterr().err
    assert "avafn extract audio: error: unknown extractor 'nope'" in err
    assert "band-energy" in err and "opensmile" in err and "Traceback" not in err
    # an option of another extractor is refused, not silently ignored
    assert main([*base, "--extractor", "opensmile", "--layer", "3"]) == 1
    assert "--layer: not an option of extractor 'opensmile'" in capsys.readouterr().err
    assert main([*base, "--extractor", "band-energy", "--feature-set", "ComParE_2016"]) == 1
    assert "--feature-set: not an option of extractor 'band-energy'" in capsys.readouterr().err
    assert main([*base, "--extractor", "sentence-transformers"]) == 1
    assert "is a text extractor, not audio" in capsys.readouterr().err
