"""The inference pipeline object: ``Predictor.from_run`` builds a run's models once; a call
gives ``Predictions``; ``save`` writes today's files; ``stream`` shares the models; the
README's example runs as written."""

import json
import os
import re
import stat
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from test_predict import LABELS, SMALL, _synthetic_store, _train_corpus

import avafn
from avafn.extract.text import TextEncoder
from avafn.inference import predict
from avafn.inference.batch import predict_folder
from avafn.run import Run
from avafn.training.loop import train

TALK = [(0.0, 1.2, "Alice", "Hi Bob, good to see you."),
        (1.3, 2.5, "Bob", "Hello! What a day."),
        (2.6, 3.6, "Alice", "Tell me about it."),
        (3.7, 4.8, "Bob", "I lost my keys again.")]


def _srt(path: Path) -> Path:
    def stamp(t: float) -> str:
        return f"00:00:{t:06.3f}".replace(".", ",")

    path.write_text("\n".join(f"{i + 1}\n{stamp(s)} --> {stamp(e)}\n{spk}: {txt}\n"
                              for i, (s, e, spk, txt) in enumerate(TALK)))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A text run where the README expects the demo's (``runs/demo/runs/text``), its causal
    twin, and a subtitle file ``talk.srt``."""
    root = tmp_path_factory.mktemp("predictor")
    corpus = _train_corpus()
    store = _synthetic_store(root / "store", corpus, {"text": TextEncoder().meta})
    quick = {"max_epochs": 1, "batch_size": 4, "dropout": 0.0, "modalities": ("text",)}
    text = train(corpus, store, root / "runs/demo/runs/text",
                 {"model_overrides": SMALL, **quick}, seeds=(0, 1), progress=False)
    causal = train(corpus, store, root / "runs/demo/runs/text-causal",
                   {"model_overrides": {**SMALL, "bidirectional": False}, **quick},
                   seeds=(0,), progress=False)
    return {"root": root, "text": text, "causal": causal, "srt": _srt(root / "talk.srt")}


def _readme_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    found = [b for b in blocks if "from avafn import Predictor" in b]
    assert len(found) == 1, "the README's Predictor example"
    return found[0]


def test_readme_example_runs_as_written(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs["root"])
    exec(compile(_readme_example(), "README.md", "exec"), {})  # noqa: S102 (our own README)
    printed = capsys.readouterr().out.splitlines()
    out = runs["root"] / "out/talk"
    for name in ("predictions.json", "predictions.csv", "predictions.srt", "report.html"):
        assert (out / name).is_file(), name
    assert not (out / "predictions.vtt").exists()  # only the formats asked for
    res = json.loads((out / "predictions.json").read_text())
    assert [u["speaker"] for u in res["utterances"]] == [t[2] for t in TALK]
    assert res["outputs"]["files"] == {"json": "predictions.json", "csv": "predictions.csv",
                                       "srt": "predictions.srt", "html": "report.html"}
    # one printed line per utterance: speaker, label, confidence, text; then the counts
    assert len(printed) == len(TALK) + 1
    assert [u["text"] for u in res["utterances"]] == [t[3] for t in TALK]
    for line, u in zip(printed, res["utterances"]):
        assert line.startswith(f"{u['speaker']} {u['label']} ") and line.endswith(u["text"])
    assert sum(json.loads(printed[-1].replace("'", '"')).values()) == len(TALK)


def test_predictor_equals_predict_and_loads_models_once(runs, tmp_path, monkeypatch):
    calls = []
    models = Run.models
    monkeypatch.setattr(Run, "models", lambda self, *a, **k: calls.append(1) or
                        models(self, *a, **k))
    p = avafn.Predictor.from_run(runs["text"])
    assert len(calls) == 1 and p.labels == LABELS and len(p.models) == 2
    assert repr(p) == (f"Predictor(run={str(runs['text'])!r}, seeds=2, modalities=['text'], "
                       f"labels={LABELS}, device='cpu')")
    old_mask = os.umask(0o022)
    try:
        first = p(segments=runs["srt"], out_dir=tmp_path / "a")
    finally:
        os.umask(old_mask)
    assert isinstance(first, avafn.Predictions) and first.outputs is None
    feats = tmp_path / "a" / "features"
    assert feats.is_dir()  # the features are kept beside the outputs
    assert stat.S_IMODE(feats.stat().st_mode) == 0o755  # readable by others, as a plain mkdir
    assert not (tmp_path / "a" / "predictions.json").exists()  # nothing else before save
    saved = first.save(tmp_path / "a")
    second = p(segments=runs["srt"], out_dir=tmp_path / "b")
    assert len(calls) == 1  # the models were loaded once for both conversations
    assert second.rows == json.loads(json.dumps(first.rows))
    assert saved["files"]["json"] == "predictions.json"
    on_disk = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert on_disk == json.loads(json.dumps(first.to_dict()))
    # predict() is the same pipeline in one call (and returns what it wrote)
    res = predict(runs["text"], segments=runs["srt"], out_dir=tmp_path / "c")
    assert len(calls) == 2
    assert [r["probabilities"] for r in res["utterances"]] == [r["probabilities"]
                                                                for r in on_disk["utterances"]]
    assert set(res) == set(on_disk) and res["summary"] == on_disk["summary"]
    assert res["models"]["averaging"].startswith("mean of the seeds' softmax")
    # the per-dialogue attention the report draws: (T, T), rows are each turn's context
    (view,) = first.dialogues
    assert view["attention"].shape == (len(TALK), len(TALK))
    assert [len(r["context_attention"]) for r in view["rows"]] == list(range(len(TALK)))


def test_stream_shares_the_models_and_equals_the_offline_pass(runs, tmp_path):
    p = avafn.Predictor.from_run(runs["causal"])
    off = p(segments=runs["srt"], out_dir=tmp_path / "o")
    s = p.stream(progress=False)
    assert all(a is b for a, b in zip(s.models, p.models))  # no second load
    got = [s.push(None, speaker=spk, text=txt) for _, _, spk, txt in TALK]
    assert s.featurizer is p.featurizer()  # the same extractors
    for r, row in zip(got, off.rows):
        assert r.label == row["label"]
        assert r.probabilities == pytest.approx(row["probabilities"], abs=1e-5)
    with pytest.raises(avafn.inference.StreamingError, match="causal twin"):
        avafn.Predictor.from_run(runs["text"]).stream()


def _sine_wav(path: Path, seconds: float, hz: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_a_folder_of_videos_loads_the_run_once(runs, tmp_path, monkeypatch):
    vids = tmp_path / "vids"
    vids.mkdir()
    for stem in ("a", "b"):
        _sine_wav(vids / f"{stem}.wav", seconds=5, hz=300)
        _srt(vids / f"{stem}.srt")
    calls = []
    models = Run.models
    monkeypatch.setattr(Run, "models", lambda self, *a, **k: calls.append(1) or
                        models(self, *a, **k))
    index = predict_folder(runs["text"], vids, tmp_path / "out", formats="csv")
    assert [v["status"] for v in index["videos"]] == ["done", "done"] and len(calls) == 1
    res = json.loads((tmp_path / "out" / "b" / "predictions.json").read_text())
    assert res["outputs"]["files"] == {"json": "predictions.json", "csv": "predictions.csv"}
    assert res["input"]["video"] == str((vids / "b.wav").resolve())
    assert [u["speaker"] for u in res["utterances"]] == [t[2] for t in TALK]
    # complete outputs without a report (not asked for) are skipped on the next pass
    again = predict_folder(runs["text"], vids, tmp_path / "out", formats="csv")
    assert [v["status"] for v in again["videos"]] == ["skipped", "skipped"]
    # the report links back to the index when asked, as the CLI does
    predict_folder(runs["text"], vids, tmp_path / "o2", formats="csv,html",
                   index_href="../index.html")
    assert 'href="../index.html"' in (tmp_path / "o2" / "a" / "report.html").read_text()


def test_import_avafn_stays_light():
    code = ("import sys, avafn; assert 'torch' not in sys.modules, 'torch'; "
            "from avafn import Predictor, Predictions; assert Predictor.__name__ == "
            "'Predictor'; assert avafn.__version__")
    subprocess.run([__import__("sys").executable, "-c", code], check=True)
    assert "Predictor" in dir(avafn)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        avafn.nothing  # noqa: B018


def test_predict_help_loads_no_torch():
    """``avafn predict --help`` shows the diarization defaults without loading the networks."""
    code = ("import sys\nfrom avafn.cli import main\ntry:\n    main(['predict', '--help'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules, 'torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "--min-speakers" in done.stdout and "(default 1" in done.stdout
