"""Self-describing model folders and training state, without pickle.

A model folder (:func:`save_pretrained` / :func:`from_pretrained`)::

    FOLDER/
      config.json         {"model": registered name in avafn.model.registry.MODELS,
                           "config": the model's full config (its config class's to_dict()),
                           "avafn_version": "..."}
      model.safetensors   the weights (safetensors.torch)

Any registered model class ``C`` (a :class:`~avafn.model.base.ConversationModel`:
``C.config_class`` with ``to_dict`` / ``from_dict``, built as ``C(config)``, its config kept
as ``model.cfg``) is saved and loaded the same way (``model.save_pretrained(folder)``,
``C.from_pretrained(folder)``);
``config.json`` is written last, so its presence marks a complete folder.

Training state (:func:`save_state` / :func:`load_state`) is one ``.safetensors`` file: every
tensor of a nested structure (model and optimizer state, RNG states) is stored as a tensor,
everything else (epoch, history, optimizer hyper-parameters, best score) as JSON in the
file's metadata. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from avafn._version import __version__
from avafn.errors import UserError
from avafn.io import atomic_write_bytes, atomic_write_json
from avafn.registry import RegistryError

if TYPE_CHECKING:
    from avafn.model.base import ConversationModel

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


def save_pretrained(folder: str | os.PathLike, model: ConversationModel) -> Path:
    """Write ``model`` as a self-describing folder (module docstring); returns the folder."""
    name = registered_name(model)  # a registered ConversationModel: it keeps its config
    return save_weights(folder, name, model.cfg.to_dict(), _state_tensors(model))


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


def check_tensors(found: Any, expected: Mapping[str, torch.Tensor], where: str,
                  error: Callable[[str], Exception], *, exact: bool = True) -> None:
    """Every tensor of ``found`` (read from disk) checked against the one of ``expected``
    (what the model / optimizer holds) before any kernel touches it: the same names and
    shapes, the same dtype, and finite values for floating-point tensors. Without ``exact``,
    only the dtype and values of the names both have are checked (names and shapes are then
    left to ``load_state_dict``, which checks them after the model's own hooks have read an
    older layout). ``error(why)`` is raised naming the first tensor that differs; ``where``
    says what the tensors are (``"model"``)."""
    if not isinstance(found, Mapping):
        raise error(f"{where}: expected tensors by name, got a {type(found).__name__}")
    if exact:
        missing = [k for k in expected if k not in found]
        extra = [k for k in found if k not in expected]
        if missing or extra:
            raise error(f"{where}: {len(expected)} tensors expected, {len(found)} found"
                        + (f"; missing {missing[:3]}" if missing else "")
                        + (f"; unexpected {extra[:3]}" if extra else ""))
    for k, t in found.items():
        want = expected.get(k)
        if want is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise error(f"{where}: {k} is a {type(t).__name__}, expected a tensor")
        if t.dtype != want.dtype or (exact and t.shape != want.shape):
            raise error(f"{where}: {k} is {str(t.dtype).removeprefix('torch.')} "
                        f"{tuple(t.shape)}, expected {str(want.dtype).removeprefix('torch.')} "
                        f"{tuple(want.shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise error(f"{where}: {k} holds non-finite values (NaN/inf)")


def from_pretrained(folder: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> ConversationModel:
    """The model of a folder written by :func:`save_pretrained`, in eval mode. The weights
    are checked before they are loaded: the dtype and finiteness of every tensor here, the
    names and shapes by ``load_state_dict`` (after the model's own hooks, which read older
    layouts)."""
    from avafn.model.registry import MODELS
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

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged or not this model's weights ({why})")

    try:
        weights = st_load(path.read_bytes())
        check_tensors(weights, model.state_dict(), "weights", damaged, exact=False)
        model.load_state_dict(weights)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise damaged(first) from None
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




# ------------------------------------------------------------------ resuming training
def _rng_size() -> int:
    return int(torch.get_rng_state().numel())


def resume_state(path: str | os.PathLike, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, fields: Mapping[str, Callable[[Any], bool]]
                 ) -> dict:
    """Training state written by :func:`save_state`, checked in full, then loaded into
    ``model`` and ``optimizer``; returns the whole state.

    A file can hold any tensor under any name, and a fused optimizer step runs over its
    buffers without checking them (a buffer of the wrong shape corrupts memory). So before
    anything is loaded: the model tensors against ``model``'s own (names, shapes, dtypes,
    finite), the optimizer's groups and per-parameter buffers against ``optimizer``'s
    parameters, the RNG states, and every other field with its check in ``fields``
    (name -> predicate). Anything else raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    st = load_state(path)

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged training state ({why}); delete it to restart "
                               "this seed from scratch")

    if not isinstance(st, dict):
        raise bad(f"a {type(st).__name__}, expected an object")
    check_tensors(st.get("model"), model.state_dict(), "model", bad)
    _check_optimizer(st.get("optimizer"), optimizer, bad)
    for key in ("torch_rng", "data_rng"):
        t = st.get(key)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or \
                tuple(t.shape) != (_rng_size(),):
            raise bad(f"{key} is not a random generator state")
    cuda = st.get("cuda_rng")
    if cuda is not None and (not isinstance(cuda, torch.Tensor) or cuda.dtype != torch.uint8
                             or cuda.dim() != 1):
        raise bad("cuda_rng is not a random generator state")
    for key, ok in fields.items():
        try:
            fine = key in st and ok(st[key])
        except CheckpointError as e:
            raise bad(str(e)) from None
        if not fine:
            raise bad(f"{key} is {'missing' if key not in st else repr(st[key])[:80]}")
    try:
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise bad(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                  ) from None
    return st


