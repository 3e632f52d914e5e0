"""A feature store handed over by someone else, damaged by a crash, or written on a full disk:
nothing executes, every damaged file is named, repair + the same extraction redo exactly what
was lost."""

import errno
import io
import json
import os
import subprocess
import zipfile

import numpy as np
import pytest
from hostile_helpers import (
    StandInExtractor,
    assert_user_error,
    entries,
    make_corpus,
    make_tiny_text_model,
    run_cli,
    small_manifest,
)

from avafn import cli
from avafn.errors import UserError
from avafn.extract.job import run_extraction
from avafn.store import FeatureStore, StoreError


def _extract(store, **kw):
    return run_extraction(make_corpus(), "/nonexistent-media", store, StandInExtractor(),
                          progress=False, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref") / "store"
    _extract(root)
    return entries(root, "standin")


def _sharded(tmp_path):
    """A store of the stand-in modality in shards of 3 entries (not compacted)."""
    root = tmp_path / "store"
    _extract(root, shard_size=3, merge_at_end=False)
    return root, sorted((root / "standin").glob("part-*.npz"))


# ------------------------------------------------------------------------ untrusted files
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file when unpickled


def test_pickle_bearing_shard_is_refused_and_runs_nothing(tmp_path):
    st = FeatureStore(tmp_path)
    st.create_modality("x", {"extractor": "u", "width": 2})
    marker = tmp_path / "pwned"
    uid = np.empty(1, dtype=object)
    uid[0] = _Payload(str(marker))
    np.savez(tmp_path / "x" / "part-r000-evil-000000.npz", uid=uid, vector=np.zeros((1, 2),
             np.float32), present=np.ones(1, bool), count=np.zeros(1, np.int64),
             reason=np.array([""]))
    with pytest.raises(StoreError, match=r"part-r000-evil-000000\.npz: damaged shard \(holds "
                                         r"pickled Python objects, refused"):
        st.table("x")
    assert not marker.exists()
    res = run_cli("store", "check", tmp_path)
    assert_user_error(res, "store check", "1 problem(s)")
    assert "pickled Python objects" in res.stdout and not marker.exists()


@pytest.mark.parametrize("meta, why", [
    ([1, 2], "a JSON list, expected an object"),
    ({"extractor": "u", "width": "512", "config_hash": "h"}, "width '512'"),
    ({"extractor": "u", "width": True, "config_hash": "h"}, "width True"),
    ({"extractor": "u", "width": 10**12, "config_hash": "h"}, "width 1000000000000"),
    ({"extractor": 7, "width": 4, "config_hash": "h"}, "extractor 7"),
    ({"extractor": "u", "width": 4, "config_hash": "h", "config": "x"}, "config is a str"),
])
def test_meta_with_unexpected_types_is_named(tmp_path, meta, why):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError) as e:
        FeatureStore(tmp_path).table("audio")
    msg = str(e.value)
    assert "audio/meta.json: damaged meta.json" in msg and why in msg
    assert "avafn store check" in msg and "\n" not in msg


@pytest.mark.parametrize("arrays, why", [
    ({"uid": np.array(["a"]), "vector": np.zeros((1, 3), np.float32)}, "no array present"),
    ({"uid": np.array(["a"]), "vector": np.zeros((1, 5), np.float32),
      "present": np.ones(1, bool), "count": np.zeros(1, np.int64), "reason": np.array([""])},
     "expected (1, 3) float32"),
    ({"uid": np.array(["a"]), "vector": np.full((1, 3), np.nan, np.float32),
      "present": np.ones(1, bool), "count": np.zeros(1, np.int64), "reason": np.array([""])},
     "non-finite"),
    ({"uid": np.array([1]), "vector": np.zeros((1, 3), np.float32),
      "present": np.ones(1, bool), "count": np.zeros(1, np.int64), "reason": np.array([""])},
     "uid is int64"),
])
def test_shard_with_unexpected_arrays_is_named(tmp_path, arrays, why):
    st = FeatureStore(tmp_path)
    st.create_modality("x", {"extractor": "u", "width": 3})
    np.savez(tmp_path / "x" / "part-bad.npz", **arrays)
    with pytest.raises(StoreError, match="part-bad.npz: damaged shard") as e:
        st.table("x")
    assert why in str(e.value)


