import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from extract_helpers import (
    CASES,
    make_corpus,
    make_media,
    write_manifest,
)
from synthetic_media import make_tiny_wav2vec2

from avafn.extract.audio import Wav2Vec2Encoder
from avafn.extract.dan import DAN, save_dan
from avafn.extract.faces import FaceConfig
from avafn.extract.job import AudioExtractor, VideoExtractor, merge, run_extraction
from avafn.extract.video import DANVideoEncoder
from avafn.store import FeatureStore

FACES = FaceConfig(size=64)  # small crops keep DAN cheap on CPU (the net accepts any size)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    media = make_media(root / "media")
    torch.manual_seed(0)
    dan = DAN().eval()
    save_dan(dan, root / "dan.pth")
    return {"root": root, "media": media, "corpus": make_corpus(media), "dan": dan,
            "w2v": make_tiny_wav2vec2(root / "w2v", layers=2)}


def _audio(env, batch_size=4):
    return AudioExtractor(Wav2Vec2Encoder(env["w2v"], batch_size=batch_size))


def _video(env):
    return VideoExtractor(DANVideoEncoder(env["dan"], batch_size=8), fps=3, face_config=FACES)


def _entries(store, modality):
    t = FeatureStore(store).table(modality)
    assert len(set(t.uids.tolist())) == len(t.uids)  # nothing duplicated
    order = np.argsort(t.uids)
    return (t.uids[order].tolist(), t.vectors[order], t.present[order].tolist(),
            t.count[order].tolist(), t.reason[order].tolist())


def _assert_same(a, b):
    assert a[0] == b[0] and a[2] == b[2] and a[3] == b[3] and a[4] == b[4]
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_failures_are_recorded_as_missing_and_job_completes(env, tmp_path, modality):
    ext = _audio(env) if modality == "audio" else _video(env)
    rep = run_extraction(env["corpus"], env["media"], tmp_path / "s", ext, progress=False)
    corpus = env["corpus"]
    uids = [u.uid for u in corpus.utterances()]
    assert rep.n_written == len(CASES) and not rep.interrupted and rep.merged
    st = FeatureStore(tmp_path / "s")
    t = st.table(modality)
    col = 1 if modality == "audio" else 2
    for uid, case in zip(uids, CASES):
        row = t.row[uid]
        assert t.reason[row] == case[col], (uid, case)
        assert bool(t.present[row]) == (case[col] == "")
        if t.present[row]:
            assert t.count[row] > 0 and np.abs(t.vectors[row]).sum() > 0
    expected_missing = sum(1 for c in CASES if c[col])
    assert len(rep.missing) == expected_missing
    assert rep.n_present == len(CASES) - expected_missing
    assert f"missing, no media file: 1: {uids[6]}" in rep.summary()
    assert len(list((tmp_path / "s" / modality).glob("part-*.npz"))) == 1  # compacted
    meta = st.meta(modality)
    if modality == "video":
        assert meta["width"] == 1024 and meta["config"]["face_rule"] == "largest"
        # faces in every sampled frame of the face clips: 3 fps x 0.8 s -> 3 frames
        assert t.count[t.row[uids[0]]] == 3
        # the mean of the per-frame DAN features of the face crops
        from avafn.extract.video import load_faces

        crops, _ = load_faces(env["media"] / "face0.mp4", fps=3, face_config=FACES)
        ref = DANVideoEncoder(env["dan"]).encode_faces(crops).mean(0)
        np.testing.assert_allclose(t.vectors[t.row[uids[0]]], ref, rtol=1e-4, atol=1e-5)
    else:
        assert meta["layer"] == 2 and meta["width"] == 32
        assert abs(t.count[t.row[uids[0]]] - 0.8 * 16000) < 600  # samples at 16 kHz


def test_resume_after_interruption_equals_uninterrupted(env, tmp_path):
    full = tmp_path / "full"
    run_extraction(env["corpus"], env["media"], full, _audio(env), progress=False)

    part = tmp_path / "part"

    def crash_after_five(uid, n=[0]):  # noqa: B006 - a counter
        n[0] += 1
        if n[0] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_extraction(env["corpus"], env["media"], part, _audio(env), shard_size=2,
                       progress=False, on_written=crash_after_five)
    assert len(FeatureStore(part).done_uids("audio")) == 5  # the writer flushed on the way out
    # what kill -9 leaves: a half-written temp shard
    (part / "audio" / ".tmp-part-r000-000099.npz.x").write_bytes(b"half")
    rep = run_extraction(env["corpus"], env["media"], part, _audio(env), limit=2,
                         progress=False)
    assert rep.n_skipped == 5 and rep.n_written == 2 and rep.n_left == 3
    assert "3 left for the next run" in rep.summary()
    assert not list((part / "audio").glob(".tmp-*"))
    rep = run_extraction(env["corpus"], env["media"], part, _audio(env), progress=False)
    assert rep.n_skipped == 7 and rep.n_written == 3
    _assert_same(_entries(part, "audio"), _entries(full, "audio"))
    rep = run_extraction(env["corpus"], env["media"], part, _audio(env), progress=False)
    assert rep.n_written == 0  # nothing left


