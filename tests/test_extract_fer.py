"""fer-minixception: the PyTorch port against an independent NumPy reference, the converter,
the extractor through the extraction job and the CLI on generated media; an opt-in check of
the shipped network on real FER2013 faces ($AVAFN_REAL_DIR)."""

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from synthetic_media import face_photo, make_clip

from avafn.cli import main
from avafn.data import load_corpus
from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.extract import fer_convert
from avafn.extract.fer import (
    FER_LABELS,
    FerEncoder,
    FerFacesExtractor,
    MiniXception,
    load_minixception,
    same_pool,
    to_input,
    weights_path,
)
from avafn.extract.job import run_extraction
from avafn.extract.registry import ExtractorError, extractors_of_kind, rebuild, setting_differences
from avafn.store import FeatureStore


def test_shipped_weights_load_offline_without_pickle_and_notice_ships():
    p = weights_path()
    assert p.suffix == ".safetensors" and p.stat().st_size > 200_000
    assert "MIT License" in (p.parent / "NOTICE-fer.txt").read_text()
    m = load_minixception()
    assert sum(t.numel() for t in m.parameters()) > 50_000
    assert "video" in [getattr(FerFacesExtractor, "kind", None)] and \
        "fer-minixception" in extractors_of_kind("video")


def test_port_matches_numpy_reference_stage_by_stage():
    """Each stage of the PyTorch port (shipped weights) against a float64 NumPy computation of
    the Keras layers (NHWC, Keras kernel layouts, TensorFlow's 'same' padding)."""
    model = load_minixception()
    plan, weights = fer_convert.keras_arrays(model.state_dict())
    x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 1))
    diffs = fer_convert.compare(model, x, plan, weights)
    assert list(diffs) == ["stem1", "stem2", "block1", "block2", "block3", "block4", "head"]
    ref = fer_convert.numpy_reference(x, plan, weights)
    for (name, r), d in zip(ref, diffs.values()):
        assert d <= 1e-4 * max(1.0, float(np.abs(r).max())), (name, d)
    # the reference really is independent: a symmetric pool padding would differ from it
    assert ref[2][1].shape == (2, 30, 30, 16) and ref[-1][1].shape == (2, 4, 4, 7)


def test_same_pool_pads_at_the_end_like_tensorflow():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF "same", k=3, s=2 on 4: one pixel of padding, at the end -> windows [0:3], [2:4]
    assert same_pool(x).flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    y = torch.arange(25.0).view(1, 1, 5, 5)  # odd: one pixel each side -> 3 outputs
    assert same_pool(y).shape == (1, 1, 3, 3) and same_pool(y)[0, 0, 0, 0] == 6.0


def _keras_config(plan):
    """A Keras model_config layer list with the layout of the fer package's file."""
    def conv(name, filters, k, s, pad, bias, cls="Conv2D", src="x"):
        return {"class_name": cls, "name": name, "inbound_nodes": [[[src, 0, 0, {}]]],
                "config": {"filters": filters, "kernel_size": [k, k], "strides": [s, s],
                           "padding": pad, "use_bias": bias}}

    def bn(name, src):
        return {"class_name": "BatchNormalization", "name": name, "inbound_nodes":
                [[[src, 0, 0, {}]]], "config": {"epsilon": 1e-3}}

    layers = [{"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
               "config": {"batch_input_shape": [None, 64, 64, 1]}}]
    for stem in ("conv1", "conv2"):
        c, b = plan[stem]
        layers += [conv(c, 8, 3, 1, "valid", False), bn(b, c)]
    for i, w in enumerate((16, 32, 64, 128)):
        s1, b1, s2, b2, r, rb = plan[f"block{i + 1}"]
        layers += [conv(s1, w, 3, 1, "same", False, "SeparableConv2D"), bn(b1, s1),
                   conv(s2, w, 3, 1, "same", False, "SeparableConv2D"), bn(b2, s2),
                   conv(r, w, 1, 2, "same", False), bn(rb, r),
                   {"class_name": "MaxPooling2D", "name": f"pool{i}", "inbound_nodes": [],
                    "config": {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}}]
    layers.append(conv(plan["head"][0], 7, 3, 1, "same", True))
    return layers


def test_converter_maps_every_keras_weight_and_checks_the_graph():
    torch.manual_seed(0)
    src = MiniXception()
    for m in src.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    plan, weights = fer_convert.keras_arrays(src.state_dict())
    layers = _keras_config(plan)
    sd = fer_convert.to_state_dict(layers, weights)
    for k, v in src.state_dict().items():
        assert np.allclose(sd[k], v.numpy()), k
    bad = json.loads(json.dumps(layers))
    bad[-1]["config"]["filters"] = 8
    with pytest.raises(ValueError, match="expected"):
        fer_convert.to_state_dict(bad, weights)
    extra = {**weights, "stray": {"kernel": np.zeros(3)}}
    with pytest.raises(ValueError, match="not used"):
        fer_convert.to_state_dict(layers, extra)


