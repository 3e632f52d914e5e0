"""Registries of the network's swappable parts.

- ``MODELS``: whole networks. A registered class ``C`` has ``C.config_class`` (a dataclass with
  ``to_dict()`` / ``from_dict(d)``) and is built as ``C(config)``; a model folder names it by
  its registered name, so any registered model is saved and loaded the same way.
- ``FUSIONS``: how the per-modality representations become one utterance vector u_t (the
  paper's weighted fusion, eq. 7, and its variants).

Plug-ins: entry point groups ``avafn.models`` and ``avafn.fusions``.
"""

from __future__ import annotations

from avafn.registry import Registry

MODELS: Registry = Registry("model", entry_points="avafn.models", builtin=("avafn.model.avafn",))
FUSIONS: Registry = Registry("fusion", entry_points="avafn.fusions",
                             builtin=("avafn.model.fusion",))
