"""AVAFN: CAM fusion (eqs. 1-7) -> dialogue recurrence (eqs. 8-12) -> classifier (eqs. 13-14).

**Fast paths.** The model's definition is :mod:`avafn.model.reference` (one dialogue, plain
loops); what this module computes must equal it. :meth:`AVAFN.forward` (the full pass):
``tests/test_model.py::test_full_pass_equals_reference`` (logits, eq. 9's weights, every
state of ``return_states``) and ``test_gradients_equal_reference``; :meth:`AVAFN.step` and
:class:`FrozenStep`: ``test_frozen_step_equals_step``. ``AVAFNConfig.backend`` chooses
(:mod:`avafn.model.backend`).

Shapes: B dialogues, T utterances (padding after each dialogue's end), P = cfg.n_parties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass, field, fields
from functools import partial
from typing import Any

import torch
from torch import nn

from avafn.config import check_field_types

from .backend import BACKENDS, LiveStep, fast_paths, reference_forward
from .base import ConversationModel, ModelOutput
from .bptt import run as run_recurrence
from .dialogue import DenseParties, DialogueRecurrence, listener_weights
from .fusion import Fusion, FusionConfig
from .layout import Layout
from .ops import Dropout, frozen_t, sum_is_finite
from .registry import FUSIONS, register_model


@dataclass
class AVAFNConfig:
    modalities: tuple[str, ...] = ("audio", "video")
    input_dims: dict[str, int] = field(default_factory=lambda: {"audio": 1024, "video": 1024})
    n_classes: int = 7
    n_parties: int = 9  # MELD: up to 9 parties per dialogue
    d_model: int = 256  # CAM width d, also the width of u_t^CA
    d_context: int = 150  # C_t
    d_party: int = 150  # q_{i,t}, q_{j,t}
    d_emotion: int = 128  # E_t (per direction)
    d_att: int = 100  # ACM hidden width (eq. 9)
    dropout: float = 0.3  # CAM, u_t and classifier input
    input_dropout: float | None = None  # on raw features; None: same as dropout
    bidirectional: bool = True
    # bidirectional only: True shares the recurrence weights (GRU_C/S/L/E, ACM, v_missing)
    # between the two directions; False: one set per direction
    tie_directions: bool = False
    listener_modality: str | None = None  # v_t of eq. 11; None: "video" if used, else first
    fusion: str = "cam"  # a name registered in avafn.model.registry.FUSIONS
    # the fusion's own hyper-parameters: an instance of its config_class (a dict is read by
    # it; "cam": CAMConfig, d_ff and eq. 7's weights "global" | "per_utterance")
    fusion_config: Any = None
    # ablations (Table 3); each removes its module (docs/model.md)
    no_acm: bool = False  # the paper's w/o ACM: no GRU_C, no attention (no C_t, no ac_t)
    no_acm_attention: bool = False  # only eq. 9's attention: ac_t = 0, GRU_C and C_t kept
    no_ssm: bool = False  # no GRU_S: the speaker's state is carried over at its turn
    no_ilm: bool = False  # no GRU_L: listeners keep their state
    # "auto": the fast paths; "reference": the equations of avafn.model.reference, one
    # dialogue at a time (the same function, slowly; avafn.model.backend)
    backend: str = "auto"
    # the earlier spelling of "cam"'s settings, accepted as input and moved into fusion_config
    d_ff: InitVar[int | None] = None
    fusion_weights: InitVar[str | None] = None

    def __post_init__(self, d_ff: int | None, fusion_weights: str | None) -> None:
        check_field_types(self, "model")  # "x" for a width, "no" for a flag: refused
        self.fusion_config = _fusion_config(self.fusion, self.fusion_config,
                                            {"d_ff": d_ff, "weights": fusion_weights})
        for name in ("n_classes", "n_parties", "d_model", "d_context", "d_party",
                     "d_emotion", "d_att"):
            if getattr(self, name) < 1:
                raise ValueError(f"model setting {name!r} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "input_dropout"):
            p = getattr(self, name)
            if p is not None and not 0.0 <= p < 1.0:
                raise ValueError(f"model setting {name!r} must be in [0, 1), got {p}")
        self.modalities = tuple(self.modalities)
        self.input_dims = {str(k): int(v) for k, v in dict(self.input_dims).items()}
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be a non-empty list of distinct names, got "
                             f"{self.modalities!r}")
        for m in self.modalities:
            if self.input_dims.get(m, 0) <= 0:
                raise ValueError(f"input_dims has no positive width for modality {m!r}: "
                                 f"{self.input_dims!r}")
        if self.listener_modality is not None and self.listener_modality not in self.modalities:
            raise ValueError(f"listener_modality {self.listener_modality!r} is not one of "
                             f"{self.modalities!r}")
        if self.no_acm and self.no_ssm and self.no_ilm:
            raise ValueError("no_acm, no_ssm and no_ilm together leave no path from the "
                             "utterances to the emotion state")
        if self.backend not in BACKENDS:
            raise ValueError(f"model setting 'backend' must be one of {list(BACKENDS)}, got "
                             f"{self.backend!r}")

    @property
    def listener(self) -> str:
        """The modality whose raw vector is v_t in eq. 11."""
        if self.listener_modality is not None:
            return self.listener_modality
        return "video" if "video" in self.modalities else self.modalities[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["fusion_config"] = self.fusion_config.to_dict()
        if d["backend"] == "auto":  # the default leaves the saved config as it always was
            del d["backend"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AVAFNConfig:
        known = {f.name for f in fields(cls)} | set(OLD_FUSION_KEYS)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AVAFNConfig keys: {unknown}")
        return cls(**d)


#: settings of the "cam" fusion once given at the top of the model config: old name -> its
#: name in the fusion's config, and the value configs without it stand for
OLD_FUSION_KEYS = {"d_ff": ("d_ff", 512), "fusion_weights": ("weights", "global")}


def _fusion_config(fusion: str, given: Any, old: Mapping[str, Any]) -> FusionConfig:
    """``fusion``'s own config from ``given`` (its config instance, a dict, or None: the
    defaults) and the earlier top-level spelling of its settings (``old``: name in the fusion
    config -> value or None). An old setting the fusion does not have is dropped: configs used
    to hold it for every fusion, and only ``"cam"`` read it."""
    cls = FUSIONS.get(fusion).config_class
    d = dict(given.to_dict() if isinstance(given, FusionConfig) else given or {})
    names = {f.name for f in fields(cls)}
    for top, (key, _default) in OLD_FUSION_KEYS.items():
        value = old.get(key)
        if value is None or key not in names:
            continue
        if key in d and d[key] != value:
            raise ValueError(f"model setting {top!r} given twice ({value!r}, and "
                             f"{d[key]!r} in fusion_config); give it once")
        d[key] = value
    if isinstance(given, cls) and d == given.to_dict():
        return given
    return cls.from_dict(d)


@register_model("avafn")
class AVAFN(ConversationModel):
    config_class = AVAFNConfig

    def __init__(self, cfg: AVAFNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p_in = cfg.dropout if cfg.input_dropout is None else cfg.input_dropout
        self.in_drop = Dropout(p_in)  # on raw features, one mask shared by CAM and eq. 11
        self.fusion = FUSIONS.get(cfg.fusion)(cfg)  # eqs. 1-7 (fusion.py: the interface)
        self.rnn = DialogueRecurrence(
            cfg.d_model, cfg.input_dims[cfg.listener], cfg.d_context, cfg.d_party, cfg.d_emotion,
            cfg.d_att, no_acm=cfg.no_acm, no_ssm=cfg.no_ssm, no_ilm=cfg.no_ilm,
            n_dir=2 if cfg.bidirectional and not cfg.tie_directions else 1,
            no_acm_attention=cfg.no_acm_attention)
        self.drop = Dropout(cfg.dropout)
        n_dir = 2 if cfg.bidirectional else 1
        self.classifier = nn.Linear(n_dir * cfg.d_emotion, cfg.n_classes)  # eq. 13
        self._compiled_cell = None
        self._register_load_state_dict_pre_hook(self._untie_checkpoint)

    def _untie_checkpoint(self, state_dict: dict[str, torch.Tensor], prefix: str,
                          *_args: Any) -> None:
        """Checkpoints of other layouts. (1) A tied-direction checkpoint (one set of recurrence
        weights) loaded into an untied model: the shared set is copied into both directions,
        which computes exactly the tied model's function (tested). (2) Weights of a module
        that this configuration removes (an ablation; checkpoints that kept unused weights of
        ablated modules) are dropped, except GRU_C under ``no_acm``: such a checkpoint was
        trained with the narrower ablation, now ``no_acm_attention``, and is refused."""
        rnn, pre = self.rnn, prefix + "rnn."
        if not rnn.has_context and pre + "gru_c.w_hh" in state_dict:
            raise ValueError("this checkpoint has GRU_C weights but its configuration says "
                             "no_acm (the paper's w/o ACM, which has no GRU_C): it was trained "
                             "with the narrower ablation; load it with \"no_acm_attention\": "
                             "true and \"no_acm\": false in the model config")
        own = {pre + n for n, _ in rnn.named_parameters()}
        removed = tuple(pre + n for n in ("att_w.", "att_v.", "gru_s.", "gru_l.", "v_missing"))
        for key in [k for k in state_dict if k.startswith(removed) and k not in own]:
            del state_dict[key]
        if rnn.n_dir != 2:
            return
        params = [(n, p) for n, p in rnn.named_parameters() if not n.startswith("gru_e")]
        if not any(pre + n in state_dict and state_dict[pre + n].dim() == p.dim() - 1
                   for n, p in params):
            return
        for name, p in rnn.named_parameters():
            key = pre + name
            if name.startswith("gru_e_b."):
                src = pre + "gru_e." + name[len("gru_e_b."):]
                if key not in state_dict and src in state_dict:
                    state_dict[key] = state_dict[src].clone()
            elif key in state_dict and state_dict[key].dim() == p.dim() - 1:
                state_dict[key] = state_dict[key].unsqueeze(0).expand(p.shape).clone()

    # ---- input validation (before any state update) ----------------------------------------
    def _check(self, feats, present, speaker, mask) -> dict[str, torch.Tensor]:
        """Raises ValueError naming dialogue b and utterance t; returns present (filled in)."""
        cfg = self.cfg
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor (B, T)")
        b_sz, t_len = mask.shape
        if not isinstance(speaker, torch.Tensor) or tuple(speaker.shape) != (b_sz, t_len):
            raise ValueError(f"speaker must have shape {(b_sz, t_len)} like mask, got "
                             f"{None if not isinstance(speaker, torch.Tensor) else tuple(speaker.shape)}")
        if speaker.dtype.is_floating_point or speaker.dtype == torch.bool:
            raise ValueError("speaker must be an integer tensor")
        gaps = mask[:, 1:] & ~mask[:, :-1]
        if gaps.any():
            b, t = (int(i) for i in gaps.nonzero()[0])
            raise ValueError(f"mask is not a prefix: dialogue {b}, utterance {t + 1} is real after "
                             f"padding at utterance {t}")
        bad = mask & ((speaker < 0) | (speaker >= cfg.n_parties))
        if bad.any():
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"speaker index {int(speaker[b, t])} out of range [0, {cfg.n_parties})"
                             f" at dialogue {b}, utterance {t}")
        present = dict(present or {})
        for m in cfg.modalities:
            if m not in feats:
                raise ValueError(f"feats has no modality {m!r} (model uses {cfg.modalities})")
            x, d = feats[m], cfg.input_dims[m]
            if x.dim() != 3 or tuple(x.shape[:2]) != (b_sz, t_len):
                raise ValueError(f"feats[{m!r}] must have shape ({b_sz}, {t_len}, {d}), got "
                                 f"{tuple(x.shape)}")
            if x.shape[2] != d:
                raise ValueError(f"feats[{m!r}] has width {x.shape[2]}, expected {d}, for every "
                                 f"dialogue and utterance (e.g. dialogue 0, utterance 0)")
            pm = present.get(m)
            if pm is None:
                pm = torch.ones(b_sz, t_len, dtype=torch.bool, device=mask.device)
            if tuple(pm.shape) != (b_sz, t_len) or pm.dtype != torch.bool:
                raise ValueError(f"present[{m!r}] must be a bool tensor of shape {(b_sz, t_len)}")
            present[m] = pm
            if sum_is_finite(x):  # else the exact test below
                continue
            bad = (~torch.isfinite(x)).any(-1) & pm & mask
            if bad.any():
                b, t = (int(i) for i in bad.nonzero()[0])
                raise ValueError(f"non-finite value (NaN/inf) in feats[{m!r}] at dialogue {b}, "
                                 f"utterance {t}")
        return present

    # ---- full dialogues ------------------------------------------------------------------------
    def forward(
        self,
        feats: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None,
        speaker: torch.Tensor,
        mask: torch.Tensor,
        return_states: bool = False,
    ) -> ModelOutput:
        """feats m->(B,T,D_m), present m->(B,T) bool, speaker (B,T) long, mask (B,T) bool ->
        {"logits": (B,T,C), "context_attention": (B,T,T)} (+ states if return_states).
        ``context_attention[b, t, k]`` is eq. 9's weight of utterance k < t for utterance t;
        it is zero for k >= t and in every row and column of a padded position."""
        cfg = self.cfg
        present = self._check(feats, present, speaker, mask)
        b_sz, t_len = mask.shape
        dtype = feats[cfg.modalities[0]].dtype
        if not bool(mask.any()):  # nothing to do; keep the output contract
            return self._empty_output(b_sz, t_len, dtype, mask.device, return_states)
        paths = fast_paths(self)  # the reference, or which fast paths (avafn.model.backend)
        if paths.reference:
            out = reference_forward(self, feats, present, speaker, mask)
            return _output(out, return_states)
        # only the n real utterances are computed (avafn.model.layout): packed rows for every
        # per-utterance operation, step rows (longest dialogue first) for the recurrence
        blocks = 2 if cfg.bidirectional else 1  # block 1: each dialogue reversed in its length
        lay = Layout(mask, blocks)
        valid = {m: lay.pack(present[m]) for m in cfg.modalities}
        x = {m: self.in_drop(torch.where(valid[m].unsqueeze(-1), lay.pack(feats[m]),
                                         torch.zeros((), dtype=dtype, device=mask.device)))
             for m in cfg.modalities}  # missing rows are never read
        # eqs. 1-7: u_t^CA (n,d), the utterance encoder, shared by both directions (causal
        # when streaming); only the recurrence (eqs. 8-12) has per-direction weights
        encode = self.fusion.encode if paths.encode else partial(Fusion.encode, self.fusion)
        u = encode(x, valid, lay, causal=not cfg.bidirectional)
        spk = torch.where(mask, speaker, torch.zeros_like(speaker)).long()
        # parties beyond the largest index used in the batch never influence anything: drop them
        n_p = int(spk.max()) + 1
        onehot = nn.functional.one_hot(spk, n_p).to(dtype) * mask.unsqueeze(-1).to(dtype)
        if cfg.bidirectional:  # listeners: every party of the dialogue but the speaker
            seen = onehot.amax(dim=1, keepdim=True).expand_as(onehot)
        else:  # streaming: the parties seen so far (causal)
            seen = onehot.cummax(dim=1).values
        lis = seen * (1 - onehot)
        # gate inputs of eqs. 8, 10, 11 (v_t: the raw listener-modality vector), step rows
        xc, xs, xl = self.rnn.project_steps(u, x[cfg.listener], valid[cfg.listener], lay)
        cell = self._compiled_cell if (self._compiled_cell is not None and u.is_cuda) else None
        parties = lay.party_steps(onehot, lis)
        if (paths.bptt and torch.is_grad_enabled() and cell is None and not return_states
                and not torch.is_autocast_enabled(u.device.type)):
            r = run_recurrence(self.rnn, xc, xs, xl, parties, lay)  # training: own backward
            e = torch.cat([lay.from_steps(r["E"], k) for k in range(blocks)], -1)
        else:
            r = self.rnn.run_steps(xc, xs, xl, parties, lay, cell=cell,
                                   keep_parties=return_states)
            e = self.rnn.emotion_steps(r.get("C"), r["q_s"], r["q_l"], lay)  # eq. 12
        # e: (n, blocks*De), both directions' E_t of each utterance
        logits = lay.pad(self.classifier(self.drop(e)))  # eq. 13 (softmax in the loss / predict)
        # context_attention: forward-direction eq. 9 weights alpha_{t,k}, k < t
        if "score" not in r:  # no attention (w/o ACM, its attention, or SSM)
            att = logits.new_zeros(b_sz, t_len, t_len)
        else:
            allow = torch.ones(t_len, t_len, dtype=torch.bool, device=u.device).tril(-1)
            allow = allow[None] & mask[:, None, :] & mask[:, :, None]  # padded rows: zeros
            score = lay.pad(lay.from_steps(r["score"]).squeeze(-1))
            att = score[:, None, :].expand(b_sz, t_len, t_len)
            att = torch.softmax(att.masked_fill(~allow, torch.finfo(att.dtype).min), -1) * allow
        states = {}
        if return_states:  # forward-direction states (E: both directions), zeros at padding
            states["u"] = lay.pad(u)
            for k in ("C", "ac", "q_s", "q_l", "Q"):  # C: GRU_C; ac: the attention (eq. 9)
                if k in r:
                    states[k] = lay.pad(lay.from_steps(r[k]))
            states["E"] = lay.pad(e)
        return ModelOutput(logits, att, states)

    def _empty_output(self, b_sz: int, t_len: int, dtype: torch.dtype, device,
                      return_states: bool) -> ModelOutput:
        """The output of a batch without a real utterance: zeros of the documented shapes."""
        cfg, rnn = self.cfg, self.rnn
        z = {"dtype": dtype, "device": device}
        out = {"logits": torch.zeros(b_sz, t_len, cfg.n_classes, **z),
               "context_attention": torch.zeros(b_sz, t_len, t_len, **z)}
        if return_states:
            widths = {"u": cfg.d_model, "q_s": cfg.d_party, "q_l": cfg.d_party,
                      "E": (2 if cfg.bidirectional else 1) * cfg.d_emotion}
            if rnn.has_context:
                widths["C"] = cfg.d_context
            if rnn.has_att:
                widths["ac"] = cfg.d_context
            out.update({k: torch.zeros(b_sz, t_len, w, **z) for k, w in widths.items()})
            out["Q"] = torch.zeros(b_sz, t_len, 1, cfg.d_party, **z)
        return _output(out, return_states)

    # ---- streaming ---------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """Empty streaming state for batch_size dialogues (requires bidirectional=False)."""
        if self.cfg.bidirectional:
            raise ValueError("streaming needs a forward-only model (bidirectional=False)")
        cfg = self.cfg
        z = {"device": device, "dtype": dtype}
        st: dict[str, Any] = self.rnn.init_carry(batch_size, cfg.n_parties, device, dtype)
        st["E"] = torch.zeros(batch_size, cfg.d_emotion, **z)
        st["seen"] = torch.zeros(batch_size, cfg.n_parties, **z)
        st["scores"] = torch.zeros(batch_size, 0, **z)
        # the fusion's per-utterance keys/values of the utterances seen so far
        h0 = self.fusion.project(
            {m: torch.zeros(batch_size, 0, cfg.input_dims[m], **z) for m in cfg.modalities},
            {m: torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
             for m in cfg.modalities})
        st["keys"], st["values"] = self.fusion.keys_values(h0)
        st["key_valid"] = {m: torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
                           for m in st["keys"]}
        st["present"] = torch.ones(batch_size, 1, dtype=torch.bool, device=device)  # constant
        st["complete"] = True  # every modality present at every utterance so far
        return st

    def step(
        self,
        state: dict[str, Any],
        feats_t: dict[str, torch.Tensor],
        present_t: dict[str, torch.Tensor] | None,
        speaker_t: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        """One utterance per dialogue: feats_t m->(B,D_m), present_t m->(B,), speaker_t (B,) ->
        (logits (B,C), new state, {"context_attention": (B,t) over earlier utterances,
        "probs": (B,C)}). The input state is not modified."""
        f3, present, ok, t_idx = self._step_inputs(state, feats_t, present_t, speaker_t)
        return self._step(state, f3, present, ok, speaker_t, t_idx)

    def _step_inputs(self, state: dict[str, Any], feats_t: dict[str, torch.Tensor],
                     present_t: dict[str, torch.Tensor] | None, speaker_t: torch.Tensor
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool, int]:
        """The step's validation -> (feats m->(B,1,D_m), present m->(B,1), ok: every modality
        present and finite with the right width and every speaker in range, t)."""
        cfg = self.cfg
        if cfg.bidirectional:
            raise ValueError("streaming needs a forward-only model (bidirectional=False)")
        b_sz = state["Q"].shape[0]
        if not isinstance(speaker_t, torch.Tensor) or tuple(speaker_t.shape) != (b_sz,):
            raise ValueError(f"speaker_t must have shape ({b_sz},)")
        t_idx = state["scores"].shape[1]
        # validation: cheap checks first; the full check (which names dialogue and utterance)
        # only when one fails
        f3, p3, ok = {}, {}, not (speaker_t.dtype.is_floating_point
                                  or speaker_t.dtype == torch.bool)
        for m in cfg.modalities:
            if m not in feats_t:
                raise ValueError(f"feats_t has no modality {m!r}")
            x = feats_t[m]
            if x.dim() != 2 or x.shape[0] != b_sz:
                raise ValueError(f"feats_t[{m!r}] must have shape ({b_sz}, {cfg.input_dims[m]}),"
                                 f" got {tuple(x.shape)} (utterance {t_idx})")
            f3[m] = x.unsqueeze(1)
            pm = None if present_t is None else present_t.get(m)
            if pm is not None:
                if tuple(pm.shape) != (b_sz,):
                    raise ValueError(f"present_t[{m!r}] must have shape ({b_sz},)")
                p3[m] = pm.unsqueeze(1)
            ok = ok and x.shape[1] == cfg.input_dims[m] and (pm is None or (
                pm.dtype == torch.bool and bool(pm.all()))) and sum_is_finite(x)
        if ok:
            spk_l = speaker_t.tolist()
            ok = not spk_l or (min(spk_l) >= 0 and max(spk_l) < cfg.n_parties)
        if ok:  # every modality present, finite, the right width; speakers in range
            present = {m: state["present"] for m in cfg.modalities}
        else:
            mask = torch.ones(b_sz, 1, dtype=torch.bool, device=speaker_t.device)
            try:
                present = self._check(f3, p3, speaker_t.unsqueeze(1), mask)
            except ValueError as err:  # the message names dialogue b; fix the utterance
                raise ValueError(str(err).replace("utterance 0", f"utterance {t_idx}")) from None
        return f3, present, ok, t_idx

    def _step(self, state: dict[str, Any], f3: dict[str, torch.Tensor],
              present: dict[str, torch.Tensor], ok: bool, speaker_t: torch.Tensor, t_idx: int
              ) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        cfg = self.cfg
        # eqs. 1-7 with the keys/values of the earlier utterances (causal CAM)
        fu, train = self.fusion, self.training
        x = {}
        for m in cfg.modalities:
            xm = f3[m] if ok else torch.where(present[m].unsqueeze(-1), f3[m], 0.0)
            x[m] = self.in_drop(xm) if train else xm
        u, keys, values, kvalid = fu.stream(x, present, state["keys"], state["values"],
                                            state["key_valid"])
        rnn, lm = self.rnn, cfg.listener
        xc, xs, xl = rnn.project_inputs(u[:, 0], x[lm][:, 0], present[lm][:, 0])
        spk = nn.functional.one_hot(speaker_t.long(), cfg.n_parties).to(u.dtype)
        seen = torch.maximum(state["seen"], spk)
        lis = seen - spk  # seen * (1 - spk) for 0/1 values
        carry = {k: state[k] for k in ("C", "Q", "acm_max", "acm_sum", "acm_acc") if k in state}
        carry, o = rnn.cell(carry, xc, xs, xl, DenseParties(spk, lis, listener_weights(lis)))
        e = rnn.emotion_step(state["E"], o.get("C"), o["q_s"], o["q_l"])
        logits = self.classifier(self.drop(e) if train else e)
        att, scores = _attention(state["scores"], o.get("score"))
        complete = state.get("complete", False) and (ok or all(bool(p.all())
                                                               for p in present.values()))
        new = dict(carry, E=e, seen=seen, scores=scores, keys=keys, values=values,
                   key_valid=kvalid, present=state["present"], complete=complete)
        return logits, new, {"context_attention": att, "probs": torch.softmax(logits, -1)}

    def frozen_step(self) -> FrozenStep | LiveStep:
        """:meth:`step` on a snapshot of the weights taken now (merged and pre-transposed
        copies: fewer, faster matrix products; the streaming session uses it). Build it once the
        weights are final: its fast path does not see later changes to the model (a fusion
        plug-in without its own ``frozen()`` is read live). A subclass that overrides the
        equations, or ``backend="reference"``, gets :meth:`step` itself (avafn.model.backend)."""
        return FrozenStep(self) if fast_paths(self).frozen else LiveStep(self)

    # ---- CUDA fast path ----------------------------------------------------------------------
    def compile_recurrence(self, mode: str = "max-autotune-no-cudagraphs") -> None:
        """Compile the per-utterance cell with torch.compile; used only for CUDA inputs."""
        self._compiled_cell = torch.compile(self.rnn.cell, mode=mode, dynamic=False)


def _output(out: dict[str, torch.Tensor], return_states: bool) -> ModelOutput:
    """A :class:`ModelOutput` from a dict of the logits, the attention and the states."""
    states = {k: v for k, v in out.items() if k not in ("logits", "context_attention")}
    return ModelOutput(out["logits"], out["context_attention"], states if return_states else {})


def _attention(scores: torch.Tensor, score: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9's attention over the earlier utterances from their scores (B,t) and the new
    score (B,1) (None: no attention) -> (context attention (B,t), scores (B,t+1)). Without
    attention, or with nothing to attend to yet, the weights are the zeros of the scores."""
    att = torch.softmax(scores, -1) if score is not None and scores.shape[1] else scores
    if score is None:
        score = scores.new_zeros(scores.shape[0], 1)
    return att, torch.cat([scores, score], 1)