def test_input_is_grey_64_scaled_to_minus_one_one():
    rgb = np.zeros((1, 32, 32, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luma 0.299 * 255 = 76
    x = to_input(rgb)
    assert x.shape == (1, 1, 64, 64)
    assert np.allclose(x, 76 / 127.5 - 1, atol=1e-6)
    assert np.allclose(to_input(np.full((1, 48, 48), 255, np.uint8)), 1.0)


def test_bad_weights_file_named(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "w.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(ExtractorError, match="w.safetensors"):
        load_minixception(junk)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ExtractorError, match="not mini-Xception weights"):
        load_minixception(tmp_path / "other.safetensors")
    with pytest.raises(ExtractorError, match="--fer-layer"):
        FerEncoder("fc7")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("fer-media")
    make_clip(d / "face.mp4", seconds=1.0, size=(320, 240), audio=False, face_height=0.7)
    make_clip(d / "blank.mp4", seconds=0.6, size=(320, 240), audio=False, face=False)
    face = cv2.cvtColor(cv2.resize(face_photo()[20:200, 40:220], (48, 48)), cv2.COLOR_RGB2GRAY)
    (d / "happy").mkdir()
    cv2.imwrite(str(d / "happy" / "a.png"), face)
    cv2.imwrite(str(d / "happy" / "b.png"), face[:, ::-1])
    (d / "sad").mkdir()
    cv2.imwrite(str(d / "sad" / "c.png"), face[::-1])
    return d


def _corpus(d):
    utts = [Utterance("test", str(i), 0, "A", 0, "happy", None, str(d / f))
            for i, f in enumerate(["face.mp4", "blank.mp4"])]
    return Corpus("t", ["happy"], {"test": [Dialogue("test", u.dialogue_id, [u]) for u in utts]},
                  pre_cut=True)


def test_extractor_through_the_job_and_rebuilt_from_its_record(clips, tmp_path):
    ext = FerFacesExtractor(FerEncoder("probs"), fps=4)
    store = FeatureStore(tmp_path / "s")
    rep = run_extraction(_corpus(clips), None, store, ext, progress=False)
    assert rep.n_present == 1 and [r for _, r in rep.missing] == ["no face detected"]
    t = store.table("video")
    v = t.vectors[t.row["test/0/0"]]
    assert v.shape == (7,) and abs(v.sum() - 1) < 1e-5 and t.count[t.row["test/0/0"]] >= 3
    meta = store.meta("video")
    assert meta["extractor"] == "fer-minixception" and meta["layer"] == "probs"
    assert meta["config"]["detector"] == "opencv-haar" and meta["config"]["face_size"] == 64
    again = rebuild(meta)
    assert setting_differences(meta, again.meta()) == []
    payload = again.loader(0)(str(clips / "face.mp4"), None, None)
    assert np.allclose(again.process([payload])[0][0], v, atol=1e-6)


def test_whole_frame_images_from_a_label_folder(clips, tmp_path):
    corpus = load_corpus("folder", meld_dir=str(clips))
    assert sorted(u.label for u in corpus.utterances()) == ["happy", "happy", "sad"]
    ext = FerFacesExtractor(FerEncoder("logits"), face_input="whole")
    store = FeatureStore(tmp_path / "s")
    run_extraction(corpus, None, store, ext, progress=False)
    u = next(u for u in corpus.utterances() if u.dialogue_id == "happy/a.png")
    got, present = store.load("video", [u.uid])
    img = cv2.imread(str(clips / "happy" / "a.png"), cv2.IMREAD_GRAYSCALE)
    direct = FerEncoder("logits").encode_faces(np.stack([img]))["logits"][0]
    assert present.all() and np.allclose(got[0], direct, atol=1e-4)
    assert store.meta("video")["config"]["faces"] == "whole"


def test_cli_pooled_layer_and_foreign_options(clips, tmp_path, capsys):
    man = tmp_path / "m.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dialogue_id", "turn", "speaker", "split", "label", "media"])
        w.writerow(["d", 0, "A", "test", "x", str(clips / "face.mp4")])
    rc = main(["extract", "video", "--extractor", "fer-minixception", "--fer-layer", "pooled",
               "--dataset", str(man), "--store", str(tmp_path / "s"), "--no-progress",
               "--workers", "0"])
    assert rc == 0
    assert FeatureStore(tmp_path / "s").meta("video")["width"] == 128
    rc = main(["extract", "video", "--extractor", "fer-minixception", "--model", "x.pth",
               "--dataset", str(man), "--store", str(tmp_path / "s2"), "--no-progress"])
    assert rc == 1 and "shipped weights" in capsys.readouterr().err


REAL = os.environ.get("AVAFN_REAL_DIR")


@pytest.mark.skipif(not REAL or not (Path(REAL or ".") / "fer2013").is_dir(),
                    reason="opt-in: needs $AVAFN_REAL_DIR/fer2013 (real FER2013 faces)")
def test_real_fer2013_accuracy_of_the_shipped_head():
    root = Path(REAL) / "fer2013"
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[::10]  # every 10th: 359 faces
    imgs = np.stack([cv2.imread(str(root / r["path"]), cv2.IMREAD_GRAYSCALE) for r in rows])
    y = np.array([FER_LABELS.index(r["label"]) for r in rows])
    pred = FerEncoder("logits").encode_faces(imgs)["logits"].argmax(1)
    # the full 3,589-face PrivateTest gives 58.2 % (benchmarks/real_table.py); chance ~25 %
    assert (pred == y).mean() > 0.5
