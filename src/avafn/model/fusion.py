"""Fusion: how the per-modality vectors of each utterance become one vector u_t (eqs. 1-7).

**The built-in ``"cam"`` is a fast path.** :class:`CrossModalFusion` (``encode``: packed rows;
``fuse``: the padded and streaming form) and its weight snapshot :class:`FrozenCAM` must equal
:func:`avafn.model.reference.fusion`: ``tests/test_model.py::test_full_pass_equals_reference``,
``test_gradients_equal_reference`` and ``test_frozen_step_equals_step``. A subclass that
overrides an interface method without its own ``encode`` / ``frozen`` runs through the
generic ones (:mod:`avafn.model.backend`).

**The interface a fusion implements** (registered in ``avafn.model.registry.FUSIONS`` and chosen
by ``AVAFNConfig.fusion``; the model builds it as ``cls(cfg)`` with its ``AVAFNConfig``, whose
``d_model`` is the width of u_t and whose ``fusion_config`` is an instance of the fusion's own
``config_class``, a :class:`FusionConfig` dataclass holding its hyper-parameters: ``"cam"``'s
is :class:`CAMConfig`, ``d_ff`` and eq. 7's ``weights``). Shapes: B dialogues, T utterances, d = ``cfg.d_model``.
Subclass :class:`Fusion`, which provides ``forward`` (the full pass) and ``stream`` (the
streaming step, ``AVAFN.step``) from the three methods below, so both run the same code:

- ``project(feats, valid) -> h``: feats m -> (B,T,D_m), valid m -> (B,T) bool (present and not
  padding; invalid rows must never be read) -> h m -> (B,T,*), the per-utterance encodings.
- ``keys_values(h) -> (keys, values)``: m -> (B,T,*) each, what *later* utterances may attend
  to. Streaming keeps them in its state (one row per utterance seen) instead of recomputing
  them; return two empty dicts when the fusion looks at the current utterance only.
- ``fuse(h, valid, keys, values, key_valid, allow) -> (u, attn)``: queries h m -> (B,Tq,*)
  (valid m -> (B,Tq)) over the tokens keys/values m -> (B,Tk,*) (key_valid m -> (B,Tk) bool);
  allow (Tq,Tk) bool or None restricts which token a query may see (causal full pass) ->
  u (B,Tq,d) and the attention weights m -> (B,Tq,*) (may be empty). The streaming step calls it
  with Tq = 1 and every token seen so far, allow None; the full pass with Tq = Tk = T.
- ``encode(feats, valid, layout, causal) -> u`` (optional): the full pass's entry, on the packed
  rows of the batch's real utterances (:mod:`avafn.model.layout`). The default pads them and
  calls ``forward`` (the three methods above); ``"cam"`` overrides it to run its per-utterance
  layers on the packed rows.
- ``frozen() -> object with step(x, keys, values, key_valid) -> (u, keys, values, key_valid)``
  (optional): a snapshot of the weights for inference (:meth:`AVAFN.frozen_step`), called only
  without gradients, outside training, with every modality present at every utterance so far;
  x m -> (B,D_m), the caches as in the streaming state, u (B,d). The default
  (:class:`FrozenFusion`) runs the three methods above on the live module; ``"cam"`` returns
  merged, pre-transposed copies of its weights (fewer and faster matrix products).

The built-in ``"cam"`` is the paper's: every modality m is projected to width d (H_m). With two
or more modalities the queries of m attend over the keys/values of the *other* modalities'
tokens, where the tokens are the utterances of the dialogue (padding and missing tokens masked;
causal in streaming mode); for two modalities this is exactly the paper's CAM (audio over
video, video over audio). With one modality the CAM is bypassed and u_t = H_m (spec, unimodal
runs). Eq. 7's weights: ``fusion_weights="global"``, one learned scalar per modality, or
``"per_utterance"``, a gate computing them from the cross-attended representations of each
utterance; either way a softmax over the modalities present at that utterance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from avafn.config import check_field_types

from .layout import Layout
from .ops import Dropout, dropout
from .ops import frozen_t as _t
from .registry import FUSIONS

if TYPE_CHECKING:
    from .avafn import AVAFNConfig

FUSION_WEIGHTS = ("global", "per_utterance")

Tensors = dict[str, torch.Tensor]


@dataclass
class FusionConfig:
    """A fusion's own hyper-parameters (``AVAFNConfig.fusion_config``); a fusion plug-in
    declares its subclass as ``config_class``. This base has none."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown fusion setting(s) {unknown} (known: {sorted(known)})")
        return cls(**dict(d))


