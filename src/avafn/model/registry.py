"""Registries of the network's swappable parts.

- ``MODELS``: whole networks, each a :class:`~avafn.model.base.ConversationModel` subclass with
  its ``config_class``, built as ``C(config)``; a model folder names it by its registered name,
  so any registered model is saved and loaded the same way. Register one with
  :func:`register_model` (which also sets the class's ``name``).
- ``FUSIONS``: how the per-modality representations become one utterance vector u_t (the
  paper's weighted fusion, eq. 7, and its variants), each a
  :class:`~avafn.model.fusion.Fusion` subclass with its own ``config_class``.

Plug-ins: entry point groups ``avafn.models`` and ``avafn.fusions``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from avafn.registry import Registry

if TYPE_CHECKING:
    from .base import ConversationModel
    from .fusion import Fusion

MODELS: Registry[type[ConversationModel]] = Registry(
    "model", entry_points="avafn.models", builtin=("avafn.model.avafn",))
FUSIONS: Registry[type[Fusion]] = Registry(
    "fusion", entry_points="avafn.fusions", builtin=("avafn.model.fusion",))

C = TypeVar("C", bound="type[ConversationModel]")


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator: register a :class:`ConversationModel` subclass as ``name`` and set its
    ``name``."""

    def deco(cls: C) -> C:
        cls.name = name
        MODELS.register(name, cls)
        return cls

    return deco
