"""Single-utterance corpora: the RAVDESS reader (8 classes and MELD-7), the folder reader,
speaker-independent folds, fold stores, and AVAFN trained on one-utterance dialogues."""

import wave
from collections import Counter

import numpy as np
import pytest

from avafn.cli import main
from avafn.data import load_corpus
from avafn.data.acted import (
    RAVDESS_LABELS,
    RAVDESS_TO_MELD,
    fold_corpus,
    fold_store,
    make_folds,
    read_folder,
    read_ravdess,
)
from avafn.data.corpus import MELD_LABELS, DataError
from avafn.data.registry import named_corpora
from avafn.store import FeatureStore


def _wav(path, seconds=0.3, hz=220.0, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(x.tobytes())


@pytest.fixture(scope="module")
def ravdess(tmp_path_factory):
    """6 actors x 8 emotions x 2 repetitions, RAVDESS file names; plus a song file."""
    root = tmp_path_factory.mktemp("ravdess")
    for actor in range(1, 7):
        for emo in range(1, 9):
            for rep in (1, 2):
                name = f"03-01-{emo:02d}-01-01-{rep:02d}-{actor:02d}.wav"
                _wav(root / f"Actor_{actor:02d}" / name, hz=150 + 40 * emo + 3 * actor)
    _wav(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: left out, counted
    (root / "README.txt").write_text("not media")
    return root


def test_registered_names():
    assert {"ravdess", "ravdess-meld7", "folder"} <= set(named_corpora())


def test_ravdess_labels_speakers_and_actor_independent_folds(ravdess):
    c = read_ravdess(ravdess, k=3, fold=1)
    assert c.labels == list(RAVDESS_LABELS) and c.reader == "ravdess"
    assert c.source["skipped"] == {"song (vocal channel 02)": 1}
    utts = c.utterances()
    assert len(utts) == 6 * 8 * 2 and all(len(d) == 1 for s in c.splits.values() for d in s)
    u = next(u for u in utts if u.dialogue_id.endswith("03-01-05-01-01-02-04.wav"))
    assert (u.label, u.speaker) == ("angry", "actor04")
    by_split = {s: {u.speaker for u in c.utterances(s)} for s in c.splits}
    assert by_split == {"train": {"actor01", "actor02"}, "dev": {"actor05", "actor06"},
                        "test": {"actor03", "actor04"}}
    assert c.source["folds"]["groups"] == [["actor01", "actor02"], ["actor03", "actor04"],
                                           ["actor05", "actor06"]]


def test_every_actor_is_tested_exactly_once_over_the_folds(ravdess):
    seen = Counter()
    for f in range(3):
        c = read_ravdess(ravdess, k=3, fold=f)
        tested = {u.speaker for u in c.utterances("test")}
        assert not tested & {u.speaker for u in c.utterances("train") + c.utterances("dev")}
        seen.update(tested)
    assert seen == Counter({f"actor{a:02d}": 1 for a in range(1, 7)})


def test_meld7_mapping_through_the_registry(ravdess):
    c = load_corpus("ravdess-meld7", meld_dir=str(ravdess))
    assert c.labels == list(MELD_LABELS)
    counts = Counter(u.label for u in c.utterances())
    assert counts["neutral"] == 2 * counts["joy"]  # neutral + calm
    assert set(counts) == set(RAVDESS_TO_MELD.values())


def test_ravdess_errors_name_the_folder_or_file(tmp_path, ravdess, monkeypatch):
    with pytest.raises(DataError, match="no RAVDESS speech files"):
        read_ravdess(tmp_path)
    _wav(tmp_path / "03-01-09-01-01-01-01.wav")
    with pytest.raises(DataError, match="03-01-09-01-01-01-01.wav"):
        read_ravdess(tmp_path)
    with pytest.raises(DataError, match="6 speakers cannot make 8"):
        read_ravdess(ravdess, k=8)
    with pytest.raises(DataError, match="--fold 5"):
        read_ravdess(ravdess, k=3, fold=5)
    monkeypatch.delenv("AVAFN_RAVDESS_DIR", raising=False)
    monkeypatch.delenv("AVAFN_REAL_DIR", raising=False)
    assert main(["extract", "audio", "--extractor", "opensmile", "--dataset", "ravdess",
                 "--store", str(tmp_path / "s")]) == 1


def test_folder_reader_label_folders_and_labels_csv(tmp_path):
    for lab, n in (("happy", 4), ("sad", 3), ("angry", 2)):
        for i in range(n):
            _wav(tmp_path / "a" / lab / f"{i}.wav")
    c = read_folder(tmp_path / "a", k=3)
    assert c.labels == ["happy", "sad", "angry"]  # most frequent first
    assert c.source["labels_from"] == "folder names"
    # stratified: every fold holds each label with >= 2 items
    for f in c.source["folds"]["groups"]:
        assert {k.split("/")[0] for k in f} >= {"happy", "sad"}
    b = tmp_path / "b"
    for i in range(6):
        _wav(b / f"clip{i}.wav")
    (b / "labels.csv").write_text("path,label,speaker\n" + "".join(
        f"clip{i}.wav,{'x' if i % 2 else 'y'},spk{i // 2}\n" for i in range(6)))
    c = read_folder(b, k=3, fold=2)
    assert {u.speaker for u in c.utterances("test")} == {"spk2"}
    assert {u.speaker for u in c.utterances("dev")} == {"spk0"}
    (b / "labels.csv").write_text("path,label,split\nclip0.wav,x,train\nclip1.wav,y,test\n")
    c = read_folder(b)
    assert [len(c.utterances(s)) for s in ("train", "test")] == [1, 1] and "dev" not in c.splits
    (b / "labels.csv").write_text("path,label\nmissing.wav,x\n")
    with pytest.raises(DataError, match=r"labels.csv:2: media file .*missing.wav"):
        read_folder(b)


def test_make_folds_without_speakers_is_seeded_and_stratified():
    from avafn.data.acted import Item

    items = [Item(f"{lab}{i}", "", lab, None, "") for lab in "ab" for i in range(6)]
    f0, f1 = make_folds(items, 3, seed=0), make_folds(items, 3, seed=1)
    assert f0 != f1 and make_folds(items, 3, seed=0) == f0
    assert all(sum(k.startswith("a") for k in f) == 2 for f in f0)


def test_fold_store_rekeys_and_standardises_on_train(ravdess, tmp_path):
    base_corpus = read_ravdess(ravdess, k=3, fold=0)
    base = FeatureStore(tmp_path / "base")
    base.create_modality("audio", {"extractor": "toy", "width": 2, "config": {"a": 1}})
    rng = np.random.default_rng(0)
    vecs = {}
    with base.writer("audio") as w:
        for u in base_corpus.utterances():
            vecs[u.dialogue_id] = rng.normal(5, 3, 2).astype(np.float32)
            w.add(u.uid, vecs[u.dialogue_id], 1)
    c2 = fold_corpus(base_corpus, 2)
    assert c2.source["folds"]["fold"] == 2
    raw = fold_store(base, c2, tmp_path / "f2")
    u = c2.utterances("test")[0]
    assert u.uid.startswith("test/") and np.allclose(raw.load("audio", [u.uid])[0][0],
                                                     vecs[u.dialogue_id])
    z = fold_store(base, c2, tmp_path / "f2z", standardize=True)
    xt, _ = z.load("audio", [u.uid for u in c2.utterances("train")])
    assert np.allclose(xt.mean(0), 0, atol=1e-5) and np.allclose(xt.std(0), 1, atol=1e-4)
    meta = z.meta("audio")
    assert meta["extractor"] == "standardized" and meta["config"]["fitted_on"] == \
        "train of fold 2/3" and meta["config"]["inner"]["extractor"] == "toy"
    assert fold_store(base, c2, tmp_path / "f2z", standardize=True).done_uids("audio") == \
        {u.uid for u in c2.utterances()}  # reused, not rewritten


def test_avafn_on_one_utterance_dialogues_learns_separable_features(ravdess, tmp_path):
    """AVAFN trains and scores on one-utterance dialogues (no context) of a fold."""
    from avafn.training.evaluate import score
    from avafn.training.loop import train

    c = read_ravdess(ravdess, meld7=True, k=3, fold=0)
    store = FeatureStore(tmp_path / "s")
    store.create_modality("audio", {"extractor": "toy", "width": 8, "config": {}})
    rng = np.random.default_rng(0)
    with store.writer("audio") as w:
        for u in c.utterances():
            v = rng.normal(0, 0.3, 8)
            v[c.labels.index(u.label)] += 2.0
            w.add(u.uid, v, 1)
    run = train(c, store, tmp_path / "run", {"modalities": ["audio"], "max_epochs": 15,
                                             "patience": 15, "lr": 3e-3}, seeds=[0],
                progress=False)
    rep = score(run, "test", c, store)
    assert rep["n_utterances"] == 32 and rep["accuracy"]["mean"] > 60
    # room for the parties of a real conversation, though every training dialogue has one
    import json

    assert json.loads((run / "config.json").read_text())["model"]["n_parties"] == 9


def test_standardized_store_is_rebuilt_by_its_record(ravdess, tmp_path):
    """The standardised store's record rebuilds an extractor (openSMILE inside) that gives
    new media the stored, standardised vectors: what ``avafn predict`` relies on."""
    from avafn.extract.job import run_extraction
    from avafn.extract.opensmile import OpenSmileExtractor
    from avafn.extract.registry import rebuild, setting_differences

    c = read_ravdess(ravdess, k=3, fold=0)
    small = fold_corpus(c, 0)
    for s in small.splits:
        small.splits[s] = small.splits[s][:6]
    base = FeatureStore(tmp_path / "base")
    run_extraction(small, None, base, OpenSmileExtractor(), progress=False)
    z = fold_store(base, small, tmp_path / "z", standardize=True)
    meta = z.meta("audio")
    ext = rebuild(meta)
    assert setting_differences(meta, ext.meta()) == []
    u = small.utterances("test")[0]
    v, _n, why = ext.process([ext.loader(0)(u.media, None, None)])[0]
    stored, _ = z.load("audio", [u.uid])
    assert why == "" and np.allclose(v, stored[0], atol=1e-4)
    assert not np.allclose(v, base.table("audio").vectors[0])  # not the raw functionals
