"""avafn.io: atomic writes keep the permissions a plain open() gives; concurrent writers never
collide; JSON and hashing helpers; one time parser for every input format."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from avafn import io
from avafn.errors import ConfigFileError
from avafn.store import FeatureStore


def _write_open(path: Path) -> None:
    with io.atomic_open(path) as f:
        f.write(b"abc")


WRITERS = {
    "atomic_open": _write_open,
    "atomic_write_bytes": lambda p: io.atomic_write_bytes(p, b"abc"),
    "atomic_write_json": lambda p: io.atomic_write_json(p, {"a": 1}),
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", sorted(WRITERS))
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_has_the_mode_a_plain_open_gives(tmp_path, umask, name, mask, expected):
    umask(mask)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")  # what open(path, "wb") gives under this umask
    assert _mode(plain) == expected
    target = tmp_path / "sub" / "f"
    WRITERS[name](target)
    assert _mode(target) == expected, oct(_mode(target))
    assert not list(target.parent.glob(".tmp-*"))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_existing_file_keeps_its_mode(tmp_path, umask, name):
    umask(0o022)
    target = tmp_path / "f"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    WRITERS[name](target)
    assert _mode(target) == 0o640
    assert target.read_bytes() != b"old"


def test_files_written_through_the_store_honour_the_umask(tmp_path, umask):
    """The feature store's shards, meta.json and store.json go through the same writers."""
    umask(0o022)
    st = FeatureStore(tmp_path / "s")
    st.create_modality("x", {"extractor": "u", "width": 2})
    with st.writer("x", shard_size=1) as w:
        w.add("a", np.zeros(2))
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"store.json", "meta.json"}
    assert any(p.suffix == ".npz" for p in files)
    for p in files:
        if not p.name.startswith("."):  # the store's lock file is not written atomically
            assert _mode(p) == 0o644, (p, oct(_mode(p)))


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), io.atomic_open(target) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_disk_error_names_the_target(tmp_path, monkeypatch):
    def full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("avafn.io.os.fsync", full)
    with pytest.raises(OSError) as e:
        io.atomic_write_bytes(tmp_path / "f", b"x")
    assert e.value.filename == str(tmp_path / "f") and e.value.errno == 28
    assert not list(tmp_path.iterdir())