@dataclass
class CAMConfig(FusionConfig):
    """The ``"cam"`` fusion's hyper-parameters."""

    d_ff: int = 512  # CAM feed-forward hidden width (eqs. 5-6)
    weights: str = "global"  # eq. 7: "global" (a scalar per modality) or "per_utterance"

    def __post_init__(self) -> None:
        check_field_types(self, "fusion")
        if self.d_ff < 1:  # the setting's name as users give it (--model '{"d_ff": ...}')
            raise ValueError(f"model setting 'd_ff' must be >= 1, got {self.d_ff}")
        if self.weights not in FUSION_WEIGHTS:
            raise ValueError(f"fusion_weights must be one of {list(FUSION_WEIGHTS)}, got "
                             f"{self.weights!r}")


class Fusion(nn.Module):
    """Base class of a fusion: subclasses implement project / keys_values / fuse."""

    #: its hyper-parameters' dataclass; the model config's ``fusion_config`` is one
    config_class: ClassVar[type[FusionConfig]] = FusionConfig
    modalities: tuple[str, ...]

    def project(self, feats: Tensors, valid: Tensors) -> Tensors:
        raise NotImplementedError

    def keys_values(self, h: Tensors) -> tuple[Tensors, Tensors]:
        raise NotImplementedError

    def fuse(self, h: Tensors, valid: Tensors, keys: Tensors, values: Tensors,
             key_valid: Tensors, allow: torch.Tensor | None) -> tuple[torch.Tensor, Tensors]:
        raise NotImplementedError

    def forward(self, feats: Tensors, present: Tensors, mask: torch.Tensor,
                causal: bool) -> torch.Tensor:
        """feats m->(B,T,D_m), present m->(B,T), mask (B,T) -> u^CA (B,T,d)."""
        valid = {m: present[m] & mask for m in self.modalities}
        h = self.project(feats, valid)
        keys, values = self.keys_values(h)
        u, _ = self.fuse(h, valid, keys, values, valid, causal_allow(mask, causal))
        return u

    def encode(self, feats: Tensors, valid: Tensors, layout: Layout, causal: bool) -> torch.Tensor:
        """The model's full pass: packed rows (``avafn.model.layout``) feats m->(n,D_m), valid
        m->(n,) bool -> u^CA (n,d). This default pads the rows, calls ``forward`` and packs the
        result; a fusion may override it to skip the padding, as ``"cam"`` does."""
        mask = layout.pad(torch.ones(layout.n, dtype=torch.bool, device=layout.flat.device))
        u = self.forward({m: layout.pad(x) for m, x in feats.items()},
                         {m: layout.pad(v) for m, v in valid.items()}, mask, causal)
        return layout.pack(u)

    def stream(self, feats: Tensors, valid: Tensors, keys: Tensors, values: Tensors,
               key_valid: Tensors) -> tuple[torch.Tensor, Tensors, Tensors, Tensors]:
        """The streaming step's fusion, from the three methods above: one utterance per
        dialogue, feats m->(B,1,D_m), valid m->(B,1) bool, the caches of the utterances seen so
        far m->(B,t,*) -> (u (B,1,d), the caches with this utterance appended)."""
        h = self.project(feats, valid)
        kn, vn = self.keys_values(h)
        keys = {m: torch.cat([keys[m], kn[m]], 1) for m in kn}
        values = {m: torch.cat([values[m], vn[m]], 1) for m in vn}
        key_valid = {m: torch.cat([key_valid[m], valid[m]], 1) for m in kn}
        u, _ = self.fuse(h, valid, keys, values, key_valid, None)
        return u, keys, values, key_valid

    def frozen(self) -> FrozenFusion:
        """The inference step's view of this fusion (see the module docstring)."""
        return FrozenFusion(self)


