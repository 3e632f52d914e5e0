"""Cross-attention module (CAM, eqs. 1-6), weighted fusion (eq. 7) and residual branches.

Every modality m is projected to width d (H_m). With two or more modalities the queries of
modality m attend over the keys/values of the *other* modalities' tokens, where the tokens are
the utterances of the dialogue (padding and missing tokens masked; causal in streaming mode).
For two modalities this is exactly the paper's CAM (audio over video, video over audio).
With one modality the CAM is bypassed and u_t = H_m (spec, unimodal runs).
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
        x = torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
        h = self.norm(self.proj(x))
        return torch.where(valid.unsqueeze(-1), h, self.missing.to(h.dtype))


class CrossAttentionBlock(nn.Module):
    """One modality's side of the CAM: eq. 1/2 attention, eq. 3/4 Add&Norm, eq. 5/6 FFN."""

    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)  # used when *this* modality provides keys
        self.v = nn.Linear(d, d, bias=False)
        self.norm1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(d)

    def forward(
        self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_ok: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B,Tq,d), keys/values (B,Tk,d), key_ok (B,Tq,Tk) bool -> (H^c (B,Tq,d), attn)."""
        scores = torch.matmul(self.q(h), keys.transpose(1, 2)) * self.scale  # eqs. 1-2
        scores = scores.masked_fill(~key_ok, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1) * key_ok  # a query with no visible key gets zeros
        zeta = torch.matmul(self.drop(attn), values)
        h_ln = self.norm1(h + zeta)  # eqs. 3-4
        h_c = self.norm2(h_ln + self.drop(self.ff(h_ln)))  # eqs. 5-6
        return h_c, attn


class CrossModalFusion(nn.Module):
    """Projections + CAM + weighted fusion + residual branches -> u_t^CA of width d."""

    def __init__(
        self, modalities: tuple[str, ...], input_dims: dict[str, int], d: int, d_ff: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.proj = nn.ModuleDict(
            {m: ModalityProjection(input_dims[m], d) for m in self.modalities}
        )
        self.drop = nn.Dropout(dropout)
        if len(self.modalities) > 1:
            self.cam = nn.ModuleDict({m: CrossAttentionBlock(d, d_ff, dropout) for m in self.modalities})
            # eq. 7: one learned scalar per modality; weights = softmax over the present ones
            self.fusion_logits = nn.Parameter(torch.zeros(len(self.modalities)))
            # residual branches H_m^r = Norm(Linear(H_m))
            self.res = nn.ModuleDict(
                {m: nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for m in self.modalities}
            )
            self.out = nn.Linear(d * (len(self.modalities) + 1), d)

    def project(
        self, feats: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """feats m->(B,T,D_m), valid m->(B,T) bool -> H m->(B,T,d)."""
        return {m: self.proj[m](feats[m], valid[m]) for m in self.modalities}

    def keys_values(
        self, h: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """H m->(B,T,d) -> (K m->(B,T,d), V m->(B,T,d)) (each modality's own K/V maps)."""
        if len(self.modalities) == 1:
            return {}, {}
        return ({m: self.cam[m].k(h[m]) for m in self.modalities},
                {m: self.cam[m].v(h[m]) for m in self.modalities})

    def fuse(
        self,
        h: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        keys: dict[str, torch.Tensor],
        values: dict[str, torch.Tensor],
        key_valid: dict[str, torch.Tensor],
        allow: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Queries h m->(B,Tq,d) (valid m->(B,Tq)) over tokens keys/values m->(B,Tk,d)
        (key_valid m->(B,Tk)); allow (Tq,Tk) bool or None -> (u (B,Tq,d), attn m->(B,Tq,*))."""
        if len(self.modalities) == 1:
            return self.drop(h[self.modalities[0]]), {}
        h_c, attn = {}, {}
        for m in self.modalities:  # loop over modalities only (2 or 3), not batch or time
            others = [n for n in self.modalities if n != m]
            k = torch.cat([keys[n] for n in others], dim=1)
            v = torch.cat([values[n] for n in others], dim=1)
            ok = torch.cat([key_valid[n] for n in others], dim=1)[:, None, :]  # (B,1,Tk')
            if allow is not None:
                ok = ok & allow.repeat(1, len(others))[None]
            h_c[m], attn[m] = self.cam[m](h[m], k, v, ok)
        # eq. 7: H_WCA = sum_m w_m H_m^c, w = softmax of learned scalars over present modalities
        pres = torch.stack([valid[m] for m in self.modalities], dim=-1)  # (B,Tq,M)
        logit = self.fusion_logits.to(h_c[self.modalities[0]].dtype).expand(pres.shape)
        w = torch.softmax(logit.masked_fill(~pres, torch.finfo(logit.dtype).min), dim=-1) * pres
        h_wca = sum(w[..., i : i + 1] * h_c[m] for i, m in enumerate(self.modalities))
        res = [self.res[m](h[m]) for m in self.modalities]
        u = self.out(torch.cat(res + [h_wca], dim=-1))
        return self.drop(u), attn

    def forward(
        self,
        feats: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        mask: torch.Tensor,
        causal: bool,
    ) -> torch.Tensor:
        """feats m->(B,T,D_m), present m->(B,T), mask (B,T) -> u^CA (B,T,d)."""
        valid = {m: present[m] & mask for m in self.modalities}
        h = self.project(feats, valid)
        keys, values = self.keys_values(h)
        t = mask.shape[1]
        allow = None
        if causal:
            allow = torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()
        u, _ = self.fuse(h, valid, keys, values, valid, allow)
        return u
