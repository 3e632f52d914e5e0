"""What every conversation model is: :class:`ConversationModel` and its :class:`ModelOutput`.

A model registered in :data:`avafn.model.registry.MODELS` subclasses :class:`ConversationModel`
(in the manner of transformers' ``PreTrainedModel``)::

    @register_model("my-model")
    class MyModel(ConversationModel):
        config_class = MyConfig          # a dataclass with to_dict() / from_dict(d)

        def __init__(self, cfg: MyConfig) -> None: ...
        def forward(self, feats, present, speaker, mask, return_states=False) -> ModelOutput: ...
        # streaming (causal models only): init_state, step, and optionally frozen_step

    model.save_pretrained("folder")              # config.json + model.safetensors
    MyModel.from_pretrained("folder", device="cpu")

The config class carries the fields every layer reads (:class:`ConversationConfig`: the
modalities and their input widths, the number of classes and of party slots, the direction);
training, prediction and streaming read those, never probe a model for what it has.
Loading reads JSON and safetensors only: nothing on disk executes code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn
from typing_extensions import Self

from avafn.checkpoint import CheckpointError, from_pretrained, save_pretrained


class ConversationConfig(Protocol):
    """The fields of a model config that the layers around the model read."""

    modalities: tuple[str, ...]
    input_dims: dict[str, int]
    n_classes: int
    n_parties: int
    bidirectional: bool

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConversationConfig: ...


@dataclass(eq=False)
class ModelOutput(Mapping[str, torch.Tensor]):
    """A forward pass's result (B dialogues, T utterances, C classes).

    ``logits`` (B,T,C); ``attention`` (B,T,T), the context attention of utterance t over the
    earlier ones (zeros where the model has none); ``states`` (with ``return_states``) the
    per-utterance states by name, (B,T,...); ``loss`` when the caller's labels gave one.
    It also reads as a mapping (``out["logits"]``, ``out["context_attention"]``, and each state
    by its name), so code written for a dict of tensors keeps working.
    """

    logits: torch.Tensor
    attention: torch.Tensor
    states: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None

    def _items(self) -> dict[str, torch.Tensor]:
        d = {"logits": self.logits, "context_attention": self.attention, **self.states}
        if self.loss is not None:
            d["loss"] = self.loss
        return d

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


M = TypeVar("M", bound="ConversationModel")


class ConversationModel(nn.Module):
    """Base class of the registered conversation models (module docstring)."""

    #: the config dataclass; the model is built as ``cls(config_class.from_dict(d))``
    config_class: ClassVar[type[ConversationConfig]]
    #: the registered name (set by :func:`avafn.model.registry.register_model`)
    name: ClassVar[str] = ""
    cfg: ConversationConfig

    def forward(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None,
                speaker: torch.Tensor, mask: torch.Tensor, return_states: bool = False
                ) -> ModelOutput:
        """feats m->(B,T,D_m), present m->(B,T) bool (None: all present), speaker (B,T) long,
        mask (B,T) bool (a prefix per dialogue) -> :class:`ModelOutput`."""
        raise NotImplementedError

    # ---- streaming (causal models) -----------------------------------------------------
    @property
    def causal(self) -> bool:
        """Whether each utterance's output depends on the earlier ones only (then it streams)."""
        return not self.cfg.bidirectional

    def init_state(self, batch_size: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """The streaming state before the first utterance of ``batch_size`` dialogues."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def step(self, state: dict[str, Any], feats_t: dict[str, torch.Tensor],
             present_t: dict[str, torch.Tensor] | None, speaker_t: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        """One utterance per dialogue: feats m->(B,D_m) -> (logits (B,C), the new state,
        ``{"probs": (B,C), "context_attention": (B,t)}``); equals the causal full pass."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def frozen_step(self) -> Any:
        """The callable the streaming session steps with (same signature as :meth:`step`);
        by default :meth:`step` itself. A model may return a snapshot of its weights."""
        return self.step

    # ---- model folders -----------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/config.json`` (registered name + config) and
        ``folder/model.safetensors``; returns the folder (:mod:`avafn.checkpoint`)."""
        return save_pretrained(folder, self)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike,
                        device: str | torch.device = "cpu") -> Self:
        """The model of a folder written by :meth:`save_pretrained`, in eval mode on
        ``device``; called on a subclass, the folder must hold that model."""
        model = from_pretrained(folder, device)
        if not isinstance(model, cls):
            raise CheckpointError(f"{folder}: holds a {type(model).name!r} model, not "
                                  f"{cls.name or cls.__name__!r}")
        return model


__all__ = ["ConversationConfig", "ConversationModel", "ModelOutput"]
