import numpy as np
import pytest

from avafn.store import FeatureStore, StoreError


def _meta(width=4):
    return {"extractor": "unit", "model_id": "none", "layer": None, "width": width,
            "config": {"k": 1}}


def test_write_read_roundtrip_and_missing(tmp_path):
    st = FeatureStore(tmp_path / "s")
    st.create_modality("audio", _meta())
    with st.writer("audio", shard_size=2) as w:
        w.add("train/0/0", np.arange(4), count=10)
        w.add("train/0/1", None, reason="no audio stream")
        w.add("train/0/2", np.ones(4))
    x, p = st.load("audio", ["train/0/2", "train/0/0", "train/0/1"])
    assert x.shape == (3, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], np.arange(4))
    assert p.tolist() == [True, True, False]
    assert not x[2].any()
    assert st.missing("audio") == [("train/0/1", "no audio stream")]
    assert len(list((tmp_path / "s" / "audio").glob("part-*.npz"))) == 2


def test_missing_utterance_and_width_errors_name_the_utterance(tmp_path):
    st = FeatureStore(tmp_path)
    st.create_modality("video", _meta())
    with st.writer("video") as w:
        w.add("dev/1/0", np.zeros(4))
        with pytest.raises(StoreError, match="dev/1/1.*width 3, expected 4"):
            w.add("dev/1/1", np.zeros(3))
        with pytest.raises(StoreError, match="already stored"):
            w.add("dev/1/0", np.zeros(4))
    with pytest.raises(StoreError, match="no entry for utterance dev/1/5"):
        st.load("video", ["dev/1/0", "dev/1/5"])
    with pytest.raises(StoreError, match="4-d, expected 1024-d"):
        st.load("video", ["dev/1/0"], width=1024)
    with pytest.raises(StoreError, match="no 'text' features"):
        st.load("text", ["dev/1/0"])


def test_resume_skips_done_and_config_mismatch_refused(tmp_path):
    st = FeatureStore(tmp_path)
    st.create_modality("text", _meta())
    with st.writer("text") as w:
        w.add("a", np.zeros(4))
    st2 = FeatureStore(tmp_path)
    st2.create_modality("text", _meta())  # same config: reopen
    assert st2.done_uids("text") == {"a"}
    other = _meta()
    other["config"] = {"k": 2}
    with pytest.raises(StoreError, match="already holds text features"):
        st2.create_modality("text", other)


def test_unflushed_entries_kept_on_exception_and_compact(tmp_path):
    st = FeatureStore(tmp_path)
    st.create_modality("audio", _meta())
    with pytest.raises(RuntimeError), st.writer("audio", tag="r000") as w:
        w.add("x", np.ones(4))
        raise RuntimeError("crash")
    with st.writer("audio", tag="r001") as w:
        w.add("y", np.full(4, 2.0))
    fp = st.fingerprint()
    assert st.compact("audio") == 1
    assert len(list((tmp_path / "audio").glob("part-*.npz"))) == 1
    assert st.done_uids("audio") == {"x", "y"}
    assert FeatureStore(tmp_path).fingerprint() == fp
