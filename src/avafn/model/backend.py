"""Which implementation of the equations runs: the reference, or the fast paths.

``AVAFNConfig.backend``:

- ``"reference"``: the full pass is :mod:`avafn.model.reference` (one dialogue at a time,
  plain loops; autograd for the gradients) batched by :func:`reference_forward`; streaming
  runs :meth:`AVAFN.step` (autograd-ready, through the modules' equation methods), never a
  weight snapshot.
- ``"auto"`` (default): the fast paths, each tied to the reference by ``tests/test_model.py``:
  the fusion's packed ``encode`` (``"cam"``: :meth:`CrossModalFusion.encode`), training's
  recurrence with its hand-written backward (:mod:`avafn.model.bptt`), the weight snapshots of
  :meth:`AVAFN.frozen_step` (``FrozenCAM``, ``FrozenRecurrence``, ``FrozenStep``).

A fast path computes the equations of the class it was written for. When a subclass changes
an equation by overriding one of the methods that define it, "auto" does not run the fast
paths that would bypass the override (:func:`fast_paths`): the fusion runs through its
``forward`` (project / keys_values / fuse), training's recurrence through autograd over
``DialogueRecurrence.cell``, and ``frozen_step()`` is :meth:`AVAFN.step` itself. An equation
changed in one place (the override) is then computed everywhere, only slower; a subclass
that also wants the speed writes its own fast path in the same class (which is trusted
again) and an equality test against the reference.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from .fusion import Fusion
from .reference import dialogue

BACKENDS = ("auto", "reference")

#: the methods that define the equations of a fusion, of the recurrence and of the model
FUSION_EQUATIONS = ("forward", "stream", "project", "keys_values", "fuse", "combine",
                    "eq7_weights", "_tokens")
RECURRENCE_EQUATIONS = ("cell", "emotion_step", "emotion_steps", "project_inputs",
                        "project_steps", "run_steps", "score", "init_carry")
MODEL_EQUATIONS = ("forward", "step", "_step", "_step_inputs")
#: modules whose classes are part of the fast paths' own code
_LIBRARY = ("avafn.model.fusion", "avafn.model.dialogue", "avafn.model.ops")


class FastPaths(NamedTuple):
    """What the model's forward and frozen_step may use."""

    reference: bool  # the full pass is the reference (backend="reference")
    encode: bool  # the fusion's own packed encode (else Fusion.encode: through its forward)
    bptt: bool  # training's hand-written backward (else autograd through rnn.cell)
    frozen: bool  # frozen_step's weight snapshots (else step() itself)


def _owner(cls: type, name: str) -> type | None:
    """The class of cls's MRO that defines ``name`` (None: nowhere)."""
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def written_for(obj: Any, fast: str, equations: tuple[str, ...], generic: type | None = None,
                parts: bool = True) -> bool:
    """Whether ``obj``'s fast method ``fast`` computes the equations ``obj`` has: it is the
    generic one of ``generic`` (which runs through the equation methods), or no equation method
    is overridden in a subclass of the class that wrote ``fast`` and (``parts``) every
    submodule of ``obj`` is a class of torch, of the fast paths' modules or of the module that
    wrote ``fast``."""
    cls = type(obj)
    owner = _owner(cls, fast)
    if owner is None or owner is generic:
        return True
    if not all(o is None or issubclass(owner, o) for o in (_owner(cls, n) for n in equations)):
        return False
    return not parts or parts_from(obj, (*_LIBRARY, owner.__module__))


def parts_from(module: nn.Module, modules: tuple[str, ...]) -> bool:
    """Whether every submodule of ``module`` is a torch class or one from ``modules``."""
    return all(type(m).__module__.startswith("torch.") or type(m).__module__ in modules
               for m in module.modules())


def fast_paths(model: nn.Module) -> FastPaths:
    """The fast paths an AVAFN ``model`` (or an instance of a subclass) may use. Decided from
    the classes of the model, its fusion and its recurrence (and their parts) and the backend,
    once for each combination of them (kept on the model)."""
    key = (type(model), model.cfg.backend, type(model.fusion),
           id(model.fusion), type(model.rnn), id(model.rnn))
    cached = model.__dict__.get("_fast_paths")
    if cached is None or cached[0] != key:
        cached = model.__dict__["_fast_paths"] = (key, _decide(model, key[1] == "reference"))
    return cached[1]


def _decide(model: nn.Module, reference: bool) -> FastPaths:
    encode = written_for(model.fusion, "encode", FUSION_EQUATIONS, Fusion)
    bptt = written_for(model.rnn, "frozen", RECURRENCE_EQUATIONS)  # bptt: DialogueRecurrence's
    frozen = (bptt and written_for(model.fusion, "frozen", FUSION_EQUATIONS, Fusion)
              and written_for(model, "frozen_step", MODEL_EQUATIONS, parts=False))
    return FastPaths(reference, encode and not reference, bptt and not reference,
                     frozen and not reference)


class LiveStep:
    """``frozen_step()`` where no snapshot may stand in for the model's equations: each call is
    :meth:`AVAFN.step` on the live weights."""

    def __init__(self, model: nn.Module) -> None:
        if model.cfg.bidirectional:
            raise ValueError("streaming needs a forward-only model (bidirectional=False)")
        self.model = model

    def __call__(self, state, feats_t, present_t, speaker_t):
        return self.model.step(state, feats_t, present_t, speaker_t)


def reference_forward(model: nn.Module, feats: dict[str, torch.Tensor],
                      present: dict[str, torch.Tensor], speaker: torch.Tensor,
                      mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """:meth:`AVAFN.forward`'s output with ``return_states=True`` computed by
    :func:`avafn.model.reference.dialogue`, one dialogue at a time (the same keys and shapes,
    zeros at padding)."""
    cfg = model.cfg
    b_sz, t_len = mask.shape
    like = feats[cfg.modalities[0]]
    dev = like.device
    lengths = mask.sum(1).tolist()
    n_p = int(torch.where(mask, speaker, 0).max()) + 1 if mask.any() else 1
    out = {"logits": like.new_zeros(b_sz, t_len, cfg.n_classes),
           "context_attention": like.new_zeros(b_sz, t_len, t_len)}
    rows: dict[str, list] = {}
    for b, n in enumerate(lengths):
        if not n:
            continue
        logits, states = dialogue(model, {m: feats[m][b, :n] for m in cfg.modalities},
                                  {m: present[m][b, :n] for m in cfg.modalities}, speaker[b, :n])
        out["logits"] = out["logits"].index_put((torch.tensor([b], device=dev), torch.arange(n, device=dev)), logits)
        for t, st in enumerate(states):
            if "alpha" in st:
                out["context_attention"] = out["context_attention"].index_put(
                    (torch.tensor([b], device=dev), torch.tensor([t], device=dev),
                     torch.arange(t, device=dev)), st["alpha"])
            st = dict(st, Q=torch.stack([st["Q"].get(p, like.new_zeros(cfg.d_party))
                                         for p in range(n_p)]))
            for k, v in st.items():
                if k != "alpha":
                    rows.setdefault(k, []).append((b, t, v))
    for k, vals in rows.items():
        z = like.new_zeros(b_sz, t_len, *vals[0][2].shape)
        idx = (torch.tensor([b for b, _, _ in vals], device=dev),
               torch.tensor([t for _, t, _ in vals], device=dev))
        out[k] = z.index_put(idx, torch.stack([v for *_, v in vals]))
    return out
