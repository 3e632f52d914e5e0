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
   ``max_batch_seconds`` of padded audio per forward; on the CPU also at most ``max_padding``
   of the batch's audio as padding, default 5 %: there a padded sample costs as much as a real
   one and a larger batch brings little), zero-padded, with the attention mask when the
   checkpoint expects one (``return_attention_mask``; wav2vec2-large-lv60 does);
4. layer ``L`` is averaged over time: ``L = num_hidden_layers`` (the default, 24 for large)
   is the encoder's output, ``last_hidden_state`` (for stable-layer-norm models like lv60 it
   includes the encoder's final LayerNorm, as ``hidden_states[-1]`` did in transformers 4.x;
   transformers 5 records ``hidden_states[-1]`` before that norm, so we do not use it);
   ``0 <= L < num_hidden_layers`` is ``hidden_states[L]`` (0 = the transformer's input). It is
   averaged over the window's valid frames
   (``_get_feat_extract_output_lengths``), and the utterance vector is the frame-weighted mean
   of its windows, i.e. the mean over all of the utterance's frames.

``layers=[12, 18, 24]`` pools several layers from the same forward pass
(``output_hidden_states``), one vector per layer; only the layers up to the deepest one asked
for are computed. ``precision="bf16"`` runs the forward under bfloat16 autocast (any device;
default on CUDA and on CPUs that compute bfloat16 natively), ``"fp32"`` in float32; pooled
vectors are float32 either way. The network is prepared for that precision once, when the
encoder is built (:func:`avafn.extract.autocast.prepare_for_inference`: bfloat16 matrix
weights, weight normalisation baked in; the same numbers as autocast casting them per
forward), in place: a network given to a bf16 encoder is one for bf16 inference afterwards.

:class:`Wav2Vec2Extractor` (registered as ``wav2vec2-mean``) is the encoder as the extraction
job uses it; with several layers it writes one modality per layer (``audio-l12``, ...).
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avafn.errors import UserError, refuse_pickle
from avafn.extract.autocast import autocast, prepare_for_inference
from avafn.extract.base import (
    Extractor,
    Result,
    check_precision,
    local_model_or_id,
    recorded_precision,
)
from avafn.extract.media import decode_audio
from avafn.extract.registry import ExtractorError, model_location, register_extractor

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
                 max_batch_seconds: float = 600.0, precision: str | None = None,
                 local_files_only: bool = False, layers: Sequence[int] | None = None,
                 max_padding: float | None = None):
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        self.model_id = _model_id(model)
        if isinstance(model, torch.nn.Module):
            net = model
            fe = None
        else:
            model = local_model_or_id(str(model), "wav2vec 2.0 model")
            try:
                net = Wav2Vec2Model.from_pretrained(model, local_files_only=local_files_only)
            except pickle.UnpicklingError as e:
                raise refuse_pickle(model, e) from None
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
        if layers is not None and layer is not None:
            raise UserError("give layer or layers, not both")
        wanted = list(layers) if layers is not None else [n_layers if layer is None else layer]
        if not wanted or len(set(wanted)) != len(wanted):
            raise UserError(f"{self.model_id}: layers {wanted}: expected distinct layer numbers")
        for L in wanted:
            if not 0 <= int(L) <= n_layers:
                raise UserError(f"{self.model_id}: layer {L} out of range 0..{n_layers} "
                                 f"(0 = transformer input, {n_layers} = last layer)")
        self.layers = [int(L) for L in wanted]
        self.layer = self.layers[0]
        self.n_layers = n_layers
        self.width = int(cfg.hidden_size)
        self.device = torch.device(device)
        self._precision = check_precision(precision, self.device.type)
        self.net = prepare_for_inference(net.to(self.device), self._precision)
        # the forward stops at the deepest layer asked for (the net itself is left whole)
        top = max(self.layers)
        view = _first_layers(self.net, top) if top < n_layers else None
        self._run, self._top = (view, top) if view is not None else (self.net, n_layers)
        self.batch_size = int(batch_size)
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        if max_padding is None:
            max_padding = 0.05 if self.device.type == "cpu" else float("inf")
        self.max_padding = float(max_padding)
        #: called before each forward (predict lowers torch's threads with it while another
        #: stage decodes on a core of its own)
        self.before_batch: Callable[[], None] | None = None

    @property
    def precision(self) -> str:
        """"bf16" or "fp32", fixed when the encoder is built (the network is prepared for
        it)."""
        return self._precision

    def meta(self, layer: int | None = None) -> dict:
        """What the feature store records about this extractor (for ``layer``: default the
        first of ``layers``)."""
        layer = self.layer if layer is None else int(layer)
        return {
            "extractor": Wav2Vec2Extractor.name, "model_id": self.model_id, "layer": layer,
            "width": self.width,
            "config": {"model_id": self.model_id, "layer": layer, "pooling": "mean",
                       "sample_rate": SAMPLE_RATE, "do_normalize": self.do_normalize,
                       "attention_mask": self.use_attention_mask,
                       "max_seconds": self.max_samples / SAMPLE_RATE,
                       "precision": self.precision},
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
        """Mono 16 kHz waves -> one (width,) float32 vector each (the first of ``layers``),
        in the same order. Raises :class:`AudioTooShortError` as :meth:`encode_layers`."""
        return [v[0] for v in self.encode_layers(waves)]

    def encode_layers(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Mono 16 kHz waves -> one (len(layers), width) float32 array each, in order.

        Raises :class:`AudioTooShortError` if any wave has fewer than 400 samples (25 ms);
        the job checks lengths first and records such clips as missing.
        """
        for w in waves:
            if len(w) < MIN_SAMPLES:
                raise AudioTooShortError(f"{len(w)} samples (< {MIN_SAMPLES} = 25 ms at 16 kHz)")
        windows = [win for i, w in enumerate(waves) for win in self._windows(i, self._normalise(w))]
        windows.sort(key=lambda win: len(win.wave))
        sums = np.zeros((len(waves), len(self.layers), self.width), dtype=np.float64)
        frames = np.zeros(len(waves), dtype=np.int64)
        for batch in self._batches(windows):
            if self.before_batch is not None:
                self.before_batch()
            s, n = self._forward([w.wave for w in batch])
            for win, si, ni in zip(batch, s, n):
                sums[win.item] += si
                frames[win.item] += ni
        return [(sums[i] / frames[i]).astype(np.float32) for i in range(len(waves))]

    def _batches(self, windows: list[_Window]) -> Iterator[list[_Window]]:
        """Consecutive runs of the length-sorted windows: at most ``batch_size`` windows,
        ``max_batch_samples`` padded samples and ``max_padding`` of the real samples as
        padding each."""
        start = 0
        while start < len(windows):
            stop, real = start + 1, len(windows[start].wave)
            while stop < len(windows) and stop - start < self.batch_size:
                n, k = len(windows[stop].wave), stop - start + 1
                if k * n > self.max_batch_samples or k * n > (1 + self.max_padding) * (real + n):
                    break
                real += n
                stop += 1
            yield windows[start:stop]
            start = stop

    @torch.inference_mode()
    def _forward(self, waves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One padded batch -> per-window sums over valid frames (B, L, D) for each of
        ``layers``, and frame counts (B,)."""
        lengths = torch.tensor([len(w) for w in waves])
        x = torch.zeros(len(waves), int(lengths.max()))
        for i, w in enumerate(waves):
            x[i, : len(w)] = torch.from_numpy(w)
        x = x.to(self.device, non_blocking=True)
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).to(self.device)
        top = self._top  # the last layer run: its output is last_hidden_state
        with autocast(self.device, self.precision):
            hidden = any(L != top for L in self.layers)
            out = self._run(x, attention_mask=mask.long() if self.use_attention_mask else None,
                            output_hidden_states=hidden)
        # (B,L,T,D); the last layer is last_hidden_state (module docstring)
        h = torch.stack([out.last_hidden_state if L == top else out.hidden_states[L]
                         for L in self.layers], dim=1).float()
        n_frames = self.net._get_feat_extract_output_lengths(lengths).to(torch.long)
        valid = (torch.arange(h.shape[2])[None] < n_frames[:, None]).to(h.device)
        sums = (h * valid[:, None, :, None]).sum(dim=2)
        return sums.double().cpu().numpy(), n_frames.numpy()


def _first_layers(net: torch.nn.Module, depth: int) -> torch.nn.Module | None:
    """A view of ``net`` that runs only the first ``depth`` transformer layers (the same
    parameters; ``net`` itself is not changed), whose ``last_hidden_state`` is the whole
    network's ``hidden_states[depth]`` (for stable-layer-norm models the final LayerNorm,
    which follows the last layer, is left out). None for a network of another layout."""
    encoder = getattr(net, "encoder", None)
    if not isinstance(getattr(encoder, "layers", None), torch.nn.ModuleList):
        return None
    view_encoder = copy.copy(encoder)
    view_encoder._modules = dict(encoder._modules)
    view_encoder.layers = torch.nn.ModuleList(list(encoder.layers)[:depth])
    if getattr(net.config, "do_stable_layer_norm", False):
        view_encoder.layer_norm = torch.nn.Identity()
    view = copy.copy(net)
    view._modules = dict(net._modules)
    view.encoder = view_encoder
    return view


# --------------------------------------------------------------------------- the extractor
@register_extractor("wav2vec2-mean")
class Wav2Vec2Extractor(Extractor):
    """wav2vec 2.0 features for the extraction job; one modality per layer when the encoder
    pools several (``{modality}-l{layer}``)."""

    kind = "audio"

    def __init__(self, encoder: Wav2Vec2Encoder, pool_clips: int | None = None,
                 modality: str = "audio"):
        self.encoder = encoder
        self.modality = modality
        # length grouping happens inside a unit: several batches' worth of clips
        self.unit_size = pool_clips or max(8 * encoder.batch_size, 32)

    def meta(self) -> dict:
        return self.encoder.meta()

    def outputs(self) -> dict[str, dict]:
        if len(self.encoder.layers) == 1:
            return {self.modality: self.meta()}
        return {f"{self.modality}-l{L}": self.encoder.meta(L) for L in self.encoder.layers}

    def loader(self, workers: int) -> Callable:
        return decode_audio

    def process(self, payloads: list[np.ndarray]) -> list[Result]:
        ok = [i for i, w in enumerate(payloads) if len(w) >= MIN_SAMPLES]
        vecs = dict(zip(ok, self.encoder.encode_layers([payloads[i] for i in ok])))
        names = list(self.outputs())
        out: list[Result] = []
        for i, w in enumerate(payloads):
            if i not in vecs:
                out.append((None, len(w), f"audio too short ({len(w)} samples at 16 kHz)"))
            elif len(names) == 1:
                out.append((vecs[i][0], len(w), ""))
            else:
                out.append((dict(zip(names, vecs[i])), len(w), ""))
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(f"{cls.name} (wav2vec 2.0) options")
        layers = g.add_mutually_exclusive_group()
        layers.add_argument("--layer", type=int, default=None, metavar="N",
                            help="hidden layer to pool (default: the last, 24 for large)")
        layers.add_argument("--layers", default=None, metavar="L1,L2,...",
                            help="several layers from one forward pass, each stored as its own "
                                 "modality AUDIO-lN (e.g. 12,18,24 -> audio-l12, audio-l18, "
                                 "audio-l24)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> Wav2Vec2Extractor:
        layers = None
        if getattr(args, "layers", None):
            try:
                layers = [int(x) for x in args.layers.split(",") if x.strip()]
            except ValueError:
                raise ExtractorError(f"--layers {args.layers!r}: expected comma-separated "
                                     "layer numbers, e.g. 12,18,24") from None
        enc = Wav2Vec2Encoder(args.model or DEFAULT_MODEL, layer=getattr(args, "layer", None),
                              layers=layers, device=device, batch_size=args.batch_size or 16,
                              precision=args.precision)
        return cls(enc)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> Wav2Vec2Extractor:
        cfg = meta.get("config", {})
        loc = model_location(meta, model_override)
        if loc is None:
            raise ExtractorError("the record does not say which wav2vec 2.0 model it used")
        try:
            enc = Wav2Vec2Encoder(loc, layer=meta.get("layer", cfg.get("layer")), device=device,
                                  max_seconds=float(cfg.get("max_seconds", 30.0)),
                                  precision=recorded_precision(cfg, device),
                                  batch_size=int(options.get("batch_size") or 16))
        except OSError as e:
            raise ExtractorError(f"cannot load the wav2vec 2.0 model recorded ({loc}): {e}; "
                                 "give its location on this machine") from None
        return cls(enc)
