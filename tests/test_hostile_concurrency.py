"""Several processes on one feature store: nothing lost, nothing corrupted, no live temp file
removed."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hostile_helpers import (
    ROOT,
    StandInExtractor,
    entries,
    make_corpus,
)

from avafn.extract.job import run_extraction
from avafn.io import atomic_write_bytes
from avafn.store import FeatureStore


def _start(store, split, go):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "hostile_helpers.py"),
                             str(store), split, str(go)], env=env, stderr=subprocess.PIPE,
                            text=True)


def test_two_extraction_processes_on_different_splits_equal_one_doing_both(tmp_path):
    """The real extraction job (temp clean-up at start, one shard per entry, compaction at the
    end of each process) run by two processes started together on one store."""
    go = tmp_path / "go"
    shared = tmp_path / "shared"
    procs = [_start(shared, split, go) for split in ("train", "dev")]
    time.sleep(1.0)  # both are importing; then released at once
    go.write_text("")
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    single = tmp_path / "single"
    run_extraction(make_corpus(n_dialogues=6), "/nonexistent-media", single,
                   StandInExtractor(), splits=["train", "dev"], shard_size=1, progress=False)
    got, want = entries(shared, "standin"), entries(single, "standin")
    assert len(want) == 2 * 6 * 5
    assert sorted(got) == sorted(want)
    for uid in want:
        assert got[uid] == want[uid], uid
    assert not list((shared / "standin").glob(".tmp-*"))
    assert FeatureStore(shared).check().problems == []


def test_writers_with_the_same_tag_never_publish_the_same_shard(tmp_path):
    """Two text extractions on other splits both write with the default tag r000."""
    a, b = FeatureStore(tmp_path), FeatureStore(tmp_path)
    a.create_modality("x", {"extractor": "u", "width": 2})
    with a.writer("x", tag="r000", shard_size=1) as wa, b.writer("x", tag="r000",
                                                                 shard_size=1) as wb:
        for i in range(3):
            wa.add(f"a{i}", np.full(2, i))
            wb.add(f"b{i}", np.full(2, -i))
    assert len(list((tmp_path / "x").glob("part-*.npz"))) == 6
    assert FeatureStore(tmp_path).done_uids("x") == {f"{c}{i}" for c in "ab" for i in range(3)}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_clean_temp_removes_only_temp_files_of_dead_writers(tmp_path):
    from avafn.io import _HOST

    st = FeatureStore(tmp_path)
    st.create_modality("x", {"extractor": "u", "width": 2})
    d = tmp_path / "x"
    live = d / f".tmp-part-a.npz~{os.getpid()}@{_HOST}~abc"  # this process: alive
    dead = d / f".tmp-part-b.npz~{_dead_pid()}@{_HOST}~abc"
    legacy = d / ".tmp-part-c.npz.k2j3"  # no owner named
    remote_new = d / ".tmp-part-d.npz~123@elsewhere~abc"  # other host, cannot be asked
    remote_old = d / ".tmp-part-e.npz~123@elsewhere~abc"
    for p in (live, dead, legacy, remote_new, remote_old):
        p.write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(remote_old, (old, old))
    assert st.clean_temp() == 3
    assert sorted(p.name for p in d.glob(".tmp-*")) == sorted([live.name, remote_new.name])


def test_temp_file_is_named_after_its_writer(tmp_path, monkeypatch):
    """While a shard is being written, another process's clean-up must leave it alone."""
    seen = []
    real_fsync = os.fsync

    def fsync_and_clean(fd):
        seen.extend(p.name for p in tmp_path.glob(".tmp-*"))
        FeatureStore(tmp_path.parent).clean_temp()  # a concurrent job starting now
        seen.extend(p.name for p in tmp_path.glob(".tmp-*"))
        real_fsync(fd)

    monkeypatch.setattr("avafn.store.os.fsync", fsync_and_clean)
    atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert len(seen) == 2 and seen[0] == seen[1] and f"~{os.getpid()}@" in seen[0]
    assert (tmp_path / "f.bin").read_bytes() == b"data"


def test_reader_and_compaction_in_other_processes(tmp_path):
    """A compaction in another process while this one reads: the lock makes the reader see
    every entry (before or after the merge), never a vanished shard."""
    st = FeatureStore(tmp_path)
    st.create_modality("x", {"extractor": "u", "width": 4})
    with st.writer("x", shard_size=1) as w:
        for i in range(200):
            w.add(f"u{i}", np.full(4, i))
    code = ("import sys; from avafn.store import FeatureStore; "
            f"FeatureStore({str(tmp_path)!r}).compact('x')")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    n_reads = 0
    while proc.poll() is None or n_reads == 0:
        assert len(FeatureStore(tmp_path).done_uids("x")) == 200
        n_reads += 1
    assert proc.returncode == 0
    assert len(list((tmp_path / "x").glob("part-*.npz"))) == 1
    assert len(FeatureStore(tmp_path).done_uids("x")) == 200


@pytest.mark.parametrize("n_writers", [3])
def test_many_writer_processes_and_compactions_lose_nothing(tmp_path, n_writers):
    st = FeatureStore(tmp_path)
    st.create_modality("x", {"extractor": "u", "width": 3})
    code = ("import sys, numpy as np; from avafn.store import FeatureStore; "
            "s = FeatureStore(sys.argv[1]); k = sys.argv[2]\n"
            "with s.writer('x', shard_size=1) as w:\n"
            "    for i in range(40):\n"
            "        w.add(f'{k}/{i}', np.full(3, i, np.float32))\n"
            "        if i % 10 == 9: s.compact('x')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"w{k}"], env=env,
                              stderr=subprocess.PIPE, text=True) for k in range(n_writers)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    t = FeatureStore(tmp_path).table("x")
    assert set(t.row) == {f"w{k}/{i}" for k in range(n_writers) for i in range(40)}
    for u, r in t.row.items():
        assert t.vectors[r].tolist() == [float(u.split("/")[1])] * 3
