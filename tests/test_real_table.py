"""benchmarks/real_table.py on a generated stand-in for $AVAFN_REAL_DIR: RAVDESS-named tones
and FER2013-like face images, 3 folds, a 2-epoch AVAFN; the JSON and the Markdown table."""

import csv
import json
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
from synthetic_media import face_photo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_table


def _tone(path, hz, seconds=0.6, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * hz * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    x = x + 0.01 * np.random.default_rng(int(hz)).standard_normal(len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((x * 32767).astype(np.int16).tobytes())


def _real_dir(root: Path) -> Path:
    for actor in range(1, 7):
        for emo in (1, 3, 5):  # neutral, happy, angry: one pitch each
            _tone(root / "ravdess" / f"Actor_{actor:02d}" / f"03-01-{emo:02d}-01-01-01-"
                  f"{actor:02d}.wav", 140 + 90 * emo + actor)
    face = cv2.cvtColor(cv2.resize(face_photo()[20:200, 40:220], (48, 48)), cv2.COLOR_RGB2GRAY)
    rows = []
    for i in range(12):
        label = ("happy", "sad")[i % 2]
        img = np.clip(face.astype(int) + (i % 2) * 40 - 20 + i, 0, 255).astype(np.uint8)
        p = Path(label) / f"PrivateTest_{i}.jpg"
        (root / "fer2013" / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "fer2013" / p), img)
        rows.append([p.as_posix(), label])
    with open(root / "fer2013" / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    return root


def test_table_on_generated_corpora(tmp_path, capsys):
    real = _real_dir(tmp_path / "real")
    out = tmp_path / "table.md"
    argv = ["--real-dir", str(real), "--work", str(tmp_path / "work"), "--out", str(out),
            "--parts", "ravdess,fer", "--sets", "eGeMAPSv02", "--folds", "3",
            "--max-epochs", "2"]
    assert real_table.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    r8 = res["ravdess"]["eGeMAPSv02/8-class"]
    assert r8["folds"] == [["actor01", "actor02"], ["actor03", "actor04"],
                           ["actor05", "actor06"]]
    assert r8["extraction"]["clips"] == 18
    # three pitches, one per emotion: LR separates them; majority cannot
    assert r8["lr"]["accuracy"]["mean"] > 90 and r8["majority"]["accuracy"]["mean"] < 50
    assert len(r8["avafn"]["accuracy"]["per_fold"]) == 3
    assert "meld7" in res["ravdess"]["eGeMAPSv02/meld7"]["task"]
    fer = res["fer"]
    assert fer["faces"] == 12 and 0 <= fer["head_detected"]["detection_rate"] <= 100
    assert set(fer["folds"]) == {"majority", "head", "lr", "avafn"}
    md = out.read_text()
    assert "| RAVDESS speech | 8-class | eGeMAPSv02 | logistic regression (C 0.1) |" in md
    assert "mini-Xception's own head" in md and "(published)" in md
    # run again: every cell comes from the cache, same numbers
    assert real_table.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ravdess"]["eGeMAPSv02/8-class"]["extraction"]["clips"] == 0  # all stored
    for key, r in res["ravdess"].items():
        assert all(again["ravdess"][key][m] == r[m] for m in ("majority", "lr", "avafn"))
    assert again["fer"]["folds"] == fer["folds"]


def test_without_real_dir_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AVAFN_REAL_DIR", raising=False)
    assert real_table.main(["--work", str(tmp_path)]) == 2
    assert "AVAFN_REAL_DIR" in capsys.readouterr().err
