import json

import numpy as np
import pytest
from train_synth import (
    make_corpus,
    make_store,
)

from avafn.training.evaluate import evaluate, report_markdown, robustness, score, split_metrics
from avafn.training.loop import train

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    corpus = make_corpus()
    # audio carries the labels strongly, video weakly: removing audio must hurt
    store = make_store(tmp_path_factory.mktemp("store"), corpus, signal=(3.0, 0.3), missing=0.0)
    cfg = {"model": "tiny", "lr": 1e-2, "max_epochs": 12, "patience": 12, "batch_size": 8}
    r = train(corpus, store, tmp_path_factory.mktemp("run") / "r", cfg, seeds=[0, 1],
              progress=False)
    return corpus, store, r


def test_report_schema_files_and_numbers(run):
    corpus, store, r = run
    rep = evaluate(r, "test", corpus, store)
    on_disk = json.loads((r / "report.json").read_text())
    assert on_disk["test"]["weighted_f1"] == rep["test"]["weighted_f1"]
    for key in ("dev", "test", "config", "store", "version"):
        assert key in on_disk
    for split in ("dev", "test"):
        m = on_disk[split]
        for k in ("weighted_f1", "accuracy"):
            assert set(m[k]) >= {"mean", "std", "per_seed"} and len(m[k]["per_seed"]) == 2
            assert m[k]["mean"] == pytest.approx(np.mean(m[k]["per_seed"]))
            assert m[k]["std"] == pytest.approx(np.std(m[k]["per_seed"], ddof=1))
        assert set(m["per_class"]) == set(corpus.labels)
        for c in m["per_class"].values():
            assert set(c) >= {"precision", "recall", "f1", "support"}
        n = sum(len(d) for d in corpus.dialogues(split))
        assert sum(c["support"] for c in m["per_class"].values()) == n
        conf = np.asarray(m["confusion"])
        assert conf.shape == (3, 3) and conf.sum() == 2 * n
    assert on_disk["test"]["weighted_f1"]["mean"] > 75  # learned (chance ~33)
    assert on_disk["config"]["modalities"] == ["audio", "video"]
    assert on_disk["store"]["modalities"]["audio"]["width"] == 8
    md = (r / "report.md").read_text()
    assert f"{on_disk['test']['weighted_f1']['mean']:.2f}" in md
    assert md == report_markdown(on_disk, r.name)
    for png in ("confusion_test.png", "per_class_test.png", "confusion_dev.png",
                "training_curves.png"):
        data = (r / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000, png


def test_metrics_match_sklearn():
    from sklearn.metrics import f1_score

    yt = np.array([0, 0, 1, 2, 2, 2, 1])
    yp = np.array([0, 1, 1, 2, 0, 2, 1])
    m = split_metrics([yt, yt], [yp, yt], ["a", "b", "c"], [0, 1])
    assert m["weighted_f1"]["per_seed"][0] == pytest.approx(
        100 * f1_score(yt, yp, average="weighted"))
    assert m["weighted_f1"]["per_seed"][1] == pytest.approx(100.0)
    assert m["accuracy"]["per_seed"][0] == pytest.approx(100 * 5 / 7)
    assert m["confusion_per_seed"][0] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert m["majority_baseline"]["label"] == "c"


def test_robustness_drop(run, tmp_path):
    corpus, store, r = run
    full = score(r, "test", corpus, store)["weighted_f1"]["mean"]
    half = evaluate(r, "test", corpus, store, drop={"audio": 0.5})
    assert (r / "robustness" / "test-audio-0.50.json").exists()
    gone = score(r, "test", corpus, store, drop={"audio": 1.0})["weighted_f1"]["mean"]
    assert full > half["weighted_f1"]["mean"] > gone
    res = robustness(r, ["audio", "video"], [0.0, 1.0], "test", corpus, store,
                     out=tmp_path / "rob.png")
    assert res["audio"]["weighted_f1"][0]["mean"] == pytest.approx(full)
    assert (tmp_path / "rob.png").read_bytes().startswith(PNG)


def test_table_runner_rows_skips_and_markdown(run, tmp_path):
    from avafn.reporting.table import PAPER, default_rows, parse_row, run_table

    corpus, store, _ = run
    path = run_table(corpus, store, tmp_path / "t", seeds=[0], rows=["audio", "text",
                     "audio+video/no_acm"], progress=False, model="tiny", lr=1e-2, max_epochs=3,
                     patience=3, batch_size=8)
    md = path.read_text()
    t = json.loads((tmp_path / "t" / "table.json").read_text())
    assert [r["row"] for r in t["rows"]] == ["audio", "audio+video/no_acm"]
    assert t["skipped"][0]["row"] == "text" and "Skipped text" in md
    assert "| audio | 45.20 |" in md and "| audio + video w/o ACM | 45.35 |" in md
    r0 = json.loads((tmp_path / "t" / "audio" / "report.json").read_text())
    # one seed: the value alone, no "± 0.00"
    assert f"| {r0['test']['weighted_f1']['mean']:.2f} |" in md and "±" not in md
    c = json.loads((tmp_path / "t" / "audio_video-no_acm" / "config.json").read_text())
    assert c["model"]["no_acm"] is True and c["modalities"] == ["audio", "video"]
    assert "ablations no_acm" in (tmp_path / "t" / "audio_video-no_acm" / "report.md").read_text()
    assert set(PAPER) <= set(default_rows(["audio", "video", "text"]))
    assert "text" in default_rows(["audio", "video", "text"])
    assert parse_row("audio+video/no_ssm") == (("audio", "video"), ("no_ssm",))
    with pytest.raises(ValueError, match="unknown ablation"):
        parse_row("audio/no_xyz")


def test_cli_train_evaluate_on_a_manifest(run, tmp_path, capsys):
    from avafn.cli import main

    corpus, store, _ = run
    rows = ["dialogue_id,turn,speaker,label,split"]
    for u in corpus.utterances():
        rows.append(f"{u.dialogue_id},{u.turn},{u.speaker},{u.label},{u.split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cli-run"
    rc = main(["train", "--dataset", str(tmp_path / "m.csv"), "--store", str(store.root),
               "--modalities", "audio", "--out", str(out), "--seeds", "0,1", "--max-epochs",
               "2", "--lr", "0.01", "--config", '{"model": "tiny"}', "--no-progress",
               "--labels", ",".join(reversed(corpus.labels))])
    assert rc == 0 and "test weighted F1" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["train"]["max_epochs"] == 2
    assert sorted(p.parent.name for p in out.glob("seed-*/model")) == ["seed-0", "seed-1"]
    rc = main(["evaluate", str(out), "--drop", "audio=1.0"])
    assert rc == 0 and "with {'audio': 1.0} removed" in capsys.readouterr().out
    # --dataset given again: read in the run's label order, not the manifest's inferred one
    rc = main(["evaluate", str(out), "--dataset", str(tmp_path / "m.csv"), "--store",
               str(store.root), "--drop", "audio=1.0"])
    assert rc == 0 and "with {'audio': 1.0} removed" in capsys.readouterr().out


def test_cli_config_file_may_hold_any_setting_and_options_win(run, tmp_path, capsys):
    """A run's own training settings can be passed back as --config (no 'multiple values')."""
    from avafn.cli import main

    corpus, store, _ = run
    rows = ["dialogue_id,turn,speaker,label,split"]
    rows += [f"{u.dialogue_id},{u.turn},{u.speaker},{u.label},{u.split}"
             for u in corpus.utterances()]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    settings = {"model": "tiny", "modalities": ["audio"], "ablations": [], "device": "cpu",
                "dataset": "elsewhere.csv", "meld_dir": None, "max_epochs": 3, "lr": 0.01}
    out = tmp_path / "cfg-run"
    rc = main(["train", "--dataset", str(tmp_path / "m.csv"), "--store", str(store.root),
               "--out", str(out), "--config", json.dumps(settings), "--max-epochs", "1",
               "--no-progress"])
    assert rc == 0 and "test weighted F1" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["modalities"] == ["audio"]  # from --config: no --modalities given
    assert saved["max_epochs"] == 1  # the explicit option wins over --config
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert (out / prov["dataset"]).resolve() == (tmp_path / "m.csv").resolve()  # run-relative
    table_out = tmp_path / "cfg-table"
    rc = main(["table", "--dataset", str(tmp_path / "m.csv"), "--store", str(store.root),
               "--out", str(table_out), "--rows", "audio", "--config", json.dumps(settings),
               "--max-epochs", "1", "--no-progress"])
    assert rc == 0 and (table_out / "table.md").exists()