class FrozenStep:
    """:meth:`AVAFN.step` with the fusion's and the recurrence's ``frozen()`` snapshots of the
    weights (:meth:`AVAFN.frozen_step`). Used without gradients, outside training, while every
    modality of every utterance so far was present, in the weights' dtype and on their device;
    anything else (a missing modality, a speaker out of range, training, inputs of another
    dtype or device) goes to :meth:`AVAFN.step`, which handles it and keeps the state
    interchangeable."""

    def __init__(self, model: AVAFN) -> None:
        if model.cfg.bidirectional:
            raise ValueError("streaming needs a forward-only model (bidirectional=False)")
        self.model = model
        self.fusion = model.fusion.frozen()
        self.rnn = model.rnn.frozen(model.cfg.n_parties)
        w = model.classifier.weight
        self.classifier = (frozen_t(w), model.classifier.bias.detach().clone())
        self.dtype, self.device = w.dtype, w.device

    def __call__(self, state: dict[str, Any], feats_t: dict[str, torch.Tensor],
                 present_t: dict[str, torch.Tensor] | None, speaker_t: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        model = self.model
        f3, present, ok, t_idx = model._step_inputs(state, feats_t, present_t, speaker_t)
        if not (ok and state.get("complete", False)) or model.training or \
                torch.is_grad_enabled() or any(x.dtype != self.dtype or x.device != self.device
                                               for x in f3.values()):
            return model._step(state, f3, present, ok, speaker_t, t_idx)
        x = {m: v.squeeze(1) for m, v in f3.items()}
        u, keys, values, key_valid = self.fusion.step(x, state["keys"], state["values"],
                                                      state["key_valid"])
        carry, score = self.rnn.step(state, u, x[model.cfg.listener], speaker_t)
        logits = torch.addmm(self.classifier[1], carry["E"], self.classifier[0])
        att, scores = _attention(state["scores"], score)
        new = dict(state, **carry, scores=scores, keys=keys, values=values,
                   key_valid=key_valid)
        return logits, new, {"context_attention": att, "probs": torch.softmax(logits, -1)}
