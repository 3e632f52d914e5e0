"""A run's settings in three layers, each setting in exactly one of them.

- :class:`TrainConfig`: how to train (optimiser, batches, epochs, early stopping, which
  modalities, modality dropout). Changing one changes the result.
- :class:`ModelSpec`: which registered model (:data:`avafn.model.registry.MODELS`) and the
  fields of its config class that the user chooses (``dropout``, the ablations ``no_acm`` /
  ``no_ssm`` / ``no_ilm``, widths, ``bidirectional``, ...). The fields the data fixes
  (``modalities``, ``input_dims``, ``n_classes``, ``n_parties``) are filled in at training time.
- :class:`Provenance`: where the inputs came from and where it ran (``dataset``, ``data_dir``,
  ``store``, ``device``). Changing one does not change the result. (``meld_dir``, the earlier
  name of ``data_dir``, is read as it.)

Users (the CLI's ``--config``, the demo's settings) write one flat mapping;
:func:`split_settings` sorts it into the three layers. ``dropout`` and ``ablations`` there are
shorthands for model config fields (giving the same field twice with different values is an
error), ``model_overrides`` is the model config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from avafn.errors import UserError

ABLATIONS = ("no_acm", "no_acm_attention", "no_ssm", "no_ilm")
#: model config fields fixed by the data, never set by the user
DATA_FIELDS = ("modalities", "input_dims", "n_classes", "n_parties")


class ConfigError(UserError):
    """A setting with a wrong name, type or value."""


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
_SCALAR_NAMES = {"int": "an integer", "float": "a number", "bool": "a bool", "str": "a str"}


def check_field_types(obj: Any, what: str) -> None:
    """Raise ConfigError naming the first field of the dataclass ``obj`` whose value does not
    have its declared type (int, float, bool, str, optionally ``| None``; containers are left
    to the class's own checks). A bool is not accepted as a number."""
    for f in dataclasses.fields(obj):
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kinds = [k.strip() for k in t.split("|")]
        value = getattr(obj, f.name)
        if value is None and "None" in kinds:
            continue
        scalar = [k for k in kinds if k in _SCALARS]
        if not scalar or len(scalar) != len([k for k in kinds if k != "None"]):
            continue
        ok = any(isinstance(value, _SCALARS[k]) and (k == "bool" or not isinstance(value, bool))
                 for k in scalar)
        if not ok:
            want = " or ".join(_SCALAR_NAMES[k] for k in scalar)
            if "None" in kinds:
                want += " or null"
            raise ConfigError(f"{what} setting {f.name!r} must be {want}, got {value!r}")


def check_number(value: float | None, name: str, what: str, minimum: float | None = None,
                 above: float | None = None) -> None:
    """Raise ConfigError unless ``value`` is a finite number ``>= minimum`` / ``> above``
    (``None`` passes: the field is optional). NaN and inf never pass: a NaN learning rate
    trains NaN weights that would still be saved and scored."""
    if value is None:
        return
    bad = not math.isfinite(value) or (minimum is not None and value < minimum) or \
        (above is not None and value <= above)
    if bad:
        bound = f" >= {minimum:g}" if minimum is not None else f" > {above:g}" \
            if above is not None else ""
        raise ConfigError(f"{what} setting {name} must be a finite number{bound}, got {value!r}")


def _from_dict(cls: type, d: Mapping[str, Any], what: str, aliases: tuple[str, ...] = ()
               ) -> Any:
    names = {f.name for f in dataclasses.fields(cls)} | set(aliases)
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {sorted(unknown)}; known: {sorted(names)}")
    try:
        return cls(**dict(d))
    except TypeError as e:
        raise ConfigError(f"{what} settings: {e}") from None


@dataclass
class TrainConfig:
    """How to train; defaults are the paper's setting (spec "Training")."""

    modalities: tuple[str, ...] = ("audio", "video")
    lr: float = 1e-4  # Adam
    batch_size: int = 32  # dialogues per batch
    weight_decay: float = 3e-4  # L2 weight (Adam's coupled weight decay = L2 penalty)
    max_epochs: int = 100
    patience: int = 10  # epochs without a better dev weighted F1 before stopping
    modality_dropout: dict[str, float] = field(default_factory=dict)  # {modality: p}, train only
    bucket: bool = False  # length-bucketed batches
    grad_clip: float | None = None  # max gradient norm, None = no clipping
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        check_field_types(self, "training")
        self.modalities = tuple(self.modalities)
        if not self.modalities or not all(isinstance(m, str) and m for m in self.modalities):
            raise ConfigError(f"at least one modality is needed, got {list(self.modalities)}")
        for name in ("max_epochs", "patience", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:  # 0 epochs would finish a seed without weights
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_number(self.lr, "lr", "training", above=0.0)
        check_number(self.weight_decay, "weight_decay", "training", minimum=0.0)
        check_number(self.grad_clip, "grad_clip", "training", above=0.0)
        for m, p in self.modality_dropout.items():
            if m not in self.modalities:
                raise ConfigError(f"modality dropout for {m!r}, which is not trained "
                                  f"(modalities: {list(self.modalities)})")
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"modality dropout for {m!r} must be in [0, 1), got {p}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        return _from_dict(cls, d, "training")

    def replace(self, **kw: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **kw})


@dataclass
class ModelSpec:
    """Which registered model, and the config fields the user sets (the rest: defaults)."""

    name: str = "avafn"
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fixed = sorted(set(self.config) & set(DATA_FIELDS))
        if fixed:
            raise ConfigError(f"model setting(s) {fixed} are fixed by the data and the "
                              "trained modalities; leave them out")
        for a in ABLATIONS:
            if a in self.config and not isinstance(self.config[a], bool):
                raise ConfigError(f"model setting {a} must be true or false, got "
                                  f"{self.config[a]!r}")

    @property
    def ablations(self) -> tuple[str, ...]:
        return tuple(a for a in ABLATIONS if self.config.get(a))

    def to_dict(self) -> dict:
        return {"name": self.name, "config": dict(self.config)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        return _from_dict(cls, d, "model")

    def replace(self, **config: Any) -> ModelSpec:
        return ModelSpec(self.name, {**self.config, **config})


@dataclass
class Provenance:
    """Where a run's inputs came from and where it ran: none of it changes the result on
    the same software and thread count; those two are recorded beside it (the torch version
    and the number of CPU threads decide the order of floating-point sums, so they decide
    whether a rerun is bit-identical)."""

    dataset: str | None = None  # a registered corpus name ("meld") or a manifest path
    data_dir: str | None = None  # the corpus's data folder (MELD's CSVs, RAVDESS's clips ...)
    store: str | None = None
    device: str = "cpu"
    #: what bit-identical results also depend on (None in runs that did not record them)
    torch_version: str | None = None
    threads: int | None = None  # torch's CPU threads (reductions are split by thread)

    #: the earlier name of ``data_dir`` (run folders, settings), read as it
    meld_dir: dataclasses.InitVar[str | None] = None

    def __post_init__(self, meld_dir: str | None) -> None:
        if meld_dir is not None:
            if self.data_dir is not None and self.data_dir != meld_dir:
                raise ConfigError(f"data_dir given twice ({self.data_dir!r}, and "
                                  f"{meld_dir!r} as meld_dir); give it once")
            self.data_dir = meld_dir
        check_field_types(self, "provenance")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        return _from_dict(cls, d, "provenance", aliases=("meld_dir",))


_PROVENANCE = {f.name for f in dataclasses.fields(Provenance)} | {"meld_dir"}
_TRAIN = {f.name for f in dataclasses.fields(TrainConfig)}


def split_settings(flat: Mapping[str, Any]) -> tuple[TrainConfig, ModelSpec, Provenance]:
    """Sort one flat mapping of settings into the three layers (module docstring).

    Keys: :class:`TrainConfig` and :class:`Provenance` fields; ``model`` (a registered model
    name, or a :class:`ModelSpec` dict); ``model_overrides`` (model config fields);
    ``dropout`` (model config ``dropout``); ``ablations`` (model config flags set to true).
    """
    flat = dict(flat)
    model = flat.pop("model", None)
    if isinstance(model, ModelSpec):
        spec = model.to_dict()
    elif isinstance(model, Mapping):
        spec = dict(model)
    else:
        spec = {"name": model or "avafn", "config": {}}
    mcfg = dict(spec.get("config") or {})

    def put(key: str, value: Any, given_as: str) -> None:
        if key in mcfg and mcfg[key] != value:
            raise ConfigError(f"model setting {key} given twice ({given_as}={value!r} and "
                              f"{key}={mcfg[key]!r} in the model config); give it once")
        mcfg[key] = value

    for k, v in dict(flat.pop("model_overrides", None) or {}).items():
        put(k, v, f"model_overrides.{k}")
    if "dropout" in flat:
        put("dropout", float(flat.pop("dropout")), "dropout")
    abl = flat.pop("ablations", None)
    if abl is not None:
        abl = (abl,) if isinstance(abl, str) else tuple(abl)
        bad = sorted(set(abl) - set(ABLATIONS))
        if bad:
            raise ConfigError(f"unknown ablation(s) {bad}; known: {list(ABLATIONS)}")
        for a in ABLATIONS:
            if a in abl:
                put(a, True, "ablations")
    prov = {k: flat.pop(k) for k in list(flat) if k in _PROVENANCE}
    unknown = sorted(set(flat) - _TRAIN)
    if unknown:
        known = sorted(_TRAIN | _PROVENANCE | {"model", "model_overrides", "dropout",
                                                "ablations"})
        raise ConfigError(f"unknown setting(s) {unknown}; known: {known}")
    spec["config"] = mcfg
    return TrainConfig.from_dict(flat), ModelSpec.from_dict(spec), Provenance.from_dict(prov)


__all__ = ["ABLATIONS", "ConfigError", "ModelSpec", "Provenance", "TrainConfig",
           "split_settings"]