# ------------------------------------------------------------------------ damage + repair
def _truncate(p, n=200):
    with open(p, "r+b") as f:
        f.truncate(n)


def _corrupt_inside(p):
    """Flip bytes inside the vector data: the zip CRC no longer matches."""
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("vector.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 140
    data[start:start + 8] = b"\x7f" * 8
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "bitflip"])
def test_every_reader_names_a_damaged_shard(tmp_path, damage):
    root, parts = _sharded(tmp_path)
    victim = parts[1]
    if damage == "truncated":
        _truncate(victim)
    elif damage == "garbage":
        victim.write_bytes(os.urandom(300))
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        _corrupt_inside(victim)
    for read in (lambda s: s.table("standin"), lambda s: s.done_uids("standin"),
                 lambda s: s.load("standin", ["train/0/0"]), lambda s: s.fingerprint(),
                 lambda s: s.compact("standin")):
        with pytest.raises(StoreError) as e:
            read(FeatureStore(root))
        msg = str(e.value)
        assert msg.startswith(f"{victim}: damaged shard"), msg
        assert f"avafn store check {root} --repair" in msg
        assert "allow_pickle" not in msg  # never NumPy's advice to enable pickles
    assert victim.exists()  # a reader never deletes anything


def test_check_then_repair_then_same_extraction_redoes_exactly_what_was_lost(tmp_path,
                                                                             reference):
    root, parts = _sharded(tmp_path)
    lost = set()
    for p in (parts[0], parts[3]):
        with np.load(p) as z:
            lost |= set(z["uid"].tolist())
    _truncate(parts[0])
    parts[3].write_bytes(b"not a zip at all")
    res = run_cli("store", "check", root)
    assert_user_error(res, "store check", "2 problem(s)", "--repair")
    assert str(parts[0]) in res.stdout and str(parts[3]) in res.stdout
    assert parts[0].exists()  # check alone changes nothing
    res = run_cli("store", "check", root, "--repair")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (root / "standin" / "damaged").iterdir()) == sorted(
        [parts[0].name, parts[3].name])
    rep = _extract(root)
    assert rep.n_written == len(lost) == 6  # exactly the lost entries, nothing else
    assert entries(root, "standin") == reference
    assert run_cli("store", "check", root).returncode == 0


def test_truncated_meta_is_named_and_repair_redoes_the_modality(tmp_path, reference):
    root, _ = _sharded(tmp_path)
    meta = root / "standin" / "meta.json"
    meta.write_text(meta.read_text()[:25])
    with pytest.raises(StoreError, match=r"standin/meta.json: truncated meta.json \(invalid "
                                         r"JSON.*avafn store check"):
        FeatureStore(root).table("standin")
    with pytest.raises(StoreError, match="meta.json: truncated"):
        _extract(root)  # the extraction itself stops with the same message
    rep = FeatureStore(root).check(repair=True)
    assert rep.ok and any("cannot be trusted" in p for p in rep.problems)
    assert not meta.exists() and not list((root / "standin").glob("part-*"))
    assert _extract(root).n_written == len(reference)
    assert entries(root, "standin") == reference


def test_differing_duplicates_are_reported_and_moved_aside(tmp_path, reference):
    root, parts = _sharded(tmp_path)
    with np.load(parts[0]) as z:
        a = {k: z[k] for k in z.files}
    a["vector"] = a["vector"] + 1
    np.savez(root / "standin" / "part-zz-other-000000.npz", **a)
    with pytest.raises(StoreError, match="stored twice, differently"):
        FeatureStore(root).table("standin")
    rep = FeatureStore(root).check()
    assert not rep.ok and "stored twice, differently" in rep.problems[0]
    FeatureStore(root).check(repair=True)
    _extract(root)
    assert entries(root, "standin") == reference


