import csv
import json

from synthetic_media import make_clip, make_random_dan, make_tiny_wav2vec2

from avafn.cli import main

LABELS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete",
           "test": "output_repeated_splits_test"}
FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def _fake_meld_raw(root):
    """MELD.Raw's layout with two 3-turn dialogues per split: CSVs + clips (one clip of the
    test split absent, as in the real release where a few clips are missing)."""
    head = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
            "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
    k = 0
    for split in ("train", "dev", "test"):
        (root / FOLDERS[split]).mkdir(parents=True)
        with open(root / FILES[split], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(head)
            for d in range(2):
                for u in range(3):
                    k += 1
                    # StartTime/EndTime are times in the episode: the clips are already cut
                    w.writerow([k, f"line {k}", ["Ross", "Rachel"][u % 2], LABELS[k % 3],
                                "neutral", d, u, 1, 1, "00:16:16,059", "00:16:21,731"])
                    if (split, d, u) != ("test", 1, 2):
                        make_clip(root / FOLDERS[split] / f"dia{d}_utt{u}.mp4", seconds=0.6,
                                  size=(160, 120), seed=k, face=k % 4 != 0, tone_hz=150 + 20 * k)


def test_reproduce_end_to_end_on_a_fake_meld_raw(tmp_path):
    raw = tmp_path / "MELD.Raw"
    _fake_meld_raw(raw)
    w2v = make_tiny_wav2vec2(tmp_path / "w2v", layers=2)
    dan = make_random_dan(tmp_path / "dan.pth")
    store, out = tmp_path / "store", tmp_path / "out"
    rc = main(["reproduce", "--meld-root", str(raw), "--store", str(store), "--out", str(out),
               "--seeds", "0", "--audio-model", str(w2v), "--dan-checkpoint", str(dan),
               "--fps", "2", "--workers", "0", "--rows", "audio,audio+video", "--precision", "bf16",
               "--max-epochs", "1", "--no-progress"])
    assert rc == 0
    table = (out / "table.md").read_text()
    assert "45.2" in table and "47.98" in table  # the paper's numbers beside ours
    from avafn.store import FeatureStore

    st = FeatureStore(store)
    assert st.modalities() == ["audio", "video"]
    for m in ("audio", "video"):
        assert len(st.done_uids(m)) == 18
        assert ("test/1/2", "file not found") in st.missing(m)
        assert st.meta(m)["config"]["precision"] == "bf16"
    assert json.loads((out / "table.json").read_text())["seeds"] == [0]


def test_reproduce_explains_an_unextracted_meld_raw(tmp_path, capsys):
    raw = tmp_path / "MELD.Raw"
    _fake_meld_raw(raw)
    (raw / "train_splits").rename(raw / "elsewhere")
    (raw / "train.tar.gz").write_bytes(b"")
    rc = main(["reproduce", "--meld-root", str(raw), "--store", str(tmp_path / "s"),
               "--out", str(tmp_path / "o"), "--dan-checkpoint", str(tmp_path / "d.pth")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "train_splits" in err and "train.tar.gz" in err
