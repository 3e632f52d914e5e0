"""Voice activity detection: the Silero VAD network (weights shipped by the ``silero-vad``
package as safetensors) rebuilt in plain PyTorch, so that loading runs no code from disk, and
the package's own post-processing (``get_speech_timestamps_from_probs``) for the regions.

::

    vad = SileroVAD()
    probs = vad.probabilities(wave)          # one per 32 ms frame (16 kHz)
    regions = vad.speech(wave)               # [(start_s, end_s), ...]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avafn.diarize.errors import package_file
from avafn.diarize.options import VADConfig

SAMPLE_RATE = 16000
FRAME = 512  # samples per probability at 16 kHz
_CONTEXT = 64


def _weights_file() -> str:
    return package_file("silero_vad", "data/silero_vad_16k.safetensors", "silero-vad",
                        "voice activity detection")


class _SileroNet(nn.Module):
    """Silero VAD v5 at 16 kHz: STFT as a convolution, 4 convolutions, an LSTM cell, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks`` (n, 64 + 512): consecutive frames with their left context → (n,) probs."""
        x = nn.functional.pad(chunks, (0, _CONTEXT), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :129] ** 2 + x[:, 129:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        h, _ = self.lstm(x.squeeze(-1).unsqueeze(0))  # the frames in order: one sequence
        y = torch.sigmoid(self.final_conv(torch.relu(h[0]).unsqueeze(-1)))
        return y[:, 0, 0]


def _load_net(path: str) -> _SileroNet:
    from safetensors.torch import load_file

    sd = load_file(path)
    renamed = {}
    for k, v in sd.items():
        if k.startswith("lstm_cell."):
            k = "lstm." + k.split(".", 1)[1] + "_l0"
        renamed[k] = v
    net = _SileroNet()
    net.load_state_dict(renamed)
    return net.eval()


class SileroVAD:
    """Speech probability per 32 ms frame and speech regions of 16 kHz mono audio."""

    def __init__(self, config: VADConfig | None = None, weights: str | None = None) -> None:
        self.config = config or VADConfig()
        self.net = _load_net(weights or _weights_file())

    @torch.inference_mode()
    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        """(ceil(n / 512),) speech probabilities; frame ``i`` covers samples 512 i ... 512 (i+1)."""
        x = torch.as_tensor(np.asarray(wave, np.float32))
        if x.ndim != 1:
            raise ValueError("expected mono audio (n_samples,)")
        n = -(-len(x) // FRAME)
        if n == 0:
            return np.zeros(0, np.float32)
        x = nn.functional.pad(x, (_CONTEXT, n * FRAME - len(x)))
        idx = torch.arange(n)[:, None] * FRAME + torch.arange(FRAME + _CONTEXT)[None]
        return self.net(x[idx]).numpy()

    def speech(self, wave: np.ndarray) -> list[tuple[float, float]]:
        """Speech regions ``[(start, end), ...]`` in seconds."""
        probs = self.probabilities(wave)
        return regions_from_probs(probs, len(wave), self.config)


def regions_from_probs(probs: np.ndarray, n_samples: int, config: VADConfig
                       ) -> list[tuple[float, float]]:
    """silero's hysteresis post-processing of frame probabilities into speech regions."""
    n_threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import get_speech_timestamps_from_probs
    finally:
        torch.set_num_threads(n_threads)  # importing silero_vad sets it to 1
    ts = get_speech_timestamps_from_probs(
        [float(p) for p in probs], sampling_rate=SAMPLE_RATE, threshold=config.threshold,
        min_speech_duration_ms=int(config.min_speech * 1000),
        min_silence_duration_ms=int(config.min_silence * 1000),
        speech_pad_ms=int(config.pad * 1000), audio_length_samples=n_samples)
    return [(t["start"] / SAMPLE_RATE, t["end"] / SAMPLE_RATE) for t in ts]
