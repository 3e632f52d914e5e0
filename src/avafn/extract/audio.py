"""Audio features: a wav2vec 2.0 encoder through ``transformers``, one vector per utterance.

``Wav2Vec2Encoder(model)`` loads any hub id or local folder (``from_pretrained``; default
``facebook/wav2vec2-large-lv60``) or takes a ready ``Wav2Vec2Model`` (benchmarks build one
from a config). For each utterance (mono 16 kHz float32):

1. normalisation as the checkpoint's feature-extractor config says (``do_normalize``: zero
   mean, unit variance over the whole utterance, as ``Wav2Vec2FeatureExtractor`` does);
2. clips longer than ``max_seconds`` (default 30 s) are cut into consecutive windows of at most
   that length (a remainder shorter than 1 s joins the previous window), each encoded on its
   own, so memory stays bounded whatever the clip length;
3. windows are sorted by length and batched (at most ``batch_size`` windows and
   ``max_batch_seconds`` of padded audio per forward), zero-padded, with the attention mask when
   the checkpoint expects one (``return_attention_mask``; wav2vec2-large-lv60 does);
4. layer ``L`` is averaged over time: ``L = num_hidden_layers`` (the default, 24 for large)
   is the encoder's output, ``last_hidden_state`` (for stable-layer-norm models like lv60 it
   includes the encoder's final LayerNorm, as ``hidden_states[-1]`` did in transformers 4.x;
   transformers 5 records ``hidden_states[-1]`` before that norm, so we do not use it);
   ``0 <= L < num_hidden_layers`` is ``hidden_states[L]`` (0 = the transformer's input). It is
   averaged over the window's valid frames
   (``_get_feat_extract_output_lengths``), and the utterance vector is the frame-weighted mean
   of its windows, i.e. the mean over all of the utterance's frames.

On CUDA the forward runs under bf16 autocast; pooled vectors are float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from avafn.errors import UserError

DEFAULT_MODEL = "facebook/wav2vec2-large-lv60"
SAMPLE_RATE = 16000
#: the conv feature encoder's receptive field: shorter input gives no frame at all
MIN_SAMPLES = 400


class AudioTooShortError(UserError):
    reason = "audio too short"


@dataclass
class _Window:
    item: int
    wave: np.ndarray


def _model_id(model) -> str:
    return str(model) if isinstance(model, (str, os.PathLike)) else getattr(
        model.config, "_name_or_path", "") or "in-memory Wav2Vec2Model"


class Wav2Vec2Encoder:
    """Utterance-level wav2vec 2.0 features (module docstring for the procedure)."""

    def __init__(self, model: str | os.PathLike | torch.nn.Module = DEFAULT_MODEL,
                 layer: int | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 16, max_seconds: float = 30.0,
                 max_batch_seconds: float = 600.0, amp: bool = True,
                 local_files_only: bool = False):
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        self.model_id = _model_id(model)
        if isinstance(model, torch.nn.Module):
            net = model
            fe = None
        else:
            try:
                net = Wav2Vec2Model.from_pretrained(str(model), local_files_only=local_files_only)
            except OSError as e:
                raise OSError(
                    f"cannot load a wav2vec 2.0 model from {model!r}: {e}\nGive a local folder "
                    "(config.json + weights) or a Hugging Face id reachable from this machine."
                ) from e
            try:
                fe = Wav2Vec2FeatureExtractor.from_pretrained(
                    str(model), local_files_only=local_files_only)
            except OSError:
                fe = None  # no preprocessor_config.json: defaults below
        cfg = net.config
        self.do_normalize = bool(fe.do_normalize) if fe is not None else True
        self.use_attention_mask = (bool(fe.return_attention_mask) if fe is not None
                                   else cfg.feat_extract_norm == "layer")
        if fe is not None and fe.sampling_rate != SAMPLE_RATE:
            raise UserError(f"{model}: expects {fe.sampling_rate} Hz audio, this encoder "
                             f"feeds {SAMPLE_RATE} Hz")
        n_layers = int(cfg.num_hidden_layers)
        self.layer = n_layers if layer is None else int(layer)
        if not 0 <= self.layer <= n_layers:
            raise UserError(f"{self.model_id}: layer {layer} out of range 0..{n_layers} "
                             f"(0 = transformer input, {n_layers} = last layer)")
        self.width = int(cfg.hidden_size)
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        self.amp = amp and self.device.type == "cuda"

    def meta(self) -> dict:
        """What the feature store records about this extractor."""
        return {
            "extractor": "wav2vec2-mean", "model_id": self.model_id, "layer": self.layer,
            "width": self.width,
            "config": {"model_id": self.model_id, "layer": self.layer, "pooling": "mean",
                       "sample_rate": SAMPLE_RATE, "do_normalize": self.do_normalize,
                       "attention_mask": self.use_attention_mask,
                       "max_seconds": self.max_samples / SAMPLE_RATE},
        }

    def _normalise(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if self.do_normalize:  # as Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
            wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        return wave

    def _windows(self, i: int, wave: np.ndarray) -> list[_Window]:
        n, w = len(wave), self.max_samples
        if n <= w:
            return [_Window(i, wave)]
        cuts = list(range(0, n, w))
        if n - cuts[-1] < SAMPLE_RATE and len(cuts) > 1:  # short remainder joins the last window
            cuts.pop()
        bounds = cuts[1:] + [n]
        return [_Window(i, wave[a:b]) for a, b in zip(cuts, bounds)]

    def encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Mono 16 kHz waves -> one (width,) float32 vector each, in the same order.

        Raises :class:`AudioTooShortError` if any wave has fewer than 400 samples (25 ms);
        the job checks lengths first and records such clips as missing.
        """
        for w in waves:
            if len(w) < MIN_SAMPLES:
                raise AudioTooShortError(f"{len(w)} samples (< {MIN_SAMPLES} = 25 ms at 16 kHz)")
        windows = [win for i, w in enumerate(waves) for win in self._windows(i, self._normalise(w))]
        windows.sort(key=lambda win: len(win.wave))
        sums = np.zeros((len(waves), self.width), dtype=np.float64)
        frames = np.zeros(len(waves), dtype=np.int64)
        start = 0
        while start < len(windows):
            stop = start + 1
            while (stop < len(windows) and stop - start < self.batch_size
                   and (stop - start + 1) * len(windows[stop].wave) <= self.max_batch_samples):
                stop += 1
            batch = windows[start:stop]
            s, n = self._forward([w.wave for w in batch])
            for win, si, ni in zip(batch, s, n):
                sums[win.item] += si
                frames[win.item] += ni
            start = stop
        return [(sums[i] / frames[i]).astype(np.float32) for i in range(len(waves))]

    @torch.inference_mode()
    def _forward(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One padded batch -> per-window sums over valid frames (B, D) and frame counts (B,)."""
        lengths = torch.tensor([len(w) for w in waves])
        x = torch.zeros(len(waves), int(lengths.max()))
        for i, w in enumerate(waves):
            x[i, : len(w)] = torch.from_numpy(w)
        x = x.to(self.device, non_blocking=True)
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.amp):
            last = self.layer == self.net.config.num_hidden_layers
            out = self.net(x, attention_mask=mask.long() if self.use_attention_mask else None,
                           output_hidden_states=not last)
        h = (out.last_hidden_state if last else out.hidden_states[self.layer]).float()  # (B,T,D)
        n_frames = self.net._get_feat_extract_output_lengths(lengths).to(torch.long)
        valid = (torch.arange(h.shape[1])[None] < n_frames[:, None]).to(h.device)
        sums = (h * valid[..., None]).sum(dim=1)
        return sums.double().cpu().numpy(), n_frames.numpy()
