"""Resumed extraction is bit-identical to an uninterrupted one, for every extractor and batch
size (units of work never depend on where a run stopped); several wav2vec 2.0 layers from one
pass; precision recorded and bf16 close to fp32."""

import dataclasses

import numpy as np
import pytest
import torch
from extract_helpers import install_entry_point, make_corpus, make_media, make_tiny_bert
from synthetic_media import make_random_dan, make_tiny_wav2vec2

from avafn.data.corpus import Corpus, Dialogue
from avafn.extract.audio import Wav2Vec2Encoder, Wav2Vec2Extractor
from avafn.extract.faces import FaceConfig
from avafn.extract.job import run_extraction
from avafn.extract.registry import EXTRACTORS, rebuild, setting_differences
from avafn.extract.text import TextEncoder, TextExtractor
from avafn.extract.video import DANFacesExtractor, DANVideoEncoder
from avafn.store import FeatureStore, StoreError

FACES = FaceConfig(size=64)
TEXTS = ["hello world !", "the cat sat on the mat .", "", "you are very happy ?", "i am sad .",
         "dogs", None, "the dog sat on a mat , very very happy and sad cats .", "hi", "a"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    media = make_media(root / "media")
    words = sorted({w for t in TEXTS if t for w in t.split()})
    corpus = make_corpus(media)
    it = iter(TEXTS)  # one text per utterance, in corpus order
    texted = Corpus("toy", ["joy"], {s: [Dialogue(d.split, d.dialogue_id, [
        dataclasses.replace(u, text=next(it)) for u in d.utterances]) for d in ds]
        for s, ds in corpus.splits.items()})
    return {"media": media, "corpus": corpus, "texted": texted,
            "w2v": make_tiny_wav2vec2(root / "w2v", layers=3),
            "dan": make_random_dan(root / "dan.pth"),
            "bert": make_tiny_bert(root / "bert", words)}


def _build(env, name, batch):
    if name == "audio":
        return Wav2Vec2Extractor(Wav2Vec2Encoder(env["w2v"], batch_size=batch), pool_clips=4)
    if name == "video":
        return DANFacesExtractor(DANVideoEncoder(env["dan"], batch_size=batch), fps=3,
                                 face_config=FACES, unit_clips=3)
    if name == "text":
        ext = TextExtractor(TextEncoder(str(env["bert"])), batch_size=batch)
        ext.unit_size = 4
        return ext
    if name == "opensmile":
        return EXTRACTORS.get("opensmile")()
    return EXTRACTORS.get(name)(bands=5)


def _table(store, modality):
    t = FeatureStore(store).table(modality)
    o = np.argsort(t.uids)
    return t.uids[o], t.vectors[o], t.present[o], t.count[o], t.reason[o]


def _assert_identical(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # the same bits, not merely close


@pytest.mark.parametrize("name,batch", [("audio", 3), ("audio", 2), ("video", 5), ("text", 3),
                                        ("opensmile", None), ("band-energy", None)])
def test_resume_is_bit_identical(env, tmp_path, monkeypatch, name, batch):
    install_entry_point(monkeypatch, EXTRACTORS, "avafn.extractors", "band-energy",
                        "plugin_extractor:BandEnergy")
    corpus = env["texted"] if name == "text" else env["corpus"]
    full = tmp_path / "full"
    run_extraction(corpus, env["media"], full, _build(env, name, batch), shard_size=3,
                   progress=False)
    part = tmp_path / "part"

    def crash_after(k):
        n = [0]

        def hook(uid):
            n[0] += 1
            if n[0] == k:
                raise KeyboardInterrupt
        return hook

    with pytest.raises(KeyboardInterrupt):  # stops inside a unit: the writer keeps 5 entries
        run_extraction(corpus, env["media"], part, _build(env, name, batch), shard_size=3,
                       progress=False, on_written=crash_after(5))
    modality = "text" if name == "text" else "audio" if name != "video" else "video"
    assert len(FeatureStore(part).done_uids(modality)) == 5
    rep = run_extraction(corpus, env["media"], part, _build(env, name, batch), limit=2,
                         shard_size=3, progress=False)
    assert (rep.n_skipped, rep.n_written, rep.n_left) == (5, 2, 3)
    rep = run_extraction(corpus, env["media"], part, _build(env, name, batch), shard_size=3,
                         progress=False)
    assert (rep.n_skipped, rep.n_written) == (7, 3)
    _assert_identical(_table(part, modality), _table(full, modality))


def test_several_layers_in_one_pass(env, tmp_path, capsys):
    # no padding bound: each unit's clips share one batch whatever their lengths
    enc = Wav2Vec2Encoder(env["w2v"], layers=[1, 2, 3], batch_size=3, max_padding=float("inf"))
    ext = Wav2Vec2Extractor(enc, pool_clips=4)
    calls = {"n": 0}
    real = enc.net.forward

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    enc.net.forward = counting
    rep = run_extraction(env["corpus"], env["media"], tmp_path / "multi", ext, progress=False)
    assert rep.outputs == ["audio-l1", "audio-l2", "audio-l3"] and rep.n_present == 4
    # units of 4 clips hold 2, 0 and 2 decodable ones: one forward each (batch 3), all layers
    assert calls["n"] == 2
    st = FeatureStore(tmp_path / "multi")
    for L in (1, 2, 3):
        meta = st.meta(f"audio-l{L}")
        assert meta["layer"] == L and meta["config"]["layer"] == L
        one = Wav2Vec2Extractor(Wav2Vec2Encoder(env["w2v"], layer=L, batch_size=3), pool_clips=4)
        run_extraction(env["corpus"], env["media"], tmp_path / f"l{L}", one, progress=False)
        # the same settings as a one-layer extraction (so predict rebuilds it as one)
        assert meta["config_hash"] == FeatureStore(tmp_path / f"l{L}").meta("audio")["config_hash"]
        a, b = _table(tmp_path / "multi", f"audio-l{L}"), _table(tmp_path / f"l{L}", "audio")
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
        re = rebuild(meta)
        assert re.modality == f"audio-l{L}" and re.encoder.layers == [L]
        assert setting_differences(meta, re.meta()) == []
    # the last layer is last_hidden_state, not hidden_states[-1] (transformers 5)
    assert not np.allclose(_table(tmp_path / "multi", "audio-l3")[1],
                           _table(tmp_path / "multi", "audio-l2")[1])
    # CLI
    from extract_helpers import write_manifest

    from avafn.cli import main

    man = write_manifest(env["corpus"], env["media"], tmp_path / "m.csv")
    argv = ["extract", "audio", "--dataset", str(man), "--store", str(tmp_path / "cli"),
            "--model", str(env["w2v"]), "--layers", "1,3", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert FeatureStore(tmp_path / "cli").modalities() == ["audio-l1", "audio-l3"]
    assert main([*argv[:-5], "--layers", "1,x", "--workers", "0", "--no-progress"]) == 1
    assert "--layers '1,x': expected comma-separated" in capsys.readouterr().err


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_precision_recorded_and_bf16_close_to_fp32(env, tmp_path, capsys):
    """bf16 autocast vectors match fp32 within cosine >= 0.99 (tiny random models, generated
    clips); the precision is recorded, a store never mixes them, predict rebuilds it."""
    results = {}
    for p in ("fp32", "bf16"):
        a = Wav2Vec2Extractor(Wav2Vec2Encoder(env["w2v"], precision=p))
        v = DANFacesExtractor(DANVideoEncoder(env["dan"], precision=p), fps=3, face_config=FACES)
        for ext in (a, v):
            run_extraction(env["corpus"], env["media"], tmp_path / p, ext, progress=False)
            meta = FeatureStore(tmp_path / p).meta(ext.modality)
            assert meta["config"]["precision"] == p
            assert rebuild(meta).encoder.precision == p
        results[p] = {m: _table(tmp_path / p, m) for m in ("audio", "video")}
    for m in ("audio", "video"):
        f, b = results["fp32"][m], results["bf16"][m]
        assert (f[2] == b[2]).all() and f[2].sum() == 4
        cos = _cos(f[1][f[2]], b[1][b[2]])
        assert cos.min() >= 0.99, (m, cos)
        assert not np.array_equal(f[1], b[1])  # bf16 really ran
    with pytest.raises(StoreError, match="already holds audio features"):
        run_extraction(env["corpus"], env["media"], tmp_path / "fp32",
                       Wav2Vec2Extractor(Wav2Vec2Encoder(env["w2v"], precision="bf16")),
                       progress=False)
    assert Wav2Vec2Encoder(env["w2v"]).precision == "fp32"  # the CPU default (pinned)


def test_cpu_precision_follows_the_machines_bf16_support(monkeypatch):
    """Without a choice, CPU extraction runs bf16 where the CPU has native bf16 (AMX or
    AVX-512 BF16), fp32 elsewhere; AVAFN_CPU_PRECISION decides instead; CUDA is bf16."""
    from avafn.errors import UserError
    from avafn.extract import base

    monkeypatch.delenv("AVAFN_CPU_PRECISION", raising=False)
    for flags, want in (({"avx2", "avx512f"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16"),
                        ({"amx_tile", "amx_bf16"}, "bf16"), (set(), "fp32")):
        monkeypatch.setattr(base, "_cpu_flags", lambda f=flags: f)
        assert base.default_precision("cpu") == want, flags
        assert base.default_precision("cuda") == "bf16"
    monkeypatch.setenv("AVAFN_CPU_PRECISION", "bf16")
    monkeypatch.setattr(base, "_cpu_flags", set)
    assert base.check_precision(None, "cpu") == "bf16"
    assert base.check_precision("fp32", "cpu") == "fp32"  # an explicit choice wins
    monkeypatch.setenv("AVAFN_CPU_PRECISION", "half")
    with pytest.raises(UserError, match="AVAFN_CPU_PRECISION='half': expected fp32 or bf16"):
        base.default_precision("cpu")


def test_store_written_before_precision_was_recorded(env, tmp_path):
    """Old metadata (no precision key) still rebuilds, and appending to it in the precision
    it was made with is allowed; another precision is refused."""
    import json

    st = tmp_path / "old"
    ext = Wav2Vec2Extractor(Wav2Vec2Encoder(env["w2v"]), pool_clips=4)
    run_extraction(env["corpus"], env["media"], st, ext, splits=["train"], progress=False)
    mp = st / "audio" / "meta.json"
    meta = json.loads(mp.read_text())
    del meta["config"]["precision"]
    from avafn.io import config_hash

    meta["config_hash"] = config_hash(meta["config"])
    mp.write_text(json.dumps(meta))
    assert rebuild(meta).encoder.precision == "fp32"
    assert setting_differences(meta, rebuild(meta).meta()) == []
    rep = run_extraction(env["corpus"], env["media"], st, ext, progress=False)
    assert rep.n_written == 3 and "precision" not in FeatureStore(st).meta("audio")["config"]
    with pytest.raises(StoreError, match="already holds"):
        run_extraction(env["corpus"], env["media"], st,
                       Wav2Vec2Extractor(Wav2Vec2Encoder(env["w2v"], precision="bf16")),
                       progress=False)


def test_torch_threads_are_one(env):
    assert torch.get_num_threads() == 1  # the conftest's setting, which the figures assume