def test_concurrent_threads_never_collide_and_readers_see_whole_files(tmp_path):
    """Eight threads of one process (one pid: the temp names differ only by their random part)
    write one path 40 times each while a reader reads it: every read is one writer's whole
    JSON, nothing raises, no temp file stays."""
    target = tmp_path / "f.json"
    io.atomic_write_json(target, {"w": -1, "pad": "x" * 20000})
    errors: list[BaseException] = []
    done = threading.Event()

    def write(k: int) -> None:
        try:
            for i in range(40):
                io.atomic_write_json(target, {"w": k, "i": i, "pad": "x" * 20000})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    reads = []

    def read() -> None:
        while not done.is_set():
            reads.append(json.loads(target.read_text())["w"])

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    assert not errors, errors
    assert reads and set(reads) <= {-1, *range(8)}
    assert json.loads(target.read_text())["i"] == 39
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_concurrent_processes_never_collide(tmp_path):
    target = tmp_path / "f.bin"
    code = ("import sys; from avafn.io import atomic_write_bytes\n"
            "for i in range(50): atomic_write_bytes(sys.argv[1], sys.argv[2].encode() * 5000)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), c], env=env,
                              stderr=subprocess.PIPE, text=True) for c in "abc"]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    data = target.read_bytes()
    assert data in {c.encode() * 5000 for c in "abc"}
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_temp_names_are_owned_and_recognised(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(Path(src))
        assert io.temp_owner_alive(Path(src))  # this process is alive
        real(src, dst)

    monkeypatch.setattr("avafn.io.os.replace", spy)
    io.atomic_write_bytes(tmp_path / "f", b"x")
    assert seen and seen[0].name.startswith(f".tmp-f~{os.getpid()}@")
    assert not io.temp_owner_alive(tmp_path / ".tmp-f.k2j3")  # no owner named


def test_json_and_hashing(tmp_path):
    p = tmp_path / "a.json"
    io.atomic_write_json(p, {"b": 1, "a": Path("/x")})
    assert p.read_text() == '{\n  "a": "/x",\n  "b": 1\n}\n'
    assert io.read_json(p) == {"a": "/x", "b": 1}
    p.write_text('{"a": 1')
    with pytest.raises(ConfigFileError, match="truncated"):
        io.read_json(p)
    data = os.urandom(3 << 20)  # more than one read chunk
    (tmp_path / "b").write_bytes(data)
    assert io.sha256_file(tmp_path / "b") == hashlib.sha256(data).hexdigest()
    assert io.config_hash({"b": 1, "a": [1, 2]}) == io.config_hash({"a": [1, 2], "b": 1})
    assert io.config_hash({"a": 1}) != io.config_hash({"a": 2})
    assert len(io.config_hash({})) == 16


# every format's time syntax, and what it reads as
TIMES = [
    ("12.5", 12.5),                 # CSV / JSON / RTTM seconds
    ("12,5", 12.5),                 # a decimal comma (European spreadsheets)
    ("1e1", 10.0),                  # JSON numbers written by str(float)
    ("00:00:01,500", 1.5),          # SRT
    ("01:02:03.250", 3723.25),      # WebVTT with hours
    ("02:03.5", 123.5),             # WebVTT without hours
    ("0:00:01.50", 1.5),            # ASS (centiseconds)
    ("00:01:02", 62.0),             # transcript "[00:01:02] Name: text"
    ("00:06:47,28", 407.28),        # MELD's two-digit fraction: 0.28 s, not 0.028 s
    ("100:00:00.000001", 360000.000001),
    (" 7 ", 7.0),
]
BAD_TIMES = ["", " ", "abc", "00:61:00", "00:00:60", "1:2:3:4", "nan", "inf", "-inf", "1.2.3",
             "12:5x", "1,2,3"]


@pytest.mark.parametrize("text,seconds", TIMES)
def test_parse_time_reads_every_format_time_syntax(text, seconds):
    assert io.parse_time(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("text", BAD_TIMES)
def test_parse_time_refuses_what_is_no_time(text):
    with pytest.raises(ValueError):
        io.parse_time(text)


@pytest.mark.parametrize("text,seconds", [t for t in TIMES if "," not in t[0]])
def test_segment_lists_and_manifests_read_times_alike(tmp_path, text, seconds):
    """One parser: a segment CSV and a manifest read the same cell as the same time."""
    from avafn.data.manifest import read_manifest
    from avafn.segments import read_segments

    (tmp_path / "s.csv").write_text(f"start,end,speaker\n{text},400000,A\n")
    seg = read_segments(tmp_path / "s.csv")[0]
    (tmp_path / "m.csv").write_text(
        f"dialogue_id,turn,speaker,label,split,start,end\n1,0,A,x,train,{text},400000\n")
    utt = read_manifest(tmp_path / "m.csv").splits["train"][0].utterances[0]
    assert seg.start == utt.start == pytest.approx(seconds, abs=1e-9)


def test_manifest_refuses_a_negative_time_that_a_segment_list_clips(tmp_path):
    from avafn.data.corpus import DataError
    from avafn.data.manifest import read_manifest
    from avafn.notices import Notices
    from avafn.segments import W_BEFORE_START, read_segments

    (tmp_path / "m.csv").write_text(
        "dialogue_id,turn,speaker,label,split,start,end\n1,0,A,x,train,-1.5,2\n")
    with pytest.raises(DataError, match=r"m\.csv: line 2: start '-1.5' is not a time"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "s.csv").write_text("-1.5,2,A\n")
    notices = Notices()
    assert read_segments(tmp_path / "s.csv", notices=notices)[0].start == 0.0
    assert W_BEFORE_START in notices.kinds()


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_temp_dir_has_the_mode_a_plain_mkdir_gives(tmp_path, umask, mask, expected):
    umask(mask)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _mode(plain) == expected
    made = {io.make_temp_dir(tmp_path, ".work-") for _ in range(3)}
    assert len(made) == 3  # each call its own folder
    for d in made:
        assert d.is_dir() and d.name.startswith(".work-") and _mode(d) == expected
