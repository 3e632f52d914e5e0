"""DAN — Distract your Attention Network (Wen et al., arXiv:2109.07270), the visual extractor.

Implemented from ``docs/dan.md``; module and parameter names follow the public checkpoints so
that they load with ``strict=True`` (275 tensors in ``model_state_dict``)::

    features.{0,1,4,5,6,7}.*        ResNet-18 trunk without avgpool/fc (nn.Sequential of 8)
    cat_head{i}.sa.conv1x1.{0,1}    spatial attention: 1x1 conv 512->256 + BN
    cat_head{i}.sa.conv_3x3 / conv_1x3 / conv_3x1.{0,1}   256->512 conv + BN each
    cat_head{i}.ca.attention.{0,1,3}  channel attention: Linear 512->32, BN1d, ReLU, Linear, Sigmoid
    fc, bn                           classifier Linear(512->classes) + BatchNorm1d(classes)

The per-frame visual feature (:meth:`DAN.features`) is the global-average-pooled trunk map
(512) concatenated with the fused head output that feeds ``fc`` (512): 1024-d.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from avafn.errors import UserError

#: ImageNet statistics DAN was trained with (inputs are RGB in [0, 1] before this)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
FEATURE_DIM = 1024


class DANCheckpointError(UserError):
    """A DAN checkpoint that does not match the architecture (names the keys)."""


class SpatialAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1x1 = nn.Sequential(nn.Conv2d(512, 256, kernel_size=1), nn.BatchNorm2d(256))
        self.conv_3x3 = nn.Sequential(
            nn.Conv2d(256, 512, kernel_size=3, padding=1), nn.BatchNorm2d(512))
        self.conv_1x3 = nn.Sequential(
            nn.Conv2d(256, 512, kernel_size=(1, 3), padding=(0, 1)), nn.BatchNorm2d(512))
        self.conv_3x1 = nn.Sequential(
            nn.Conv2d(256, 512, kernel_size=(3, 1), padding=(1, 0)), nn.BatchNorm2d(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,512,7,7) -> (B,512,7,7)
        y = self.conv1x1(x)
        y = F.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y))
        return x * y.sum(dim=1, keepdim=True)


class ChannelAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(512, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
            nn.Linear(32, 512), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,512,7,7) -> (B,512)
        pooled = x.mean(dim=(2, 3))
        return pooled * self.attention(pooled)


class CrossAttentionHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sa = SpatialAttention()
        self.ca = ChannelAttention()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,512,7,7) -> (B,512)
        return self.ca(self.sa(x))


class DAN(nn.Module):
    """DAN with ``num_heads`` cross-attention heads; ``forward`` returns class logits."""

    def __init__(self, num_classes: int = 7, num_heads: int = 4) -> None:
        super().__init__()
        trunk = resnet18(weights=None)
        self.features = nn.Sequential(*list(trunk.children())[:-2])  # conv1 .. layer4
        self.num_heads = num_heads
        self.num_classes = num_classes
        for i in range(num_heads):
            setattr(self, f"cat_head{i}", CrossAttentionHead())
        self.fc = nn.Linear(512, num_classes)
        self.bn = nn.BatchNorm1d(num_classes)

    def _trunk_and_fused(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.features(x)  # (B,512,7,7)
        heads = torch.stack([getattr(self, f"cat_head{i}")(fmap) for i in range(self.num_heads)],
                            dim=1)  # (B,heads,512)
        if heads.size(1) > 1:  # attention fusion: log-softmax across heads
            heads = F.log_softmax(heads, dim=1)
        return fmap, heads.sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,224,224) -> (B,classes)
        _, fused = self._trunk_and_fused(x)
        return self.bn(self.fc(fused))

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,224,224) normalised faces -> (B,1024): pooled trunk (512) ⊕ fused heads (512)."""
        fmap, fused = self._trunk_and_fused(x)
        return torch.cat([fmap.mean(dim=(2, 3)), fused], dim=1)


def preprocess(faces: np.ndarray | torch.Tensor, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N,S,S,3) uint8 RGB crops -> (N,3,S,S) ImageNet-normalised tensor on ``device``.

    DAN's checkpoints are trained on S = 224 (the default crop size); the network itself
    accepts any square size >= 32 (tests use smaller crops for speed).
    """
    x = torch.as_tensor(faces)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] != x.shape[2] or x.shape[1] < 32:
        raise ValueError(f"DAN expects (N,{INPUT_SIZE},{INPUT_SIZE},3) RGB crops, got "
                         f"{tuple(x.shape)}")
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise DANCheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e
    if isinstance(ckpt, dict) and "model_state_dict" in ckpt:
        sd = ckpt["model_state_dict"]
    elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt  # a bare state dict is accepted too
    else:
        keys = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DANCheckpointError(
            f"{path}: expected a dict with 'model_state_dict' (the official DAN layout), "
            f"got {keys}")
    # checkpoints saved from nn.DataParallel prefix every key with "module."
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_dan(path: str | os.PathLike, num_classes: int | None = None,
             map_location: str | torch.device = "cpu") -> DAN:
    """Load a public DAN checkpoint (``{"model_state_dict": ...}``) with ``strict=True``.

    ``num_classes`` defaults to the checkpoint's (``fc.weight`` rows: 7 for AffectNet-7 and
    RAF-DB, 8 for AffectNet-8). Raises :class:`DANCheckpointError` listing missing and
    unexpected keys and shape mismatches. The model is returned in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DAN checkpoint {path} does not exist")
    sd = _state_dict_from_file(path)
    fc = sd.get("fc.weight")
    n_ckpt = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else None
    model = DAN(num_classes=num_classes or n_ckpt or 7)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)}, model {tuple(expected[k].shape)}"
                    for k in set(sd) & set(expected) if tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        def listing(title: str, items: list[str]) -> str:
            more = f" ... (+{len(items) - 20} more)" if len(items) > 20 else ""
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:20]) + more

        msg = f"{path}: not a DAN checkpoint matching this architecture ({len(expected)} tensors " \
              f"expected, {len(sd)} found)"
        if missing:
            msg += listing("missing keys", missing)
        if unexpected:
            msg += listing("unexpected keys", unexpected)
        if shapes:
            msg += listing("shape mismatches", shapes)
        raise DANCheckpointError(msg)
    model.load_state_dict(sd, strict=True)
    return model.to(map_location).eval()


def save_dan(model: DAN, path: str | os.PathLike) -> None:
    """Save in the official checkpoint layout (``{"model_state_dict": ...}``)."""
    torch.save({"model_state_dict": model.state_dict()}, Path(path))