def test_check_reports_and_repair_removes_temp_files_of_killed_writers(tmp_path):
    root, _ = _sharded(tmp_path)
    left = root / "standin" / ".tmp-part-r000-x-000009.npz~999999999@nohost~x"
    left.write_bytes(b"half")  # what kill -9 leaves (owner on another host, stale)
    os.utime(left, (0, 0))
    rep = FeatureStore(root).check()
    assert not rep.ok and "1 temp file(s) of dead writers" in rep.problems[0]
    rep = FeatureStore(root).check(repair=True)
    assert rep.ok and rep.removed_temp == 1 and not left.exists()


def test_store_json_damage_and_not_a_store(tmp_path):
    root, _ = _sharded(tmp_path)
    (root / "store.json").write_text("{")
    rep = FeatureStore(root).check(repair=True)
    assert rep.problems and "store.json" in rep.problems[0]
    assert json.loads((root / "store.json").read_text())["format"] == "avafn-feature-store"
    (tmp_path / "plain").mkdir()
    assert_user_error(run_cli("store", "check", tmp_path / "plain"), "store check",
                      "not a feature store")
    assert_user_error(run_cli("store", "check", tmp_path / "nowhere"), "store check",
                      "no such feature store folder")


# ------------------------------------------------------------------------ disk full
def test_disk_full_leaves_no_half_entry_and_resumes(tmp_path, reference, monkeypatch):
    calls = [0]
    real = os.fsync

    def fsync(fd):
        calls[0] += 1
        if calls[0] > 4:  # meta, store.json and a few shards fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr("avafn.store.os.fsync", fsync)
    root = tmp_path / "store"
    with pytest.raises(OSError) as e:
        _extract(root, shard_size=3)
    assert e.value.errno == errno.ENOSPC and "part-" in e.value.filename  # names the file
    from avafn.cli import error_line

    line = error_line(e.value)
    assert "part-" in line and "no space left on the device" in line
    monkeypatch.setattr("avafn.store.os.fsync", real)
    assert not list(root.rglob(".tmp-*"))  # no half-written file left behind
    st = FeatureStore(root)
    assert st.check().problems == []
    stored = entries(root, "standin")
    assert 0 < len(stored) < len(reference)
    assert all(reference[u] == v for u, v in stored.items())
    _extract(root)
    assert entries(root, "standin") == reference


def _mount_tmpfs(path, size="64k") -> bool:
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, check=False)
    return res.returncode == 0


def test_really_full_disk_through_the_cli(tmp_path, capsys):
    """A real 64 KiB file system (tmpfs; needs the right to mount, else skipped; the
    monkeypatched test above always runs)."""
    small = tmp_path / "small"
    if not _mount_tmpfs(small):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        model = make_tiny_text_model(tmp_path / "bert")
        m = small_manifest(tmp_path / "m.csv", n_dialogues=4, n_turns=4)
        filler = small / "filler"
        filler.write_bytes(b"x" * (60 * 1024))
        args = ["extract", "text", "--dataset", m, "--store", small / "st", "--model", model,
                "--batch-size", "2", "--no-progress"]
        capsys.readouterr()  # the model's own progress output
        assert cli.main([str(a) for a in args]) == 1
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1]  # (after the model's own loading bar)
        assert "Traceback" not in err and err.count(": error: ") == 1
        assert line.startswith("avafn extract text: error: ")
        assert "no space left on the device" in line
        assert str(small / "st") in line  # names the file it could not write
        assert not list(small.rglob(".tmp-*"))
        filler.unlink()
        assert cli.main([str(a) for a in args]) == 0
        assert len(FeatureStore(small / "st").done_uids("text")) == 3 * 4 * 4
        assert FeatureStore(small / "st").check().problems == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_store_errors_are_user_errors():
    assert issubclass(StoreError, UserError)
