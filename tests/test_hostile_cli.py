"""The error policy, as a hostile user meets it: every mistake ends with ONE line
``avafn CMD: error: ...`` naming the problem and exit status 1 (2 for usage), no traceback;
``--debug`` / ``AVAFN_DEBUG=1`` show it; a real bug still prints its traceback."""

import argparse
import errno
import json
import os
import subprocess
import sys

import pytest
from hostile_helpers import ROOT, assert_user_error, fill_store, run_cli, small_manifest

from avafn import cli
from avafn.data import load_corpus


@pytest.fixture
def data(tmp_path):
    m = small_manifest(tmp_path / "m.csv")
    uids = [u.uid for u in load_corpus(str(m)).utterances()]
    fill_store(tmp_path / "store", uids)
    return {"manifest": m, "store": tmp_path / "store", "tmp": tmp_path}


def _train(d, *extra):
    return ["train", "--dataset", str(d["manifest"]), "--store", str(d["store"]), "--out",
            str(d["tmp"] / "run"), "--modalities", "text", "--no-progress", *map(str, extra)]


def _run(argv, capsys) -> tuple[int, str]:
    """``avafn ARGV`` in this process: (exit status, stderr); a bug would raise here."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _one_line(err: str, command: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len([ln for ln in lines if ": error: " in ln]) == 1, err
    assert lines[-1].startswith(f"avafn {command}: error: "), err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


# -------------------------------------------------------------- through a real process
def test_usage_errors_exit_2_without_traceback(capsys):
    res = run_cli("train")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "usage: avafn train" in res.stderr and "required" in res.stderr
    for args in (["nonsense"], ["train", "--dataset", "x", "--store", "y", "--out", "z",
                                "--seeds", "a,b"]):
        rc, err = _run(args, capsys)
        assert rc == 2 and "usage: avafn" in err, args
    assert cli.main([]) == 2 and "usage: avafn" in capsys.readouterr().out


def test_user_error_in_a_process_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["store", "check", tmp_path / "nowhere"]
    assert_user_error(run_cli(*args), "store check", "nowhere: no such feature store folder")
    res = run_cli("--debug", *args)
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "StoreError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("avafn store check: error: ")
    monkeypatch.setenv("AVAFN_DEBUG", "1")
    assert cli.main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "avafn store check: error: ")


def test_duplicate_manifest_row(data, capsys):
    bad = data["manifest"]
    bad.write_text(bad.read_text() + bad.read_text().splitlines()[1] + "\n")
    rc, err = _run(_train(data), capsys)
    assert rc == 1
    _one_line(err, "train", "m.csv: line 20: duplicate")


def test_a_real_bug_still_prints_its_traceback(tmp_path):
    code = ("import sys, avafn.commands.store as s\n"
            "s.cmd_check = lambda args: 1 / 0\n"
            "from avafn.cli import main\n"
            f"sys.exit(main(['store', 'check', {str(tmp_path)!r}]))\n")
    import subprocess

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, check=False)
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "ZeroDivisionError" in res.stderr
    assert ": error: " not in res.stderr


def test_device_without_cuda_one_line(data):
    """Checked up front, before the annotations or the store are read."""
    res = run_cli(*_train(data, "--device", "cuda:99"))
    assert_user_error(res, "train", "--device cuda:99")


# -------------------------------------------------------------- in this process
def test_missing_store_folder(data, capsys):
    data["store"] = data["tmp"] / "no-store"
    rc, err = _run(_train(data), capsys)
    assert rc == 1
    _one_line(err, "train", "no-store: no such feature store folder")


def test_missing_modality(data, capsys):
    rc, err = _run([*_train(data)[:-3], "--modalities", "video", "--no-progress"], capsys)
    assert rc == 1
    _one_line(err, "train", "no ['video'] features", "extract them first")


@pytest.mark.parametrize("extra, needles", [
    (["--config", '{"max_epochs": 0}'], ["max_epochs must be >= 1, got 0"]),
    (["--config", '{"max_epochs": "abc"}'], ["'max_epochs' must be an integer, got 'abc'"]),
    (["--config", '{"lr": "fast"}'], ["'lr' must be a number, got 'fast'"]),
    (["--config", '{"bucket": 1}'], ["'bucket' must be a bool, got 1"]),
    (["--config", '{"batch_size": true}'], ["'batch_size' must be an integer, got True"]),
    (["--model", '{"d_model": "x"}'], ["model setting 'd_model' must be an integer, got 'x'"]),
    (["--model", '{"bidirectional": "no"}'], ["'bidirectional' must be a bool, got 'no'"]),
    (["--model", '{"d_ff": 0}'], ["model setting 'd_ff' must be >= 1, got 0"]),
    (["--dropout", "1.5"], ["model setting 'dropout' must be in [0, 1), got 1.5"]),
    (["--ablation", "no_such"], ["unknown ablation(s) ['no_such']"]),
    (["--modality-dropout", "video=0.5"], ["modality dropout for 'video'"]),
    (["--config", '{"max_epochs": 1, "nonsense": 2}'], ["unknown setting(s) ['nonsense']"]),
    (["--device", "cuda:99"], ["--device cuda:99"]),
    (["--device", "warp-drive"], ["--device 'warp-drive': not a torch device"]),
])
def test_invalid_training_values(data, capsys, extra, needles):
    rc, err = _run(_train(data, *extra), capsys)
    assert rc == 1
    _one_line(err, "train", *needles)
    assert not (data["tmp"] / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("argv, option, needle", [
    (["train", "--max-epochs", "0"], "--max-epochs", "expected an integer >= 1, got 0"),
    (["train", "--batch-size", "-3"], "--batch-size", "expected an integer >= 1, got -3"),
    (["train", "--threads", "two"], "--threads", "expected an integer, got 'two'"),
    (["extract", "text", "--max-length", "0"], "--max-length", "expected an integer >= 1, got 0"),
    (["extract", "text", "--batch-size", "0"], "--batch-size", "expected an integer >= 1, got 0"),
    (["extract", "audio", "--batch-size", "0"], "--batch-size", "expected an integer >= 1, got 0"),
    (["extract", "video", "--workers", "-1"], "--workers", "expected an integer >= 0, got -1"),
    (["extract", "audio", "--world-size", "0"], "--world-size", "expected an integer >= 1, got 0"),
    (["finetune", "text", "--max-length", "0"], "--max-length", "expected an integer >= 1, got 0"),
    (["finetune", "text", "--context-turns", "-2"], "--context-turns", "expected an integer >= 0, got -2"),
    (["predict", "RUN", "--max-segments", "0"], "--max-segments", "expected an integer >= 1, got 0"),
    (["predict", "RUN", "--num-speakers", "0"], "--num-speakers", "expected an integer >= 1, got 0"),
    (["demo", "--max-dialogues", "0"], "--max-dialogues", "expected an integer >= 1, got 0"),
])
def test_count_options_refuse_zero_and_negatives(argv, option, needle, capsys):
    """Counts are checked where they are parsed: exit 2, the option and the value named,
    before any file is read (the other required options are not even needed)."""
    rc, err = _run(argv, capsys)
    assert rc == 2
    assert f"argument {option}: {needle}" in err.strip().splitlines()[-1]


def test_demo_settings_are_checked_before_any_work(tmp_path, capsys):
    for part, setting, needle in [("finetune", {"lr": "x"}, "finetune setting 'lr'"),
                                  ("train", {"patience": "x"}, "training setting 'patience'")]:
        rc, err = _run(["demo", "--out", tmp_path / "d", "--meld-dir", tmp_path / "none",
                        "--config", json.dumps({part: setting})], capsys)
        assert rc == 1
        _one_line(err, "demo", needle)
        assert not (tmp_path / "d").exists()


def test_unknown_setting_in_table(data, capsys):
    argv = ["table", *_train(data)[1:7], "--config", '{"nonsense": 1}', "--rows", "text"]
    rc, err = _run(argv, capsys)
    assert rc == 1
    _one_line(err, "table", "unknown setting(s) ['nonsense']")


@pytest.mark.parametrize("rows, needle", [
    ("nonsense", "no table row can run on"),
    ("text/no_bad", "table row 'text/no_bad': unknown ablation(s) ['no_bad']"),
    ("text@bad", "unknown fusion weights 'bad'"),
    ("/no_acm", "names no modality"),
])
def test_table_rows_that_cannot_run_are_refused(data, capsys, rows, needle):
    rc, err = _run(["table", *_train(data)[1:7], "--rows", rows], capsys)
    assert rc == 1
    _one_line(err, "table", needle)


def test_seeds_and_demo_config_are_usage_errors(data, capsys, tmp_path):
    rc, err = _run(_train(data, "--seeds", "-1"), capsys)
    assert rc == 2 and "argument --seeds: expected integers >= 0" in err
    rc, err = _run(["demo", "--config", tmp_path / "missing.json"], capsys)
    assert rc == 2 and "argument --config: " in err and "missing.json" in err


def test_print_config_shows_the_settings_config_gives(capsys):
    assert cli.main(["demo", "--config", '{"seeds": [7]}', "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [7]


def test_truncated_config_file_is_a_usage_error_naming_it(data, capsys):
    cfg = data["tmp"] / "settings.json"
    cfg.write_text('{"max_epochs": 3, "lr": 0.')
    rc, err = _run(_train(data, "--config", cfg), capsys)
    assert rc == 2 and "settings.json: not a JSON object nor a JSON file" in err


def test_truncated_run_config_is_named(data, capsys):
    run = data["tmp"] / "run"
    run.mkdir()
    (run / "config.json").write_text('{"labels": ["joy", "sa')
    rc, err = _run(["evaluate", run, "--dataset", data["manifest"], "--store", data["store"]],
                   capsys)
    assert rc == 1
    _one_line(err, "evaluate", "run/config.json: unreadable")


def test_truncated_run_config_when_resuming_or_evaluating(data, capsys):
    run = data["tmp"] / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model_name": "avafn", "mod')
    rc, err = _run(_train(data), capsys)
    assert rc == 1
    _one_line(err, "train", "run/config.json: unreadable")
    rc, err = _run(["evaluate", run], capsys)
    assert rc == 1
    _one_line(err, "evaluate", "run/config.json")


def test_not_a_run_folder(data, capsys):
    rc, err = _run(["evaluate", data["tmp"] / "nowhere"], capsys)
    assert rc == 1
    _one_line(err, "evaluate", "nowhere: no such run folder")


def test_predict_errors_go_through_the_one_policy(data, capsys, monkeypatch):
    argv = ["predict", data["tmp"] / "nowhere", "--video", data["tmp"] / "v.mp4", "--segments",
            data["tmp"] / "s.csv", "--out", data["tmp"] / "out"]
    rc, err = _run(argv, capsys)
    assert rc == 1
    _one_line(err, "predict", "nowhere")
    monkeypatch.setenv("AVAFN_DEBUG", "1")  # the policy's --debug applies to predict too
    assert cli.main([str(a) for a in argv]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_unknown_split_in_extraction(data, capsys):
    rc, err = _run(["extract", "text", "--dataset", data["manifest"], "--store",
                    data["tmp"] / "s2", "--splits", "nonsense"], capsys)
    assert rc == 1
    _one_line(err, "extract text", "has no split(s) ['nonsense']")


def test_extraction_mistakes_name_the_option(data, capsys):
    base = ["--dataset", data["manifest"], "--store", data["tmp"] / "s3", "--workers", "0"]
    rc, err = _run(["extract", "video", *base], capsys)
    assert rc == 1
    _one_line(err, "extract video", "needs a DAN checkpoint (--model PATH)")
    rc, err = _run(["extract", "video", *base, "--model", data["tmp"] / "no.pth"], capsys)
    assert rc == 1
    _one_line(err, "extract video", "no.pth")
    rc, err = _run(["extract", "audio", *base, "--model", data["tmp"] / "no-model"], capsys)
    assert rc == 1
    _one_line(err, "extract audio", "wav2vec 2.0 model", "no-model: no such model folder")


def test_missing_manifest_file(data, capsys):
    data["manifest"] = data["tmp"] / "absent.csv"
    rc, err = _run(_train(data), capsys)
    assert rc == 1
    _one_line(err, "train", "absent.csv")


@pytest.mark.parametrize("err_no, needle", [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only file system"),
])
def test_machine_failures_are_one_line_naming_the_file(data, capsys, monkeypatch, err_no,
                                                       needle):
    (data["store"] / "store.json").write_text("{")  # repair rewrites it

    def fail(fd):
        raise OSError(err_no, os.strerror(err_no))

    monkeypatch.setattr("avafn.store.os.fsync", fail)
    rc, err = _run(["store", "check", data["store"], "--repair"], capsys)
    assert rc == 1
    _one_line(err, "store check", f"{data['store'] / 'store.json'}: {needle}")
    assert not list(data["store"].glob(".tmp-*"))
    assert (data["store"] / "store.json").read_text() == "{"  # the old file, untouched


def test_every_user_error_type_is_a_user_error():
    from avafn.data.corpus import DataError
    from avafn.data.download import DownloadError
    from avafn.errors import UserError
    from avafn.extract.dan import DANCheckpointError
    from avafn.extract.media import MediaError
    from avafn.extract.text import TextModelError
    from avafn.inference import PredictError
    from avafn.inference.streaming import StreamingError
    from avafn.registry import RegistryError
    from avafn.segments import SegmentError
    from avafn.store import StoreError

    for t in (DataError, DownloadError, DANCheckpointError, MediaError, TextModelError,
              PredictError, RegistryError, SegmentError, StoreError, StreamingError):
        assert issubclass(t, UserError), t
    assert issubclass(DownloadError, RuntimeError)  # still caught as it was


def test_error_line_classification(tmp_path):
    from avafn.errors import read_json

    assert cli.error_line(ValueError("a bug")) is None
    assert cli.error_line(KeyError("x")) is None
    assert cli.error_line(OSError(errno.ECONNRESET, "reset")) is None
    assert cli.error_line(MemoryError()).startswith("out of memory; use a smaller --batch-size")

    class OutOfMemoryError(RuntimeError):  # what torch.cuda raises
        pass

    assert "out of memory (CUDA out of memory. Tried" in cli.error_line(
        OutOfMemoryError("CUDA out of memory. Tried to allocate 10 GiB\nmore"))
    assert cli.error_line(FileNotFoundError(errno.ENOENT, "x", "/a/b")) == (
        "/a/b: no such file or directory")
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"a": [1, 2]})[:-3])
    with pytest.raises(ValueError, match="c.json: truncated JSON file"):
        read_json(p)
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="c.json: damaged JSON file"):
        read_json(p)


def test_help_lists_every_command_without_loading_their_dependencies():
    """``avafn --help`` is instant: the commands are listed from ``COMMANDS`` and no command
    module (nor torch) is imported; naming a command builds exactly its parser."""
    code = ("import sys, contextlib, io\n"
            "from avafn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('avafn.commands.')))\n"
            "print(out.getvalue())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, listing = r.stdout.split("\n", 1)
    assert loaded == "[]", loaded
    from avafn.commands import COMMANDS

    for name, (_, text) in COMMANDS.items():
        assert f"    {name}" in listing and text.split()[0] in listing
    # the full parser (no argv) and a named command's parser carry the same one-line help
    full = cli.build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert helps == {name: text for name, (_, text) in COMMANDS.items()}
    assert set(sub.choices) == set(COMMANDS)
    for name in COMMANDS:  # every command's own parser is built when it is named
        p = cli.build_parser([name])
        named = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        assert len(named.choices[name]._actions) > 1, name  # more than a listed stub's -h


@pytest.mark.parametrize("command, option", [(["extract", "text"], "--model"),
                                             (["extract", "audio"], "--model"),
                                             (["finetune", "text"], "--base-model")])
def test_text_model_that_is_not_a_model_is_named(data, capsys, command, option):
    """A path that is no model folder, or a name that is no hub id, is one line naming the
    option and what is wrong, never a hub-validation traceback."""
    tmp = data["tmp"]
    (tmp / "empty").mkdir()
    base = [*command, "--dataset", data["manifest"], "--store", tmp / "st", "--no-progress"]
    if command[0] == "finetune":
        base += ["--out", tmp / "ft"]
    if command[1] == "audio":
        base += ["--workers", "0"]
    for model, needle in [(tmp / "nope", "no such model folder"),
                          (data["manifest"], "a file, not a model folder"),
                          (tmp / "empty", "not a model folder (no "),
                          ("bad id!!", "bad id!!")]:
        rc, err = _run([*base, option, model], capsys)
        assert rc == 1, model
        _one_line(err, " ".join(command), needle)