def test_ranks_then_merge_equal_single_process(env, tmp_path):
    single = tmp_path / "single"
    run_extraction(env["corpus"], env["media"], single, _video(env), progress=False)
    sharded = tmp_path / "sharded"
    reps = [run_extraction(env["corpus"], env["media"], sharded, _video(env), rank=r,
                           world_size=2, progress=False) for r in (0, 1)]
    assert [r.n_selected for r in reps] == [5, 5] and not any(r.merged for r in reps)
    names = sorted(p.name for p in (sharded / "video").glob("part-*.npz"))
    assert any("-r000-" in n for n in names) and any("-r001-" in n for n in names)
    info = merge(sharded, "video", env["corpus"])
    assert info["not_extracted"] == [] and info["entries"] == len(CASES)
    assert len(list((sharded / "video").glob("part-*.npz"))) == 1
    _assert_same(_entries(sharded, "video"), _entries(single, "video"))
    # a split selection leaves the rest unextracted, and merge says so
    partial = tmp_path / "partial"
    run_extraction(env["corpus"], env["media"], partial, _video(env), splits=["test"],
                   progress=False)
    assert len(merge(partial, "video", env["corpus"])["not_extracted"]) == 7


def test_worker_processes_same_store_and_a_crashing_clip_is_isolated(env, tmp_path):
    """Decoding in 2 spawned workers gives the store of in-process decoding; a clip that kills
    its worker is recorded as missing ("decoder process crashed"), the others are not lost."""
    import shutil

    from crashy_loader import decode_or_die

    from avafn.data.corpus import Corpus, Dialogue, Utterance
    from avafn.extract.job import CRASHED

    shutil.copy(env["media"] / "face1.mp4", tmp_path / "crash.mp4")
    corpus = env["corpus"]
    extra = Utterance("test", "9", 0, "S0", 0, "joy", "hi", str(tmp_path / "crash.mp4"))
    crashy = Corpus("toy", ["joy"], {**corpus.splits, "test": corpus.splits["test"]
                                     + [Dialogue("test", "9", [extra])]})

    class Crashy(AudioExtractor):
        def loader(self, workers):
            return decode_or_die

    a, b = tmp_path / "a", tmp_path / "b"
    run_extraction(corpus, env["media"], a, _audio(env), workers=0, progress=False)
    rep = run_extraction(crashy, env["media"], b, Crashy(_audio(env).encoder), workers=2,
                         prefetch=1, progress=False)
    assert ("test/9/0", CRASHED) in rep.missing
    got = _entries(b, "audio")
    keep = [i for i, u in enumerate(got[0]) if u != "test/9/0"]
    _assert_same(tuple([x[i] for i in keep] if isinstance(x, list) else x[keep] for x in got),
                 _entries(a, "audio"))


