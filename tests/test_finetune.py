"""``avafn finetune text``: fine-tuning plumbing with a tiny random BERT saved locally, on a
small manifest cut from the real MELD annotations at test time (never copied into the repo)."""

import csv
import json
import os

import numpy as np
import pytest
import torch

from avafn.cli import main
from avafn.data import load_corpus
from avafn.extract.text import FINETUNE_FILE, TextEncoder, dialogue_inputs
from avafn.store import FeatureStore
from avafn.training.finetune import (
    FinetuneConfig,
    FinetuneError,
    encoder_alone,
    extract_finetuned,
    finetune_text,
    fit_encoder,
    fold_of,
)

MELD = os.environ.get("AVAFN_MELD_DIR")
needs_meld = pytest.mark.skipif(not MELD, reason="AVAFN_MELD_DIR not set (real MELD CSVs)")
N_DIALOGUES = {"train": 8, "dev": 4, "test": 4}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """The first dialogues of each MELD split written as a generic manifest (CSV)."""
    if not MELD:
        pytest.skip("AVAFN_MELD_DIR not set (real MELD CSVs)")
    meld = load_corpus("meld", meld_dir=MELD)
    path = tmp_path_factory.mktemp("manifest") / "corpus.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dialogue_id", "turn", "speaker", "split", "label", "text"])
        for split, n in N_DIALOGUES.items():
            for d in meld.splits[split][:n]:
                for u in d.utterances:
                    w.writerow([f"m{d.dialogue_id}", u.turn, u.speaker, split, u.label, u.text])
    return path


@pytest.fixture(scope="module")
def tiny_bert(manifest, tmp_path_factory):
    """A tiny randomly initialised BERT whose vocabulary is the manifest's words."""
    from transformers import BertConfig, BertModel, BertTokenizer

    corpus = load_corpus(str(manifest))
    words = sorted({w for u in corpus.utterances() for w in (u.text or "").lower().split()})
    d = tmp_path_factory.mktemp("tiny-bert")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                            *words]) + "\n")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    return d


def _cfg(tiny_bert, **kw):
    return FinetuneConfig(**{"base_model": str(tiny_bert), "lr": 1e-3, "batch_size": 16,
                             "max_epochs": 3, "patience": 3, **kw})


def test_dialogue_inputs_speaker_tagged_most_recent_first():
    from avafn.data.corpus import Utterance

    utts = [Utterance("train", "d", t, s, 0, "x", text)
            for t, (s, text) in enumerate([("Ann", "hi"), ("Bob", " yo "), ("Ann", ""),
                                           ("Cy", "ok")])]
    assert dialogue_inputs(utts) == ["hi", "yo", "", "ok"]
    assert dialogue_inputs(utts, 2, "[SEP]") == [
        "Ann: hi", "Bob: yo [SEP] Ann: hi", "", "Cy: ok [SEP] Ann:  [SEP] Bob: yo"]


def test_finetune_settings_refused_with_one_line():
    with pytest.raises(FinetuneError, match="folds"):
        FinetuneConfig(folds=1)
    with pytest.raises(FinetuneError, match="unknown finetune setting"):
        FinetuneConfig.from_dict({"epochs": 2})