def is_count(v: Any) -> bool:
    """An integer >= 0 (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def is_number(v: Any) -> bool:
    """An int or float that is not NaN (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def is_history(v: Any) -> bool:
    """Per-epoch records: a list of objects of numbers."""
    return isinstance(v, list) and all(
        isinstance(r, dict) and all(is_number(x) for x in r.values()) for r in v)


def training_fields(model: torch.nn.Module) -> dict[str, Callable[[Any], bool]]:
    """The fields of :func:`avafn.training.loop.train`'s state beside the tensors (for
    :func:`resume_state`)."""
    own = model.state_dict()

    def best(v: Any) -> bool:
        if not isinstance(v, dict) or not is_number(v.get("dev_f1")) or \
                not isinstance(v.get("epoch"), int):
            return False
        if v.get("state") is not None:
            check_tensors(v["state"], own, "best weights", CheckpointError)
        return True

    return {"epoch": is_count, "bad_epochs": is_count, "history": is_history, "best": best}


def finetune_fields() -> dict[str, Callable[[Any], bool]]:
    """The fields of a fine-tuning state beside the tensors (for :func:`resume_state`)."""
    def selection(v: Any) -> bool:
        return isinstance(v, dict) and set(v) == {"patience", "best_score", "best_epoch",
                                                  "bad_epochs"} and \
            is_number(v["best_score"]) and isinstance(v["best_epoch"], int) and \
            is_count(v["patience"]) and is_count(v["bad_epochs"])

    return {"epoch": is_count, "history": is_history, "selection": selection,
            "settings": lambda v: isinstance(v, dict)}


def _check_optimizer(state: Any, optimizer: torch.optim.Optimizer,
                     bad: Callable[[str], Exception]) -> None:
    """``state`` (an optimizer's ``state_dict()`` read from disk) fits ``optimizer``: as many
    groups with as many parameters, numeric hyper-parameters finite, and each parameter's
    buffers of its shape (``step``: one number), floating point and finite."""
    if not isinstance(state, Mapping) or not isinstance(state.get("state"), Mapping) or \
            not isinstance(state.get("param_groups"), list):
        raise bad("optimizer: expected {state, param_groups}")
    groups = optimizer.param_groups
    if len(state["param_groups"]) != len(groups):
        raise bad(f"optimizer: {len(state['param_groups'])} parameter group(s), expected "
                  f"{len(groups)}")
    params: dict[int, torch.Tensor] = {}
    for i, (g, mine) in enumerate(zip(state["param_groups"], groups)):
        ids = g.get("params") if isinstance(g, Mapping) else None
        if not isinstance(ids, list) or len(ids) != len(mine["params"]) or \
                not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
            raise bad(f"optimizer: group {i} does not list its {len(mine['params'])} "
                      "parameters")
        params.update(zip(ids, mine["params"]))
        for k, v in g.items():
            if k == "params":
                continue
            numbers = v if isinstance(v, (list, tuple)) else [v]
            mine_v = mine.get(k)
            if isinstance(mine_v, (int, float)) and not isinstance(mine_v, bool) and (
                    not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                            and math.isfinite(x) for x in numbers)):
                raise bad(f"optimizer: group {i} {k} is {v!r}, expected a finite number")
    for pid, buffers in state["state"].items():
        p = params.get(pid)
        if p is None or not isinstance(buffers, Mapping):
            raise bad(f"optimizer: state for parameter {pid!r}, which the model does not have")
        for k, t in buffers.items():
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise bad(f"optimizer: parameter {pid} {k} is not a floating-point tensor")
            want = () if k == "step" else tuple(p.shape)
            if tuple(t.shape) != want:
                raise bad(f"optimizer: parameter {pid} {k} has shape {tuple(t.shape)}, "
                          f"expected {want}")
            if not bool(torch.isfinite(t).all()):
                raise bad(f"optimizer: parameter {pid} {k} holds non-finite values (NaN/inf)")


__all__ = ["CheckpointError", "check_tensors", "finetune_fields", "from_pretrained",
           "load_state", "read_config", "registered_name", "resume_state", "save_pretrained",
           "save_state", "save_weights", "state_bytes", "training_fields"]
