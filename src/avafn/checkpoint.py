"""Self-describing model folders and training state, without pickle.

A model folder (:func:`save_pretrained` / :func:`from_pretrained`)::

    FOLDER/
      config.json         {"model": registered name in avafn.model.registry.MODELS,
                           "config": the model's full config (its config class's to_dict()),
                           "avafn_version": "..."}
      model.safetensors   the weights (safetensors.torch)

Any registered model class ``C`` (``C.config_class`` with ``to_dict`` / ``from_dict``, built
as ``C(config)``, its config kept as ``model.cfg``) is saved and loaded the same way;
``config.json`` is written last, so its presence marks a complete folder.

Training state (:func:`save_state` / :func:`load_state`) is one ``.safetensors`` file: every
tensor of a nested structure (model and optimizer state, RNG states) is stored as a tensor,
everything else (epoch, history, optimizer hyper-parameters, best score) as JSON in the
file's metadata. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from avafn import __version__
from avafn.errors import UserError
from avafn.store import atomic_write_bytes, atomic_write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
_STATE_KEY = "avafn_state"


class CheckpointError(UserError):
    """A model folder or training state that cannot be read (missing, damaged, unknown model)."""


def registered_name(model: torch.nn.Module) -> str:
    """The name ``type(model)`` is registered under in :data:`MODELS`."""
    from avafn.model.registry import MODELS

    for name in MODELS.names():
        if MODELS.get(name) is type(model):
            return name
    raise CheckpointError(f"{type(model).__qualname__} is not a registered model "
                          f"(avafn.model.registry.MODELS knows {', '.join(MODELS.names())})")


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(folder: str | os.PathLike, name: str, config: Mapping[str, Any],
                 weights: Mapping[str, torch.Tensor]) -> Path:
    """Write a model folder from a registered name, a full config and a state dict."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}
    atomic_write_bytes(out / WEIGHTS, st_save(tensors))
    atomic_write_json(out / CONFIG, {"model": name, "config": dict(config),
                                     "avafn_version": __version__})
    return out


def save_pretrained(folder: str | os.PathLike, model: torch.nn.Module) -> Path:
    """Write ``model`` as a self-describing folder (module docstring); returns the folder."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        raise CheckpointError(f"{type(model).__qualname__} keeps no config (model.cfg with "
                              "to_dict()); it cannot be saved as a model folder")
    return save_weights(folder, registered_name(model), cfg.to_dict(), _state_tensors(model))


def load_json(path: Path, error: type[UserError], missing: str) -> Any:
    """``path``'s JSON; a missing file raises ``error(missing)``, a damaged one names it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: unreadable ({e})") from None


def read_config(folder: str | os.PathLike) -> dict:
    """A model folder's ``config.json``, checked for its keys."""
    path = Path(folder) / CONFIG
    d = load_json(path, CheckpointError, f"{path}: not found (not a model folder)")
    if not isinstance(d, dict) or not isinstance(d.get("model"), str) or \
            not isinstance(d.get("config"), dict):
        raise CheckpointError(f"{path}: expected {{\"model\": NAME, \"config\": {{...}}}}")
    return d


def from_pretrained(folder: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> torch.nn.Module:
    """The model of a folder written by :func:`save_pretrained`, in eval mode."""
    from avafn.model.registry import MODELS
    from avafn.registry import RegistryError

    folder = Path(folder)
    d = read_config(folder)
    try:
        cls = MODELS.get(d["model"])
    except RegistryError as e:
        raise CheckpointError(f"{folder / CONFIG}: {e}") from None
    try:
        model = cls(cls.config_class.from_dict(d["config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: invalid {d['model']} config ({e})") from None
    path = folder / WEIGHTS
    try:
        weights = st_load(path.read_bytes())
        model.load_state_dict(weights)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: damaged or not this model's weights ({first})") from None
    return model.to(device).eval()


# ------------------------------------------------------------------ training state
def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, path), _encode(v, tensors, f"{path}.{k}")]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, path) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, path) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state at {path}: cannot store a {type(obj).__name__} "
                    "without pickle")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def state_bytes(state: Mapping[str, Any]) -> bytes:
    """``state`` (nested dicts / lists / tuples of tensors and JSON values) as safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors, "state")
    return st_save(tensors, metadata={_STATE_KEY: json.dumps(tree)})


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write training state atomically (one file: tensors + JSON metadata)."""
    atomic_write_bytes(Path(path), state_bytes(state))


def load_state(path: str | os.PathLike) -> dict:
    """What :func:`save_state` wrote, tensors on the CPU."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        tensors = st_load(raw)
        n = int.from_bytes(raw[:8], "little")  # the safetensors header: length, then JSON
        tree = json.loads(json.loads(raw[8:8 + n])["__metadata__"][_STATE_KEY])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (SafetensorError, KeyError, TypeError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: damaged training state ({type(e).__name__}: {e}); "
                              "delete it to restart this seed from scratch") from None
    return _decode(tree, tensors)


__all__ = ["CheckpointError", "from_pretrained", "load_state", "read_config",
           "registered_name", "save_pretrained", "save_state", "save_weights", "state_bytes"]