def test_manifest_finetune_extract_train_through_the_cli(manifest, tiny_bert, tmp_path,
                                                          capsys):
    """Another corpus (a manifest) goes finetune → extract → train without code changes, and
    predict rebuilds the same fine-tuned extractor from the run."""
    ft, store, run = tmp_path / "ft", tmp_path / "store", tmp_path / "run"
    assert main(["finetune", "text", "--dataset", str(manifest), "--store", str(store),
                 "--out", str(ft), "--base-model", str(tiny_bert), "--lr", "1e-3",
                 "--batch-size", "16", "--max-epochs", "2", "--patience", "2",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    # --no-progress hides the libraries' bars too (model loading and saving)
    assert "Loading weights" not in captured.err and "Writing model" not in captured.err
    rec = json.loads((ft / "model" / FINETUNE_FILE).read_text())
    # a self-describing model folder: weights, config, tokenizer, head, record
    for f in ("config.json", "model.safetensors", "tokenizer_config.json", "head.safetensors"):
        assert (ft / "model" / f).is_file(), f
    assert not list(ft.rglob("*.bin")) and not list(ft.rglob("*.pt")) and not (ft / "train").exists()
    assert rec["base_model"] == str(tiny_bert.resolve())
    assert rec["settings"]["max_epochs"] == 2 and rec["corpus"]["name"] == "corpus"
    assert len(rec["corpus"]["fingerprint"]) == 16 and len(rec["history"]) == 2
    assert rec["best_dev_f1"] == max(h["dev_f1"] for h in rec["history"])
    assert summary["best_epoch"] == rec["best_epoch"]
    corpus = load_corpus(str(manifest))
    st = FeatureStore(store)
    meta = st.meta("text")
    assert meta["config"]["finetune"]["corpus"]["fingerprint"] == rec["corpus"]["fingerprint"]
    assert meta["config"]["finetune"]["base_model"] == rec["base_model"]
    assert st.done_uids("text") >= {u.uid for u in corpus.utterances() if u.text}
    assert set(summary["encoder_alone_weighted_f1"]) == {"dev", "test"}
    # the encoder alone = its head on the stored vectors = the dev score it was selected on
    assert encoder_alone(corpus, st, ft, ["dev"])["dev"] == pytest.approx(rec["best_dev_f1"])

    assert main(["train", "--dataset", str(manifest), "--store", str(store), "--out", str(run),
                 "--modalities", "text", "--max-epochs", "2", "--model",
                 json.dumps({"d_model": 16, "d_ff": 16, "d_context": 8, "d_party": 8,
                             "d_emotion": 8, "d_att": 8}), "--no-progress"]) == 0
    assert "test weighted F1" in capsys.readouterr().out

    from avafn.data.corpus import Corpus
    from avafn.inference import Featurizer

    desc = json.loads((run / "config.json").read_text())
    feat = Featurizer.from_run(desc)
    assert feat.extractors["text"].encoder.finetune["corpus"] == rec["corpus"]
    dia = corpus.dialogues("test")[0]
    fresh = FeatureStore(tmp_path / "fresh")
    feat.extract(Corpus("new", corpus.labels, {"test": [dia]}), fresh)
    uids = [u.uid for u in dia.utterances]
    np.testing.assert_allclose(fresh.load("text", uids)[0], st.load("text", uids)[0], atol=1e-5)


def test_resume_after_a_kill_between_epochs_gives_the_same_encoder(manifest, tiny_bert,
                                                                    tmp_path):
    from safetensors.torch import load_file

    corpus = load_corpus(str(manifest))
    args = (_cfg(tiny_bert), corpus.dialogues("train"), corpus.dialogues("dev"), corpus.labels,
            {"base_model": "tiny"})
    whole = fit_encoder(tmp_path / "whole", *args, progress=False)

    class Kill(Exception):
        pass

    def kill_after_epoch(rec):
        if rec["epoch"] == 2:
            raise Kill

    with pytest.raises(Kill):
        fit_encoder(tmp_path / "killed", *args, progress=False, on_epoch_end=kill_after_epoch)
    from avafn.checkpoint import load_state

    state = load_state(tmp_path / "killed" / "train" / "state.safetensors")
    assert state["epoch"] == 2 and not (tmp_path / "killed" / "model").exists()
    with pytest.raises(FinetuneError, match="unfinished fine-tuning with other settings"):
        fit_encoder(tmp_path / "killed", _cfg(tiny_bert, lr=2e-3), *args[1:], progress=False)
    seen = []
    resumed = fit_encoder(tmp_path / "killed", *args, progress=False, on_epoch_end=seen.append)
    assert [r["epoch"] for r in seen] == [3]  # only the unfinished epoch ran
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]] == strip
    assert resumed["best_epoch"] == whole["best_epoch"]
    for f in ("model.safetensors", "head.safetensors"):
        a, b = (load_file(str(tmp_path / r / "model" / f)) for r in ("whole", "killed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    # finished: never trained again
    assert fit_encoder(tmp_path / "killed", *args, progress=False,
                       on_epoch_end=kill_after_epoch) == resumed


def test_cross_fitting_embeds_each_training_dialogue_with_the_encoder_that_did_not_see_it(
        manifest, tiny_bert, tmp_path):
    corpus = load_corpus(str(manifest))
    cfg = _cfg(tiny_bert, folds=2, max_epochs=1, context_turns=2)
    rec = finetune_text(corpus, tmp_path / "ft", cfg, progress=False)
    assert rec["settings"]["folds"] == 2 and rec["fold"] is None
    train = corpus.dialogues("train")
    fold = fold_of(train, 2, cfg.seed)
    assert sorted(set(fold)) == [0, 1]
    for i in range(2):
        frec = json.loads((tmp_path / "ft" / "folds" / f"fold-{i}" / "model" / FINETUNE_FILE)
                          .read_text())
        assert frec["fold"] == {"index": i, "of": 2}
        assert frec["n_train_utterances"] == sum(len(d) for d, f in zip(train, fold) if f != i)
    st = FeatureStore(tmp_path / "store")
    summary = extract_finetuned(corpus, st, tmp_path / "ft", progress=False)
    assert summary["fold-0"]["embedded"] + summary["fold-1"]["embedded"] == sum(
        len(d) for d in train)
    assert summary["full"]["already_done"] == sum(len(d) for d in train)
    full = TextEncoder(str(tmp_path / "ft" / "model"))
    assert full.context_turns == 2
    for i in range(2):
        d = next(d for d, f in zip(train, fold) if f == i)
        enc = TextEncoder(str(tmp_path / "ft" / "folds" / f"fold-{i}" / "model"))
        uids = [u.uid for u in d.utterances]
        stored = st.load("text", uids)[0]
        np.testing.assert_allclose(stored, enc.encode(enc.inputs(d.utterances)), atol=1e-5)
        assert not np.allclose(stored, full.encode(full.inputs(d.utterances)), atol=1e-3)
    d = corpus.dialogues("dev")[0]
    np.testing.assert_allclose(st.load("text", [u.uid for u in d.utterances])[0],
                               full.encode(full.inputs(d.utterances)), atol=1e-5)
    # another setting in the same folder is refused instead of mixing two encoders
    with pytest.raises(FinetuneError, match="other settings"):
        finetune_text(corpus, tmp_path / "ft", _cfg(tiny_bert, folds=0), progress=False)


def test_a_model_with_remote_code_is_refused_without_running_it(manifest, tiny_bert, tmp_path):
    import shutil

    d = tmp_path / "remote"
    shutil.copytree(tiny_bert, d)
    marker = tmp_path / "ran"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                               "from transformers import BertModel as Evil\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "evil.Evil"}
    (d / "config.json").write_text(json.dumps(cfg))
    corpus = load_corpus(str(manifest))
    try:
        finetune_text(corpus, tmp_path / "ft", _cfg(d, max_epochs=1), progress=False)
    except (FinetuneError, ValueError):
        pass
    assert not marker.exists()


def test_streaming_gives_a_context_encoder_the_same_input_as_extraction(manifest, tiny_bert,
                                                                         tmp_path):
    """A text encoder fine-tuned with preceding turns sees them when streaming too, so a
    streamed utterance gets the vector extraction stored for it."""
    from avafn.extract.text import TextExtractor
    from avafn.inference.featurizer import Featurizer
    from avafn.inference.streaming import Streamer
    from avafn.model import AVAFN, AVAFNConfig

    corpus = load_corpus(str(manifest))
    finetune_text(corpus, tmp_path / "ft", _cfg(tiny_bert, max_epochs=1, context_turns=2),
                  progress=False)
    enc = TextEncoder(str(tmp_path / "ft" / "model"))
    assert enc.context_turns == 2
    ext = TextExtractor(enc)
    fz = Featurizer({"text": ext}, {"text": ext.meta})
    d = next(d for d in corpus.dialogues("test") if len(d.utterances) >= 3)
    stored = [r[0] for r in ext.process(enc.inputs(d.utterances))]
    streamed = [fz("", text=u.text, speaker=u.speaker,
                   previous=[(v.speaker, v.text) for v in d.utterances[:i]])["text"]
                for i, u in enumerate(d.utterances)]
    for a, b in zip(stored, streamed):  # batched vs alone: float rounding only
        np.testing.assert_allclose(a, b, atol=1e-6)
    alone = fz("", text=d.utterances[2].text)["text"]  # without the turns: another vector
    assert not np.allclose(alone, stored[2], atol=1e-3)

    # through the streamer: it hands the featurizer the turns pushed so far
    seen = []

    class Spy(Featurizer):
        def __call__(self, *a, **kw):
            seen.append(kw.get("previous"))
            return super().__call__(*a, **kw)

    model = AVAFN(AVAFNConfig(modalities=("text",), input_dims={"text": enc.width},
                              n_classes=len(corpus.labels), bidirectional=False, d_model=8,
                              d_ff=8, d_context=8, d_party=8, d_emotion=8, d_att=8))
    s = Streamer(model, labels=corpus.labels,
                 featurizer=Spy({"text": ext}, {"text": ext.meta}))
    for u in d.utterances[:3]:
        s.push("", u.speaker, text=u.text)
    assert seen == [[], [(d.utterances[0].speaker, d.utterances[0].text)],
                    [(u.speaker, u.text) for u in d.utterances[:2]]]