def test_cli_two_processes_with_torchrun_env_merge_at_the_end(env, tmp_path):
    """Two ranks as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT): each writes its
    shards, they meet at a gloo barrier and rank 0 merges; same store as one process."""
    import socket

    manifest = write_manifest(env["corpus"], env["media"], tmp_path / "m.csv")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "avafn.cli", "extract", "video", "--dataset", str(manifest),
            "--model", str(env["root"] / "dan.pth"), "--fps", "3", "--workers", "0",
            "--no-progress", "--batch-size", "8", "--crop-size", "64"]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen(args + ["--store", str(tmp_path / "dist")],
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reports = [json.loads(out) for out, _ in outs]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert sum(r["n_written"] for r in reports) == len(CASES)
    assert [r["merged"] for r in sorted(reports, key=lambda r: r["rank"])] == [True, False]
    assert len(list((tmp_path / "dist" / "video").glob("part-*.npz"))) == 1
    assert "missing, no face detected: 1" in "".join(err for _, err in outs)
    single = tmp_path / "single"  # the same extraction in one process, in this one
    run_extraction(env["corpus"], env["media"], single, _video(env), progress=False)
    _assert_same(_entries(tmp_path / "dist", "video"), _entries(single, "video"))


def test_cli_errors_are_one_line(env, tmp_path):
    manifest = write_manifest(env["corpus"], env["media"], tmp_path / "m.csv")
    from avafn.cli import main

    assert main(["extract", "video", "--dataset", str(manifest), "--store",
                 str(tmp_path / "s"), "--model", str(tmp_path / "nope.pth")]) == 1
    assert main(["extract", "audio", "--dataset", str(manifest), "--store",
                 str(tmp_path / "s"), "--model", str(env["w2v"]), "--layer", "9"]) == 1
    assert not Path(tmp_path / "s" / "audio").exists()


def test_combined_job_writes_what_the_separate_jobs_write(env, tmp_path):
    """Audio and video in one job (one decoding pool, one pass over the media): both
    modalities as the separate jobs store them, each with its own missing reasons (a clip
    without audio keeps its video vector, a clip without a face its audio vector)."""
    from avafn.extract.combined import CombinedExtractor

    for name, ext in (("audio", _audio(env)), ("video", _video(env))):
        run_extraction(env["corpus"], env["media"], tmp_path / name, ext, progress=False)
    both = CombinedExtractor([_audio(env), _video(env)])
    rep = run_extraction(env["corpus"], env["media"], tmp_path / "both", both, workers=2,
                         progress=False)
    assert rep.n_written == len(CASES) and rep.merged
    for name in ("audio", "video"):
        _assert_same(_entries(tmp_path / "both", name), _entries(tmp_path / name, name))
        assert FeatureStore(tmp_path / "both").meta(name) == FeatureStore(tmp_path / name).meta(name)
    # an utterance counts as missing only when every modality is
    assert len(rep.missing) == sum(1 for c in CASES if c[1] and c[2])
    t_a, t_v = (FeatureStore(tmp_path / "both").table(m) for m in ("audio", "video"))
    uids = [u.uid for u in env["corpus"].utterances()]
    split = [uid for uid, c in zip(uids, CASES) if bool(c[1]) != bool(c[2])]
    assert split  # the cases include clips that fail for one modality only
    for uid in split:
        assert bool(t_a.present[t_a.row[uid]]) != bool(t_v.present[t_v.row[uid]])


def test_cli_audio_and_video_in_one_command(env, tmp_path):
    from avafn.cli import main

    manifest = write_manifest(env["corpus"], env["media"], tmp_path / "m.csv")
    base = ["extract", "audio+video", "--dataset", str(manifest), "--store",
            str(tmp_path / "s"), "--audio-model", str(env["w2v"]), "--video-model",
            str(env["root"] / "dan.pth"), "--fps", "3", "--crop-size", "64", "--workers", "0",
            "--audio-batch-size", "4", "--video-batch-size", "8", "--no-progress"]
    assert main(base) == 0
    run_extraction(env["corpus"], env["media"], tmp_path / "v", _video(env), progress=False)
    _assert_same(_entries(tmp_path / "s", "video"), _entries(tmp_path / "v", "video"))
    assert FeatureStore(tmp_path / "s").meta("audio")["width"] == 32
    # another audio extractor's option is refused, naming it
    assert main(base[:-1] + ["--feature-set", "ComParE_2016", "--no-progress"]) == 1
    # the video extractor's model is required, as with `avafn extract video`
    assert main([a for a in base if a not in ("--video-model", str(env["root"] / "dan.pth"))]
                ) == 1


def test_decoding_workers_do_not_import_torch(env):
    """What a spawned worker imports (the job module, the loaders) stays light: torch would
    cost each decoding process ~0.6 GB."""
    ext = _video(env)
    loader = ext.loader(workers=2)
    code = ("import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    import pickle

    from avafn.extract.combined import CombinedExtractor

    both = CombinedExtractor([_audio(env), ext]).loader(workers=2)
    for payload in (pickle.dumps(loader), pickle.dumps(_audio(env).loader(workers=2)),
                    pickle.dumps(both)):
        out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True,
                             check=True, timeout=120)
        assert out.stdout.decode().split() == ["False", "False"]


def test_each_torchrun_rank_uses_its_own_gpu(monkeypatch):
    from avafn.extract.job import dist_env, resolve_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda") == "cuda"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("cuda") == "cuda:3"
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert dist_env() == (5, 8) and dist_env(rank=1, world_size=2) == (1, 2)
    with pytest.raises(ValueError, match="rank 8"):
        dist_env(rank=8)