class FrozenFusion:
    """A fusion's streaming step from project / keys_values / fuse (weights read live)."""

    def __init__(self, fusion: Fusion) -> None:
        self.fusion = fusion

    def step(self, x: Tensors, keys: Tensors, values: Tensors, key_valid: Tensors
             ) -> tuple[torch.Tensor, Tensors, Tensors, Tensors]:
        """x m->(B,D_m), every modality present; the caches m->(B,t,*) -> (u (B,d), the caches
        with this utterance appended)."""
        valid = {m: torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device)
                 for m, v in x.items()}
        u, keys, values, key_valid = self.fusion.stream(
            {m: v.unsqueeze(1) for m, v in x.items()}, valid, keys, values, key_valid)
        return u[:, 0], keys, values, key_valid


_SQRT1_2 = 1.0 / math.sqrt(2.0)


def _ln(ln: nn.LayerNorm) -> tuple:
    return ln.normalized_shape, ln.weight.detach().clone(), ln.bias.detach().clone(), ln.eps


class FrozenCAM:
    """The CAM's streaming step on a snapshot of its weights: per modality one product for the
    projection and one for q, k, v and the residual branch together (the attention scale folded
    into q), every weight pre-transposed. Same equations as :class:`CrossModalFusion`."""

    def __init__(self, fu: CrossModalFusion) -> None:
        mods, d = fu.modalities, fu.proj[fu.modalities[0]].proj.out_features
        self.mods, self.d, self.others = mods, d, fu._others
        self.proj, self.qkvr, self.res_ln, self.ln1, self.ff, self.ln2 = {}, {}, {}, {}, {}, {}
        for m in mods:
            p, blk, res = fu.proj[m], fu.cam[m], fu.res[m]
            self.proj[m] = (_t(p.proj.weight), p.proj.bias.detach().clone(), _ln(p.norm))
            w = torch.cat([blk.q.weight * blk.scale, blk.k.weight, blk.v.weight, res[0].weight])
            b = torch.cat([torch.zeros_like(res[0].bias).repeat(3), res[0].bias])
            self.qkvr[m] = (_t(w), b.detach().clone())
            self.res_ln[m] = _ln(res[1])
            self.ln1[m], self.ln2[m] = _ln(blk.norm1), _ln(blk.norm2)
            ff1, ff2 = blk.ff[0], blk.ff[3]
            # GELU's factor 1/2 folded into the second layer (see step)
            self.ff[m] = (_t(ff1.weight), ff1.bias.detach().clone(), _t(ff2.weight * 0.5),
                          ff2.bias.detach().clone())
        self.out = (_t(fu.out.weight), fu.out.bias.detach().clone())
        if fu.weights == "global":  # all modalities present: constant weights
            self.w = torch.softmax(fu.fusion_logits.detach().clone(), -1).tolist()
            self.gate = None
        else:
            gate = fu.fusion_gate
            self.w, self.gate = None, (_t(gate.weight), gate.bias.detach().clone())

    def step(self, x: Tensors, keys: Tensors, values: Tensors, key_valid: Tensors
             ) -> tuple[torch.Tensor, Tensors, Tensors, Tensors]:
        d, lay = self.d, F.layer_norm
        z0 = x[self.mods[0]]
        present = torch.ones(z0.shape[0], 1, dtype=torch.bool, device=z0.device)
        h, q, res = {}, {}, {}
        keys, values, key_valid = dict(keys), dict(values), dict(key_valid)
        for m in self.mods:
            wt, b, ln = self.proj[m]
            h[m] = hm = lay(torch.addmm(b, x[m], wt), *ln)
            z = torch.addmm(self.qkvr[m][1], hm, self.qkvr[m][0])  # q | k | v | res (B,4d)
            q[m] = z[:, None, :d]
            keys[m] = torch.cat([keys[m], z[:, None, d:2 * d]], 1)
            values[m] = torch.cat([values[m], z[:, None, 2 * d:3 * d]], 1)
            key_valid[m] = torch.cat([key_valid[m], present], 1)
            res[m] = lay(z[:, 3 * d:], *self.res_ln[m])
        h_c = []
        for m in self.mods:
            others = self.others[m]
            k = keys[others[0]] if len(others) == 1 else torch.cat([keys[o] for o in others], 1)
            v = values[others[0]] if len(others) == 1 else torch.cat([values[o] for o in others],
                                                                     1)
            attn = torch.softmax(torch.bmm(q[m], k.transpose(1, 2)), -1)  # eqs. 1-2
            h_ln = lay(h[m] + torch.bmm(attn, v)[:, 0], *self.ln1[m])  # eqs. 3-4
            w1, b1, w2, b2 = self.ff[m]
            a = torch.addmm(b1, h_ln, w1)  # eq. 5; exact GELU x (1 + erf(x / sqrt 2)) / 2,
            # written out: F.gelu's CPU kernel costs several times these three operations here
            f = torch.addmm(b2, a * torch.erf(a * _SQRT1_2).add_(1.0), w2)
            h_c.append(lay(h_ln + f, *self.ln2[m]))  # eq. 6
        if self.gate is None:  # eq. 7
            w = self.w
        else:
            w = torch.softmax(torch.addmm(self.gate[1], torch.cat(h_c, -1), self.gate[0]),
                              -1).unsqueeze(-1).unbind(1)
        h_wca = h_c[0] * w[0]  # w: floats (global weights) or (B,1) tensors (per utterance)
        for h_m, w_m in zip(h_c[1:], w[1:]):
            h_wca = h_wca.add_(h_m * w_m)
        u = torch.addmm(self.out[1], torch.cat([res[m] for m in self.mods] + [h_wca], -1),
                        self.out[0])
        return u, keys, values, key_valid


