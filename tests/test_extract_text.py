import json

import numpy as np
import pytest
from extract_helpers import make_tiny_bert

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.extract.job import run_extraction
from avafn.extract.text import (
    TextEncoder,
    TextExtractor,
    TextModelError,
    default_model_dir,
    extract_text,
)
from avafn.store import FeatureStore, StoreError

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "happy", "sad", "i", "am", "very", "you",
         "are", "##s", "hello", "world", "!", ".", ",", "?"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), WORDS)


def _corpus(texts_per_dialogue):
    splits = {"train": [], "dev": []}
    for k, texts in enumerate(texts_per_dialogue):
        split = "train" if k % 2 == 0 else "dev"
        utts = [Utterance(split, str(k), t, f"S{t % 2}", t % 2, "x", text)
                for t, text in enumerate(texts)]
        splits[split].append(Dialogue(split, str(k), utts))
    return Corpus("toy", ["x"], splits)


TEXTS = [["hello world !", "the cat sat on the mat .", "", "you are very happy ?"],
         ["i am sad .", "dogs", None],
         ["the dog sat on a mat , very very very happy and very sad cats ."]]


def test_hf_mean_pool_store_meta_missing_and_padding_invariance(tiny_bert, tmp_path):
    c = _corpus(TEXTS)
    s = extract_text(c, tmp_path / "st", model=str(tiny_bert), batch_size=3, progress=False)
    assert s["extractor"] == "hf-mean-pool" and s["width"] == 16
    assert (s["utterances"], s["embedded"], s["missing"], s["already_done"]) == (8, 6, 2, 0)
    st = FeatureStore(tmp_path / "st")
    meta = st.meta("text")
    assert meta["model_id"] == str(tiny_bert.resolve()) and meta["width"] == 16
    assert meta["config"]["normalize"] is False and meta["config"]["max_length"] == 32
    assert meta["config"]["pooling"] == "masked mean"
    uids = [u.uid for u in c.utterances()]
    x, present = st.load("text", uids, width=16)
    assert present.tolist() == [True, True, False, True, True, True, True, False]
    assert dict(st.missing("text")) == {"train/0/2": "empty text", "dev/1/2": "no text"}
    assert not x[~present].any() and np.abs(x[present]).sum(1).min() > 0
    # token counts are stored: [CLS] hello world ! [SEP]
    assert st.table("text").count[st.table("text").row["train/0/0"]] == 5
    # one text at a time gives the same vectors as padded batches (the mask is honoured)
    enc = TextEncoder(str(tiny_bert))
    texts = [u.text for u in c.utterances() if u.text]
    one = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_allclose(x[present], one, atol=1e-5)
    # and equal to an explicit mean over the non-padding tokens
    import torch
    tok = enc.tokenizer(texts[1], return_tensors="pt")
    with torch.no_grad():
        h = enc._hf(**tok).last_hidden_state[0]
    np.testing.assert_allclose(one[1], h.mean(0).numpy(), atol=1e-5)


def test_resume_and_interrupted_run(tiny_bert, tmp_path, monkeypatch):
    c = _corpus(TEXTS)
    enc = TextEncoder(str(tiny_bert), normalize=True)
    full = extract_text(c, tmp_path / "a", encoder=enc, progress=False)
    assert full["embedded"] == 6
    again = extract_text(c, tmp_path / "a", encoder=enc, progress=False)
    assert (again["already_done"], again["embedded"], again["missing"]) == (8, 0, 0)
    assert len(list((tmp_path / "a" / "text").glob("part-*.npz"))) == 1

    # interrupted in the second unit of four utterances: the first unit is kept, the rerun
    # does the rest (the batches never cross a unit, so the vectors are the same bits)
    calls = {"n": 0}
    real_encode = enc.encode

    def dying(texts, batch_size=64):
        calls["n"] += 1
        if calls["n"] == 3:  # unit 1: 3 texts in 2 batches; unit 2 starts with call 3
            raise KeyboardInterrupt
        return real_encode(texts, batch_size)

    ext = TextExtractor(enc, batch_size=2)
    ext.unit_size = 4
    monkeypatch.setattr(enc, "encode", dying)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(c, None, tmp_path / "b", ext, progress=False)
    st = FeatureStore(tmp_path / "b")
    assert st.done_uids("text") == {u.uid for u in c.utterances()[:4]}
    monkeypatch.setattr(enc, "encode", real_encode)
    rep = run_extraction(c, None, tmp_path / "b", ext, progress=False)
    assert (rep.n_skipped, rep.n_present, len(rep.missing)) == (4, 3, 1)
    uids = [u.uid for u in c.utterances()]
    xa, pa = FeatureStore(tmp_path / "a").load("text", uids)
    xb, pb = FeatureStore(tmp_path / "b").load("text", uids)
    np.testing.assert_allclose(xa, xb, atol=1e-5)
    assert (pa == pb).all()
    np.testing.assert_allclose(np.linalg.norm(xa[pa], axis=1), 1.0, atol=1e-5)
    # another configuration into the same store is refused, not mixed
    with pytest.raises(StoreError, match="already holds text features"):
        extract_text(c, tmp_path / "b", model=str(tiny_bert), progress=False)


