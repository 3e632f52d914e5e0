import numpy as np
import pytest
import torch

from avafn.extract.dan import (
    DAN,
    FEATURE_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DANCheckpointError,
    load_dan,
    preprocess,
    save_dan,
)


def _randomised(model: DAN, seed: int = 0) -> DAN:
    """Random weights *and* BatchNorm statistics, so that a wrong load cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if k.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def test_architecture_matches_official_key_layout():
    sd = DAN(num_classes=7).state_dict()
    assert len(sd) == 275
    for k in ["features.0.weight", "features.1.running_var", "features.4.0.conv1.weight",
              "features.7.1.bn2.running_var", "cat_head0.sa.conv1x1.0.weight",
              "cat_head3.sa.conv_3x3.1.running_mean", "cat_head2.sa.conv_1x3.0.bias",
              "cat_head1.sa.conv_3x1.0.weight", "cat_head0.ca.attention.0.weight",
              "cat_head0.ca.attention.1.running_var", "cat_head3.ca.attention.3.bias",
              "fc.weight", "bn.running_mean"]:
        assert k in sd, k
    assert tuple(sd["cat_head0.sa.conv_1x3.0.weight"].shape) == (512, 256, 1, 3)
    assert tuple(sd["cat_head0.sa.conv_3x1.0.weight"].shape) == (512, 256, 3, 1)
    assert tuple(sd["cat_head0.ca.attention.3.weight"].shape) == (512, 32)
    assert not any(k.startswith(("features.2", "features.3")) for k in sd)


def test_load_official_layout_roundtrip_and_features(tmp_path):
    src = _randomised(DAN(num_classes=8), seed=1)
    path = tmp_path / "affecnet8_epoch5_acc0.6209.pth"
    torch.save({"iter": 5, "model_state_dict": src.state_dict(), "optimizer_state_dict": {}},
               path)
    model = load_dan(path)
    assert model.num_classes == 8 and not model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = model.frame_features(x)
        f_src = src.frame_features(x)
        logits = model(x)
        # the fused head output is what feeds fc -> bn
        expected_logits = model.bn(model.fc(f[:, 512:]))
    assert f.shape == (2, FEATURE_DIM)
    torch.testing.assert_close(f, f_src)
    torch.testing.assert_close(logits, expected_logits)
    # first half: global average pool of the trunk map
    with torch.no_grad():
        pooled = model.features(x).mean(dim=(2, 3))
    torch.testing.assert_close(f[:, :512], pooled)


def test_fused_heads_follow_log_softmax_fusion():
    model = _randomised(DAN(), seed=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = model.features(x)
        heads = torch.stack([getattr(model, f"cat_head{i}")(fmap) for i in range(4)], 1)
        fused = torch.log_softmax(heads, dim=1).sum(1)
        torch.testing.assert_close(model.frame_features(x)[:, 512:], fused)


def test_loader_rejects_wrong_checkpoint_naming_keys(tmp_path):
    sd = DAN().state_dict()
    bad = dict(sd)
    bad.pop("cat_head2.ca.attention.0.weight")
    bad["cat_head4.sa.conv1x1.0.weight"] = torch.zeros(256, 512, 1, 1)
    bad["cat_head0.sa.conv1x1.0.weight"] = torch.zeros(128, 512, 1, 1)
    p = tmp_path / "bad.pth"
    torch.save({"model_state_dict": bad}, p)
    with pytest.raises(DANCheckpointError) as e:
        load_dan(p)
    msg = str(e.value)
    assert "bad.pth" in msg
    assert "missing keys (1): cat_head2.ca.attention.0.weight" in msg
    assert "unexpected keys (1): cat_head4.sa.conv1x1.0.weight" in msg
    assert "cat_head0.sa.conv1x1.0.weight: checkpoint (128, 512, 1, 1)" in msg

    p2 = tmp_path / "other.pth"
    torch.save({"state_dict": sd}, p2)  # not the official layout
    with pytest.raises(DANCheckpointError, match="model_state_dict"):
        load_dan(p2)
    p3 = tmp_path / "text.pth"
    p3.write_text("hello")
    with pytest.raises(DANCheckpointError, match="text.pth"):
        load_dan(p3)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_dan(tmp_path / "nothere.pth")


def test_save_dan_and_dataparallel_prefix(tmp_path):
    src = _randomised(DAN(), seed=3)
    save_dan(src, tmp_path / "a.pth")
    assert set(torch.load(tmp_path / "a.pth", weights_only=True)) == {"model_state_dict"}
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "b.pth")
    a, b = load_dan(tmp_path / "a.pth"), load_dan(tmp_path / "b.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.frame_features(x), b.frame_features(x))


def test_preprocess_imagenet_normalisation():
    faces = np.zeros((2, 224, 224, 3), np.uint8)
    faces[1] = 255
    x = preprocess(faces)
    assert x.shape == (2, 3, 224, 224)
    for c in range(3):
        assert x[0, c].mean().item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], 1e-5)
        assert x[1, c, 5, 7].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c],
                                                     1e-5)
    with pytest.raises(ValueError, match="224"):
        preprocess(np.zeros((1, 100, 90, 3), np.uint8))