def causal_allow(mask: torch.Tensor, causal: bool) -> torch.Tensor | None:
    """(T,T) lower-triangular "query t may see token s <= t" for a causal pass, else None."""
    if not causal:
        return None
    t = mask.shape[1]
    return torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()


def _layer_norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


class ModalityProjection(nn.Module):
    """H_m = LayerNorm(Linear(x_m)); a missing utterance gets a learned embedding instead.
    (Input dropout is applied by the caller, once, so that v_t of eq. 11 shares its mask.)"""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d)
        self.norm = nn.LayerNorm(d)
        self.missing = nn.Parameter(torch.randn(d) * 0.02)  # learned "modality missing" token

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B,T,D_in), valid (B,T) bool -> H (B,T,d); invalid rows never read x."""
        all_valid = bool(valid.all())
        if not all_valid:
            x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype,
                                                                 device=x.device))
        h = _layer_norm(F.linear(x, self.proj.weight, self.proj.bias), self.norm)
        if all_valid:
            return h
        return torch.where(valid.unsqueeze(-1), h, self.missing.to(h.dtype))


class CrossAttentionBlock(nn.Module):
    """One modality's side of the CAM: eq. 1/2 attention, eq. 3/4 Add&Norm, eq. 5/6 FFN."""

    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)  # used when *this* modality provides keys
        self.v = nn.Linear(d, d, bias=False)
        self.norm1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), Dropout(dropout), nn.Linear(d_ff, d))
        self.norm2 = nn.LayerNorm(d)
        self.drop = Dropout(dropout)
        self.scale = 1.0 / math.sqrt(d)

    def forward(
        self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
        key_ok: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B,Tq,d), keys/values (B,Tk,d), key_ok (B,Tq,Tk) bool or None (every key visible)
        -> (H^c (B,Tq,d), attn)."""
        zeta, attn = self.attend(F.linear(h, self.q.weight), keys, values, key_ok)
        return self.post(h, zeta), attn

    def attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               key_ok: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 1-2 from the projected queries q (B,Tq,d) -> (zeta (B,Tq,d), attn (B,Tq,Tk))."""
        p, train = self.drop.p, self.training
        scores = torch.baddbmm(q.new_zeros(()), q, keys.transpose(1, 2), beta=0,
                               alpha=self.scale)
        if key_ok is None:
            attn = torch.softmax(scores, dim=-1)
        else:
            scores = scores.masked_fill(~key_ok, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1) * key_ok  # a query with no visible key: zeros
        return torch.bmm(dropout(attn, p, train) if train else attn, values), attn

    def post(self, h: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
        """Eqs. 3-6 (Add&Norm, FFN, Add&Norm) per utterance: h, zeta (..., d) -> H^c (..., d)."""
        p, train = self.drop.p, self.training
        h_ln = _layer_norm(h + zeta, self.norm1)  # eqs. 3-4
        ff1, ff2 = self.ff[0], self.ff[3]
        f = F.gelu(F.linear(h_ln, ff1.weight, ff1.bias))
        f = F.linear(dropout(f, p, train) if train else f, ff2.weight, ff2.bias)
        return _layer_norm(h_ln + (dropout(f, p, train) if train else f), self.norm2)  # 5-6


@FUSIONS.register("cam")
class CrossModalFusion(Fusion):
    """Projections + CAM + weighted fusion (eq. 7) + residual branches -> u_t^CA of width d."""

    config_class = CAMConfig

    def __init__(self, cfg: AVAFNConfig) -> None:
        super().__init__()
        self.modalities = tuple(cfg.modalities)
        d, mods = cfg.d_model, self.modalities
        own = cfg.fusion_config
        if not isinstance(own, CAMConfig):
            raise TypeError(f"fusion 'cam' needs a CAMConfig, got {type(own).__name__}")
        d_ff = own.d_ff
        self.weights = weights = own.weights
        self.proj = nn.ModuleDict({m: ModalityProjection(cfg.input_dims[m], d) for m in mods})
        self.drop = Dropout(cfg.dropout)
        self._others = {m: [n for n in mods if n != m] for m in mods}
        if len(mods) > 1:
            self.cam = nn.ModuleDict({m: CrossAttentionBlock(d, d_ff, cfg.dropout)
                                      for m in mods})
            if weights == "global":  # eq. 7: one learned scalar per modality
                self.fusion_logits = nn.Parameter(torch.zeros(len(mods)))
            else:  # eq. 7 per utterance: logits = W_g (H_1^c ⊕ ... ⊕ H_M^c) + b_g (0: equal)
                self.fusion_gate = nn.Linear(len(mods) * d, len(mods))
                nn.init.zeros_(self.fusion_gate.weight)
                nn.init.zeros_(self.fusion_gate.bias)
            # residual branches H_m^r = Norm(Linear(H_m))
            self.res = nn.ModuleDict(
                {m: nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for m in mods}
            )
            self.out = nn.Linear(d * (len(mods) + 1), d)

    def project(self, feats: Tensors, valid: Tensors) -> Tensors:
        """feats m->(B,T,D_m), valid m->(B,T) bool -> H m->(B,T,d)."""
        return {m: self.proj[m](feats[m], valid[m]) for m in self.modalities}

    def keys_values(self, h: Tensors) -> tuple[Tensors, Tensors]:
        """H m->(B,T,d) -> (K m->(B,T,d), V m->(B,T,d)) (each modality's own K/V maps)."""
        if len(self.modalities) == 1:
            return {}, {}
        return ({m: F.linear(h[m], self.cam[m].k.weight) for m in self.modalities},
                {m: F.linear(h[m], self.cam[m].v.weight) for m in self.modalities})

    def fuse(self, h: Tensors, valid: Tensors, keys: Tensors, values: Tensors,
             key_valid: Tensors, allow: torch.Tensor | None) -> tuple[torch.Tensor, Tensors]:
        """Queries h m->(B,Tq,d) (valid m->(B,Tq)) over tokens keys/values m->(B,Tk,d)
        (key_valid m->(B,Tk)); allow (Tq,Tk) bool or None -> (u (B,Tq,d), attn m->(B,Tq,*))."""
        mods = self.modalities
        if len(mods) == 1:
            return self.drop(h[mods[0]]), {}
        h_c, attn = {}, {}
        for m in mods:  # loop over modalities only (2 or 3), not batch or time
            k, v, ok = self._tokens(m, keys, values, key_valid, allow)
            h_c[m], attn[m] = self.cam[m](h[m], k, v, ok)
        return self.combine(h, h_c, valid), attn

    def encode(self, feats: Tensors, valid: Tensors, layout: Layout, causal: bool) -> torch.Tensor:
        """Packed rows feats m->(n,D_m), valid m->(n,) -> u (n,d): every per-utterance
        operation runs on the n real utterances; only eqs. 1-2 (attention over the dialogue's
        tokens) see the padded (B,T) layout."""
        mods = self.modalities
        h = self.project(feats, valid)
        if len(mods) == 1:
            return self.drop(h[mods[0]])
        keys, values = self.keys_values(h)
        keys = {m: layout.pad(k) for m, k in keys.items()}
        values = {m: layout.pad(v) for m, v in values.items()}
        key_valid = {m: layout.pad(v) for m, v in valid.items()}
        allow = causal_allow(layout.mask, causal)
        h_c = {}
        for m in mods:
            k, v, ok = self._tokens(m, keys, values, key_valid, allow)
            blk = self.cam[m]
            zeta, _ = blk.attend(layout.pad(F.linear(h[m], blk.q.weight)), k, v, ok)
            h_c[m] = blk.post(h[m], layout.pack(zeta))
        return self.combine(h, h_c, valid)

    def frozen(self) -> FrozenFusion | FrozenCAM:
        """A snapshot of the weights for the inference step (one modality: the default)."""
        if len(self.modalities) == 1:
            return FrozenFusion(self)
        return FrozenCAM(self)

    def _tokens(self, m: str, keys: Tensors, values: Tensors, key_valid: Tensors,
                allow: torch.Tensor | None) -> tuple:
        """What modality m's queries attend over: the other modalities' tokens (B,Tk',d) and
        which of them each query may see, (B,Tq|1,Tk') bool or None (every one)."""
        others = self._others[m]
        if len(others) == 1:
            k, v, ok = keys[others[0]], values[others[0]], key_valid[others[0]]
        else:
            k = torch.cat([keys[n] for n in others], dim=1)
            v = torch.cat([values[n] for n in others], dim=1)
            ok = torch.cat([key_valid[n] for n in others], dim=1)
        if allow is not None:
            return k, v, ok[:, None, :] & allow.repeat(1, len(others))[None]
        if bool(ok.all()):
            return k, v, None  # every token visible: no masking needed
        return k, v, ok[:, None, :]  # (B,1,Tk')

    def combine(self, h: Tensors, h_c: Tensors, valid: Tensors) -> torch.Tensor:
        """Eq. 7 and the residual branches, per utterance: H m->(...,d), H^c m->(...,d), valid
        m->(...) -> u^CA (...,d)."""
        mods = self.modalities
        # eq. 7: H_WCA = sum_m w_m H_m^c, w = softmax over the modalities present
        hc = torch.stack([h_c[m] for m in mods], dim=-2)  # (...,M,d)
        pres = torch.stack([valid[m] for m in mods], dim=-1)
        w = self.eq7_weights(hc, pres)  # (...,M); a subclass's own weights are always used
        h_wca = (w.unsqueeze(-1) * hc).sum(-2)  # (...,d); elementwise, not many tiny matmuls
        res = [_layer_norm(F.linear(h[m], self.res[m][0].weight, self.res[m][0].bias),
                           self.res[m][1]) for m in mods]
        u = F.linear(torch.cat(res + [h_wca], dim=-1), self.out.weight, self.out.bias)
        return self.drop(u) if self.training else u

    def eq7_weights(self, hc: torch.Tensor, pres: torch.Tensor) -> torch.Tensor:
        """Eq. 7's weights (B,Tq,M) from the cross-attended representations hc (B,Tq,M,d) and
        the modalities present, pres (B,Tq,M) bool: a softmax over the present ones (all 0 when
        none is)."""
        if self.weights == "global":
            logit = self.fusion_logits.to(hc.dtype)
        else:
            logit = self.fusion_gate(hc.flatten(-2))  # (B,Tq,M)
        if bool(pres.all()):
            return torch.softmax(logit, dim=-1).expand(pres.shape)
        logit = logit.expand(pres.shape).masked_fill(~pres, torch.finfo(hc.dtype).min)
        return torch.softmax(logit, dim=-1) * pres