def test_splits_filter_and_bad_split(tiny_bert, tmp_path):
    c = _corpus(TEXTS)
    enc = TextEncoder(str(tiny_bert))
    s = extract_text(c, tmp_path / "s", encoder=enc, splits=["dev"], progress=False)
    assert s["utterances"] == 3 and FeatureStore(tmp_path / "s").done_uids("text") == {
        "dev/1/0", "dev/1/1", "dev/1/2"}
    with pytest.raises(ValueError, match="no split"):
        extract_text(c, tmp_path / "s", encoder=enc, splits=["test"], progress=False)


def test_packaged_minilm_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (default_model_dir() / "model.safetensors").is_file()
    enc = TextEncoder("default")
    assert enc.kind == "sentence-transformers" and enc.width == 384 and enc.normalize
    x = enc.encode(["I am so happy today!", "Today I feel really glad and joyful.",
                    "The train leaves from platform nine at noon."])
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2
    c = _corpus([["Oh my God, he’s lost it.", "What?"]])
    s = extract_text(c, tmp_path / "st", encoder=enc, progress=False)
    meta = FeatureStore(tmp_path / "st").meta("text")
    assert s["embedded"] == 2 and meta["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["extractor"] == "sentence-transformers" and meta["config"]["normalize"] is True
    assert meta["config"]["max_length"] == 256


def test_cli_extract_text_on_manifest(tiny_bert, tmp_path, capsys):
    from avafn.cli import main

    m = tmp_path / "m.csv"
    m.write_text("dialogue_id,turn,speaker,label,split,text\n"
                 "1,0,A,calm,train,hello world\n1,1,B,calm,train,\n2,0,A,sad,test,i am sad\n")
    argv = ["extract", "text", "--dataset", str(m), "--store", str(tmp_path / "st"),
            "--model", str(tiny_bert), "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["embedded"], out["missing"]) == (2, 1)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["already_done"] == 3
    # bad input: a clear one-line error naming the file and row, exit status 1
    m.write_text("dialogue_id,turn,speaker,label,split\n1,0,A,calm,train\n1,0,B,calm,train\n")
    assert main(argv) == 1
    assert "m.csv: line 3: duplicate" in capsys.readouterr().err


def test_unknown_model_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TextModelError, match="not-a-model.*neither a local folder nor a cached"):
        TextEncoder("someone/not-a-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextModelError, match="not a model folder"):
        TextEncoder(str(tmp_path / "empty"))


def test_text_extraction_and_training_need_no_pyav(tmp_path):
    """PyAV is imported where media is read: the text job (the demo), training and
    evaluation import and run on a machine without it (checked in a process where importing
    av fails)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, importlib.abc\n"
        "class NoAV(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'av':\n"
        "            raise ImportError('no av here')\n"
        "sys.meta_path.insert(0, NoAV())\n"
        "import avafn.cli, avafn.demo, avafn.training.evaluate, avafn.training.loop\n"
        "from avafn.extract import job, media\n"
        "try:\n"
        "    media.decode_audio(sys.argv[1])\n"
        "except ImportError as e:\n"
        "    print('media needs av:', e)\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.wav")], env=env, check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "media needs av: no av here" in r.stdout
