import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from avafn.data import download as dl
from avafn.data import load_corpus, resolve_meld_dir
from avafn.data.meld import MELD_FILES, MELD_SHA256
from avafn.io import sha256_file


@pytest.fixture
def served_files(tmp_path, monkeypatch):
    """A folder of three small CSVs plus pinned sums patched to match them."""
    src = tmp_path / "mirror"
    src.mkdir()
    hdr = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
           "StartTime,EndTime\r\n")
    sums = {}
    for split, name in MELD_FILES.items():
        body = hdr + f'1,"{split} it’s",Ross,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"\r\n'
        (src / name).write_bytes(body.encode())
        sums[name] = hashlib.sha256(body.encode()).hexdigest()
    monkeypatch.setattr(dl, "MELD_SHA256", sums)
    return src


@pytest.fixture
def http_url(served_files):
    handler = functools.partial(_QuietHandler, directory=str(served_files))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_http_download_verify_and_skip(tmp_path, http_url, served_files):
    dest = dl.download_meld(tmp_path / "cache", base_url=http_url, quiet=True)
    for name in MELD_FILES.values():
        assert (dest / name).read_bytes() == (served_files / name).read_bytes()
    assert not list(dest.glob(".tmp-*"))
    # second call: files verified and kept, nothing fetched (the server is not even needed)
    mtimes = {n: (dest / n).stat().st_mtime_ns for n in MELD_FILES.values()}
    dl.download_meld(dest, base_url="http://127.0.0.1:9/unreachable/", quiet=True)
    assert {n: (dest / n).stat().st_mtime_ns for n in MELD_FILES.values()} == mtimes


def test_file_url_and_corrupted_file_rejected(tmp_path, served_files):
    url = served_files.as_uri()
    dest = tmp_path / "c"
    dl.download_meld(dest, base_url=url, quiet=True)
    assert (dest / "dev_sent_emo.csv").read_text(encoding="utf-8").count("it’s") == 1
    # a corrupted mirror: the good cached copy is replaced only by a verified file
    bad = served_files / "dev_sent_emo.csv"
    bad.write_bytes(bad.read_bytes().replace(b"joy", b"jay"))
    (dest / "dev_sent_emo.csv").write_text("stale")  # cached file no longer matches
    with pytest.raises(dl.DownloadError, match=r"checksum mismatch for .*dev_sent_emo\.csv"):
        dl.download_meld(dest, base_url=url, quiet=True)
    assert (dest / "dev_sent_emo.csv").read_text() == "stale"
    assert not list(dest.glob(".tmp-*"))


def test_unreachable_url_is_a_clear_error(tmp_path, served_files, capsys):
    with pytest.raises(dl.DownloadError, match="could not download .*--meld-dir"):
        dl.download_meld(tmp_path / "c", base_url=(tmp_path / "nowhere").as_uri(), quiet=True)
    assert dl.main(["--dest", str(tmp_path / "c"), "--base-url", str(tmp_path)]) == 1
    assert "could not download" in capsys.readouterr().err
    assert dl.main(["--dest", str(tmp_path / "c"), "--base-url", served_files.as_uri()]) == 0
    assert dl.is_complete(tmp_path / "c")


def test_load_corpus_falls_back_to_cache_and_downloads(tmp_path, monkeypatch, served_files):
    monkeypatch.delenv("AVAFN_MELD_DIR", raising=False)
    monkeypatch.setenv("AVAFN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AVAFN_MELD_URL", served_files.as_uri())
    assert dl.meld_cache_dir() == tmp_path / "cache" / "meld"
    assert resolve_meld_dir(download=False) == tmp_path / "cache" / "meld"
    c = load_corpus("meld")
    assert c.source["dir"] == str((tmp_path / "cache" / "meld").resolve())
    assert c.utterances("test")[0].text == "test it’s"


def test_default_cache_location(monkeypatch):
    monkeypatch.delenv("AVAFN_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert dl.meld_cache_dir() == Path.home() / ".cache" / "avafn" / "meld"


REAL = os.environ.get("AVAFN_MELD_DIR")


@pytest.mark.skipif(not REAL, reason="AVAFN_MELD_DIR not set (real MELD CSVs)")
def test_real_files_served_match_pinned_sums(tmp_path):
    """The pinned sums are those of the real CSVs: serve the real folder, download, verify."""
    handler = functools.partial(_QuietHandler, directory=REAL)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dest = dl.download_meld(tmp_path, base_url=f"http://127.0.0.1:{srv.server_address[1]}",
                                quiet=True)
    finally:
        srv.shutdown()
        srv.server_close()
    assert dl.is_complete(dest)
    assert {n: sha256_file(dest / n) for n in MELD_FILES.values()} == MELD_SHA256


@pytest.mark.skipif(not REAL, reason="AVAFN_MELD_DIR not set (real MELD CSVs)")
def test_download_command_says_each_file_it_fetches(tmp_path):
    """``python -m avafn.data.download``: one line per file fetched on stdout, then where
    (the module runs as ``__main__`` there: its log lines must still reach the console)."""
    dest, url = tmp_path / "d", Path(REAL).resolve().as_uri()
    got = subprocess.run([sys.executable, "-m", "avafn.data.download", "--dest", str(dest),
                          "--base-url", url], capture_output=True, text=True, check=True)
    assert got.stdout.splitlines() == [f"downloading {url}/{name} -> {dest / name}"
                                       for name in MELD_FILES.values()] + [
        f"MELD annotations verified in {dest}"]


def test_module_entry_point_runs_without_a_runpy_warning():
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m",
                           "avafn.data.download", "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m avafn.data.download" in done.stdout and not done.stderr
