"""avafn table: row names, the rows the options add, the paper's ablation reading."""

from __future__ import annotations

import json
import logging

import pytest
from train_synth import make_corpus, make_store

from avafn.reporting.table import option_rows, parse_row, row_dir, row_model, row_title, run_table

SMALL = {"d_model": 8, "d_ff": 12, "d_context": 8, "d_party": 8, "d_emotion": 8, "d_att": 4}


def test_row_names():
    assert parse_row("audio+video/no_acm@per_utterance") == (("audio", "video"), ("no_acm",))
    assert row_model("audio+video/no_acm@per_utterance") == {"fusion_weights": "per_utterance"}
    assert row_model("audio+video") == {}
    assert row_title("audio+video@per_utterance") == (
        "audio + video, per-utterance fusion weights")
    assert row_title("audio+video/no_acm_attention") == (
        "audio + video w/o ACM attention (ac_t = 0)")
    assert row_dir("audio-l12+video/no_acm,no_ilm") == "audio-l12_video-no_acm-no_ilm"
    with pytest.raises(ValueError, match="fusion weights"):
        row_model("audio+video@bogus")
    rows = option_rows(["audio", "audio+video", "audio+video/no_acm"], fusion_rows=True,
                       audio_modalities=["audio-l12", "audio"])
    assert rows == ["audio", "audio+video", "audio+video/no_acm", "audio+video@per_utterance",
                    "audio-l12"]


def test_table_ablation_is_the_papers_reading():
    """The table's w/o ACM row trains the paper's ablation: no GRU_C, no attention."""
    from avafn.config import split_settings
    from avafn.model import AVAFN, AVAFNConfig
    from avafn.training.loop import model_config

    def build(settings):
        _, spec, _ = split_settings(settings)
        return model_config(spec, ("audio", "video"), {"audio": 4, "video": 3}, 3, 2)

    model_cfg = build({"ablations": ["no_acm"], "model_overrides": SMALL})
    assert model_cfg["no_acm"] and not model_cfg["no_acm_attention"]
    names = [n for n, _ in AVAFN(AVAFNConfig.from_dict(model_cfg)).named_parameters()]
    assert not [n for n in names if n.startswith(("rnn.gru_c.", "rnn.att_"))]
    # avafn train --model '{"fusion_weights": "per_utterance"}' reaches the model the same way
    model_cfg = build({"model_overrides": {**SMALL, "fusion_weights": "per_utterance"}})
    assert hasattr(AVAFN(AVAFNConfig.from_dict(model_cfg)).fusion, "fusion_gate")
    with pytest.raises(ValueError, match="fusion_weights"):
        build({"model_overrides": {"fusion_weights": "bogus"}})


def test_table_options_add_fusion_and_audio_rows(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="avafn")
    corpus = make_corpus(n=(10, 6, 6))
    widths = {"audio-l12": 8, "audio-l24": 8, "video": 6}
    store = make_store(tmp_path / "store", corpus, signal=(2.0, 0.5, 1.0), widths=widths)
    path = run_table(corpus, store, tmp_path / "t", seeds=[0], rows=["audio-l12+video"],
                     fusion_rows=True, audio_modalities=["audio-l12", "audio-l24", "audio-l18"],
                     progress=False, lr=1e-2, max_epochs=1, patience=1, batch_size=8,
                     model_overrides=SMALL)
    t = json.loads((tmp_path / "t" / "table.json").read_text())
    assert [r["row"] for r in t["rows"]] == ["audio-l12+video", "audio-l12+video@per_utterance",
                                             "audio-l12", "audio-l24"]
    assert [s["row"] for s in t["skipped"]] == ["audio-l18"]  # not in the store
    said = [r.getMessage() for r in caplog.records if r.name == "avafn.reporting.table"]
    assert said[0] == "[table] audio-l12 + video: seeds [0]"
    assert f"[table] skipping audio-l18: no audio-l18 features in {store.root} (stored: " in \
        said[-1]
    for row, weights in (("audio-l12+video", "global"),
                         ("audio-l12+video@per_utterance", "per_utterance")):
        c = json.loads((tmp_path / "t" / row_dir(row) / "config.json").read_text())
        assert c["model"]["fusion_config"]["weights"] == weights
        assert c["model"]["d_model"] == 8
    audio = [r for r in t["rows"] if r["row"] in ("audio-l12", "audio-l24")]
    best = max(audio, key=lambda r: r["dev"]["mean"])  # chosen on dev, never on test
    assert t["audio_choice"]["row"] == best["row"]
    assert t["audio_choice"]["test"] == best["test"]["mean"]
    md = path.read_text()
    assert f"**{best['row']}**" in md and "chosen on dev" in md
    assert "audio-l12 + video, per-utterance fusion weights" in md
