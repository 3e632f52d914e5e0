"""A run folder, opened and validated in one place: :class:`Run`.

::

    RUN/
      config.json          {"layout": 2, "avafn_version", "train": TrainConfig, "model_name",
                            "model": the full model config, "provenance": Provenance (paths
                            relative to the run folder), "labels", "modalities", "corpus",
                            "store": the feature store's fingerprint, "extractors": the
                            extractor metadata of every modality, "seeds"}
      seed-<k>/
        model/             the weights with the best dev weighted F1, a model folder
                           (avafn.checkpoint: config.json + model.safetensors); present =
                           the seed is finished
        state.safetensors  while training: model, optimizer, RNG states, epoch, best so far
        history.json       per epoch: train loss, dev loss, dev weighted F1 / accuracy, time
      report.json, report.md, *.png

``Run.open(path)`` checks the folder (required keys and their types, labels against every
finished model's number of classes, modalities against the model config) and raises
:class:`RunError` (a :class:`~avafn.errors.UserError`, one line naming the file) otherwise.
Nothing else reads ``config.json``. A folder works from any working directory and after being
copied: its dataset manifest and feature store are found relative to the run folder (or given
explicitly) and checked by hash (manifest sha256, store content fingerprint).

Runs of the earlier layout (``seed-<k>/model.pt`` + ``state.pt``, pickle-based) are refused
with a message pointing at :func:`convert_run` (``avafn run convert RUN``), which rewrites them
loading the old files with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from avafn.checkpoint import (
    CheckpointError,
    from_pretrained,
    load_json,
    load_state,
    read_config,
    save_state,
    save_weights,
)
from avafn.config import ABLATIONS, ConfigError, Provenance, TrainConfig, split_settings
from avafn.data import load_corpus
from avafn.data.download import is_complete, resolve_meld_dir, sha256_file
from avafn.data.registry import CORPORA, MANIFEST
from avafn.errors import UserError
from avafn.io import atomic_write_bytes, atomic_write_json
from avafn.model.registry import MODELS
from avafn.registry import RegistryError
from avafn.store import FeatureStore

if TYPE_CHECKING:

    from avafn.data.corpus import Corpus
    from avafn.model.base import ConversationModel

LAYOUT = 2
CONFIG = "config.json"
MODEL_DIR = "model"
STATE = "state.safetensors"
CONVERT_HINT = "avafn run convert"


class RunError(UserError):
    """A run folder that cannot be used as asked (missing, damaged, old layout, mismatched)."""


def seed_dir(run: str | os.PathLike, seed: int) -> Path:
    return Path(run) / f"seed-{int(seed)}"


_SEED = re.compile(r"seed-(\d+)")


def seed_dirs(run: str | os.PathLike) -> dict[int, Path]:
    """The seed folders of ``run`` by seed: ``seed-<k>`` only (a copy beside them, such as
    ``seed-0.bak``, is none of the run's)."""
    root = Path(run)
    if not root.is_dir():
        return {}
    found = {int(m[1]): p for p in root.iterdir()
             if (m := _SEED.fullmatch(p.name)) is not None and p.is_dir()}
    return dict(sorted(found.items()))


def finished_seeds(run: str | os.PathLike) -> list[int]:
    """Seeds whose model folder is complete (its ``config.json`` is written last)."""
    return [s for s, d in seed_dirs(run).items() if (d / MODEL_DIR / "config.json").is_file()]


def old_layout_files(run: str | os.PathLike) -> list[Path]:
    """The pickle-based files of the earlier layout in ``run`` (none in a current run)."""
    return sorted(d / name for d in seed_dirs(run).values() for name in ("model.pt", "state.pt")
                  if (d / name).is_file())


def refuse_old_layout(run: str | os.PathLike) -> None:
    old = old_layout_files(run)
    if old:
        raise RunError(f"{old[0]}: a run folder of the earlier layout (pickle-based .pt "
                       f"files); convert it first with `{CONVERT_HINT} {run}`")


def relative_to_run(run: str | os.PathLike, path: str | os.PathLike | None) -> str | None:
    """``path`` relative to the run folder (as recorded in ``config.json``), when possible."""
    if path is None:
        return None
    try:
        return os.path.relpath(Path(path).resolve(), Path(run).resolve())
    except ValueError:  # another drive
        return str(Path(path).resolve())


def record_provenance(run: str | os.PathLike, prov: Provenance, trained_here: bool = True
                      ) -> dict:
    """The ``provenance`` entry of ``config.json``: paths relative to the run, the manifest's
    sha256 beside them; with ``trained_here`` (not for a converted run, whose training ran
    elsewhere), the torch version and CPU thread count of this process."""
    d = prov.to_dict()
    if trained_here:
        d["torch_version"] = d.get("torch_version") or torch.__version__
        d["threads"] = d.get("threads") or torch.get_num_threads()
    ds = prov.dataset
    if ds and Path(ds).is_file():  # a manifest; otherwise a corpus name such as "meld"
        d["dataset"] = relative_to_run(run, ds)
        d["dataset_sha256"] = sha256_file(Path(ds))
    if ds == "meld" and not d.get("data_dir"):  # the folder read: $AVAFN_MELD_DIR or the cache
        used = resolve_meld_dir(None, download=False)
        if is_complete(used):
            d["data_dir"] = str(used.resolve())
    for k in ("data_dir", "store"):
        if d.get(k):
            d[k] = relative_to_run(run, d[k])
    return d


def _need(path: Path, d: Mapping[str, Any], key: str, typ: type | tuple[type, ...],
          what: str) -> Any:
    if key not in d:
        raise RunError(f"{path}: missing {key!r} ({what})")
    v = d[key]
    if not isinstance(v, typ):
        raise RunError(f"{path}: {key!r} must be {what}, got {type(v).__name__}")
    return v


def _str_list(path: Path, d: Mapping[str, Any], key: str) -> list[str]:
    v = _need(path, d, key, list, "a list of names")
    if not v or not all(isinstance(x, str) and x for x in v) or len(set(v)) != len(v):
        raise RunError(f"{path}: {key!r} must be a non-empty list of distinct names, got {v}")
    return list(v)


def run_folders_inside(path: str | os.PathLike, depth: int = 3) -> list[Path]:
    """Run folders (with a ``config.json`` naming labels) below ``path``, up to ``depth``."""
    root = Path(path)
    found = []
    for level in range(1, depth + 1):
        for p in sorted(root.glob("/".join(["*"] * level) + f"/{CONFIG}")):
            if (p.parent / "seed-0").exists() or any(p.parent.glob("seed-*")):
                found.append(p.parent)
    return found


@dataclass
class RunConfig:
    """A run's ``config.json``, the one type its writer (training) and its reader
    (:meth:`Run.open`) share. :meth:`from_dict` checks every key it knows (one line naming the
    file and the key otherwise); keys it does not know (written by a later version) are kept
    in ``extra`` and written back as they were."""

    model_name: str
    model: dict[str, Any]  # the model config, as its config class writes it (old keys mapped)
    train: TrainConfig
    provenance: Provenance
    labels: list[str]
    modalities: list[str]
    store: dict[str, Any]  # the feature store's fingerprint
    extractors: dict[str, dict] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    avafn_version: str | None = None
    #: provenance paths as recorded (relative to the run folder) beside the manifest's sha256
    recorded: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds, keys in the order training writes them."""
        d: dict[str, Any] = {"layout": LAYOUT, "avafn_version": self.avafn_version,
                             "model_name": self.model_name, "model": self.model,
                             "train": self.train.to_dict(),
                             "provenance": self.recorded or self.provenance.to_dict(),
                             "labels": list(self.labels), "modalities": list(self.modalities),
                             "corpus": self.corpus, "store": self.store,
                             "extractors": self.extractors}
        if self.seeds:
            d["seeds"] = list(self.seeds)
        return {**d, **{k: v for k, v in self.extra.items() if k not in d}}

    @property
    def dataset_sha256(self) -> str | None:
        sha = self.recorded.get("dataset_sha256")
        return str(sha) if sha else None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | os.PathLike = CONFIG) -> RunConfig:
        """Read and check ``d`` (``path``: the file it came from, named in every refusal)."""
        cfg = Path(path)
        if not isinstance(d, Mapping):
            raise RunError(f"{cfg}: expected a JSON object")
        if d.get("layout") != LAYOUT:
            raise RunError(f"{cfg}: a run folder of the earlier layout; convert it first with "
                           f"`{CONVERT_HINT} {cfg.parent}`")
        labels = _str_list(cfg, d, "labels")
        modalities = _str_list(cfg, d, "modalities")
        model_name = _need(cfg, d, "model_name", str, "a registered model name")
        model = _check_model_config(cfg, model_name,
                                    _need(cfg, d, "model", dict, "the model config (an object)"))
        try:
            train = TrainConfig.from_dict(_need(cfg, d, "train", dict, "an object"))
            recorded = dict(_need(cfg, d, "provenance", dict, "an object"))
            provenance = Provenance.from_dict(
                {k: v for k, v in recorded.items() if k != "dataset_sha256"})
        except ConfigError as e:
            raise RunError(f"{cfg}: {e}") from None
        store = _need(cfg, d, "store", dict, "the feature store's fingerprint (an object)")
        extractors = d.get("extractors") or {}
        if not isinstance(extractors, dict) or \
                not all(isinstance(v, dict) for v in extractors.values()):
            raise RunError(f"{cfg}: 'extractors' must be an object of objects (modality -> "
                           "the extractor's record)")
        if not isinstance(d.get("corpus") or {}, dict):
            raise RunError(f"{cfg}: 'corpus' must be an object")
        if list(train.modalities) != modalities:
            raise RunError(f"{cfg}: modalities {modalities} differ from the training "
                           f"setting's {list(train.modalities)}")
        if "modalities" in model and list(model["modalities"]) != modalities:
            raise RunError(f"{cfg}: modalities {modalities} differ from the model's "
                           f"{list(model['modalities'])}")
        dims = model.get("input_dims", {})
        if not all(m in dims for m in modalities):
            raise RunError(f"{cfg}: the model config has no input width for "
                           f"{[m for m in modalities if m not in dims]}")
        if "n_classes" in model and int(model["n_classes"]) != len(labels):
            raise RunError(f"{cfg}: {len(labels)} labels {labels} for a model with "
                           f"{model['n_classes']} classes")
        seeds = d.get("seeds") or []
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise RunError(f"{cfg}: 'seeds' must be a list of integers")
        version = d.get("avafn_version")
        extra = {k: v for k, v in d.items() if k not in _RUN_KEYS}
        return cls(model_name, model, train, provenance, labels, modalities, dict(store),
                   dict(extractors), dict(d.get("corpus") or {}), list(seeds),
                   None if version is None else str(version), recorded, extra)


_RUN_KEYS = frozenset({"layout", "avafn_version", "model_name", "model", "train", "provenance",
                       "labels", "modalities", "corpus", "store", "extractors", "seeds"})


@dataclass(frozen=True)
class Run:
    """An opened, validated run folder (see the module docstring): its ``config.json`` read as
    a :class:`RunConfig`, whose fields it offers under the names below."""

    path: Path
    config: RunConfig

    @property
    def train(self) -> TrainConfig:
        return self.config.train

    @property
    def provenance(self) -> Provenance:
        return self.config.provenance

    @property
    def model_name(self) -> str:
        return self.config.model_name

    @property
    def model_config(self) -> dict[str, Any]:
        return self.config.model

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    @property
    def modalities(self) -> list[str]:
        return self.config.modalities

    @property
    def extractors(self) -> dict[str, dict]:
        return self.config.extractors

    @property
    def store_fingerprint(self) -> dict[str, Any]:
        return self.config.store

    @property
    def corpus_info(self) -> dict[str, Any]:
        return self.config.corpus

    @property
    def seeds(self) -> list[int]:
        """The seeds asked for (finished or not)."""
        return self.config.seeds

    @property
    def dataset_sha256(self) -> str | None:
        return self.config.dataset_sha256

    @property
    def avafn_version(self) -> str | None:
        return self.config.avafn_version

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, *, finished: bool = True) -> Run:
        """Open and validate ``path``; with ``finished``, at least one seed must be done."""
        run = Path(path)
        cfg = run / CONFIG
        if not cfg.is_file():
            if not run.is_dir():
                raise RunError(f"{run}: no such run folder")
            inside = run_folders_inside(run)
            if inside:
                raise RunError(f"{run}: not a run folder (no {CONFIG}); it contains the run "
                               f"folder(s) {', '.join(str(p) for p in inside[:10])}")
            raise RunError(f"{run}: not a run folder (no {CONFIG}); give a folder written by "
                           "avafn train")
        refuse_old_layout(run)
        rc = RunConfig.from_dict(load_json(cfg, RunError, f"{cfg}: not found"), cfg)
        out = cls(run, rc)
        done = out.finished_seeds()
        if finished and not done:
            raise RunError(f"{run}: no finished seed (no seed-*/{MODEL_DIR}/); train first")
        for s in done:  # every finished model must predict the run's labels
            p = seed_dir(run, s) / MODEL_DIR
            try:
                mc = read_config(p)
            except CheckpointError as e:
                raise RunError(str(e)) from None
            n = mc["config"].get("n_classes")
            if n is not None and (not isinstance(n, int) or n != len(rc.labels)):
                raise RunError(f"{p / 'config.json'}: a model with {n} classes, but the run "
                               f"({cfg}) names {len(rc.labels)} labels {rc.labels}")
        return out

    # ------------------------------------------------------------------ what it holds
    @property
    def widths(self) -> dict[str, int]:
        return {m: int(self.model_config["input_dims"][m]) for m in self.modalities}

    @property
    def ablations(self) -> list[str]:
        return [a for a in ABLATIONS if self.model_config.get(a)]

    @property
    def bidirectional(self) -> bool:
        return bool(self.model_config.get("bidirectional", True))

    def finished_seeds(self) -> list[int]:
        return finished_seeds(self.path)

    def summary(self) -> dict:
        """What a report records about the run's configuration."""
        return {"model_name": self.model_name, "model": self.model_config,
                "train": self.train.to_dict(), "provenance": self.provenance.to_dict(),
                "ablations": self.ablations, "labels": self.labels,
                "modalities": self.modalities, "corpus": self.corpus_info, "seeds": self.seeds}

    def models(self, device: str = "cpu") -> list[ConversationModel]:
        """One model per finished seed, in seed order, in eval mode on ``device``."""
        seeds = self.finished_seeds()
        if not seeds:
            raise RunError(f"{self.path}: no finished seed (no seed-*/{MODEL_DIR}/); train first")
        try:
            return [from_pretrained(seed_dir(self.path, s) / MODEL_DIR, device) for s in seeds]
        except CheckpointError as e:
            raise RunError(str(e)) from None

    # ------------------------------------------------------------------ its inputs
    def _resolve(self, recorded: str | None) -> Path | None:
        if recorded is None:
            return None
        p = Path(recorded)
        return p if p.is_absolute() else (self.path / p)

    def dataset_path(self, dataset: str | os.PathLike | None = None) -> str:
        """The dataset to load: ``dataset`` if given (a manifest is checked against the
        recorded sha256), else the recorded one, found relative to the run folder."""
        cfg = self.path / CONFIG
        if dataset is not None:
            ds = str(dataset)
        elif self.provenance.dataset is None:
            name = self.corpus_info.get("name")
            if name and name != MANIFEST and name in CORPORA:  # a registered corpus reader
                return str(name)
            raise RunError(f"{cfg}: the run does not record which corpus it was trained on; "
                           "pass it (CLI: --dataset)")
        else:
            p = self._resolve(self.provenance.dataset)
            if not p.is_file() and self.dataset_sha256 is None and \
                    Path(self.provenance.dataset).suffix.lower() not in (".csv", ".jsonl"):
                return self.provenance.dataset  # a registered corpus name
            if not p.is_file():
                raise RunError(f"{cfg}: the run's dataset {self.provenance.dataset} (relative "
                               f"to the run folder) is not at {p}; pass it (CLI: --dataset)")
            ds = str(p)
        if self.dataset_sha256 and Path(ds).is_file() and \
                sha256_file(Path(ds)) != self.dataset_sha256:
            raise RunError(f"{ds}: not the manifest the run was trained on (sha256 differs "
                           f"from the one recorded in {cfg})")
        return ds

    def corpus(self, dataset: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> Corpus:
        """The run's corpus, in the run's label order (see :meth:`dataset_path`)."""
        ds = self.dataset_path(dataset)
        md = data_dir if data_dir is not None else self._resolve(self.provenance.data_dir)
        if md is not None and data_dir is None and not Path(md).is_dir():
            md = None  # recorded but not on this machine: $AVAFN_MELD_DIR, then the cache
        corpus = load_corpus(ds, data_dir=None if md is None else str(md), labels=self.labels)
        self.check_labels(corpus.labels)
        return corpus

    def check_labels(self, labels: Sequence[str]) -> None:
        if list(labels) != self.labels:
            raise RunError(f"the corpus labels {list(labels)} differ from the run's "
                           f"{self.labels} ({self.path / CONFIG})")

    def store(self, path: str | os.PathLike | None = None) -> FeatureStore:
        """The feature store the run was trained on: ``path`` if given, else the recorded one
        (relative to the run folder, then its absolute path); checked by content hash."""
        cfg = self.path / CONFIG
        if path is None:
            cands = [self._resolve(self.provenance.store), self.store_fingerprint.get("root")]
            found = [Path(c) for c in cands if c is not None and Path(c).is_dir()]
            if not found:
                raise RunError(f"{cfg}: the run's feature store ({self.provenance.store}, "
                               "relative to the run folder) is not on this machine; pass it "
                               "(CLI: --store)")
            path = found[0]
        store = FeatureStore(path)
        missing = [m for m in self.modalities if m not in store.modalities()]
        if missing:
            raise RunError(f"{path}: no {missing} features, which the run ({cfg}) uses")
        want = {m: v.get("content_sha256")
                for m, v in self.store_fingerprint.get("modalities", {}).items()}
        have = store.fingerprint(self.modalities)["modalities"]
        diff = [m for m in self.modalities if want.get(m) and
                have[m]["content_sha256"] != want[m]]
        if diff:
            raise RunError(f"{path}: its {diff} features differ from those the run was trained "
                           f"on (content hash recorded in {cfg})")
        return store


def _check_model_config(cfg: Path, name: str, model: dict) -> dict:
    """The run's model config, read by its registered model's config class (field types and
    values checked there, so that a mistyped field is named here, not met later; settings of
    an earlier spelling mapped), as that class writes it now."""
    try:
        config_class = MODELS.get(name).config_class
    except RegistryError as e:
        raise RunError(f"{cfg}: {e}") from None
    try:
        return config_class.from_dict(dict(model)).to_dict()
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise RunError(f"{cfg}: invalid {name} model config ({e})") from None


# ------------------------------------------------------------------ the earlier layout
def convert_run(path: str | os.PathLike) -> list[str]:
    """Rewrite a run of the earlier layout (``seed-<k>/model.pt``, ``state.pt``, flat
    ``train`` settings) into the current one; returns what was done, one line per file.

    The old files are read with ``torch.load(weights_only=True)`` only: a file that needs
    pickle to load is refused (:class:`RunError` naming it) and nothing is changed.
    """
    run = Path(path)
    cfg = run / CONFIG
    d = load_json(cfg, RunError, f"{run}: not a run folder (no {CONFIG})")
    old = old_layout_files(run)
    if d.get("layout") == LAYOUT and not old:
        return [f"{run}: already in the current layout"]

    def load(p: Path) -> Any:
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(f"{p}: cannot be loaded without pickle ({first}); refused, "
                           "nothing converted") from None

    loaded = {p: load(p) for p in old}  # everything is read before anything is written
    if d.get("layout") != LAYOUT:
        old_train = d.get("train") or {}
        if not isinstance(old_train, dict):
            raise RunError(f"{cfg}: 'train' must be an object")
        flat = {k: v for k, v in old_train.items() if k not in ("device", "dataset", "meld_dir")}
        try:
            prov = Provenance(dataset=old_train.get("dataset"), data_dir=old_train.get("meld_dir"),
                              store=(d.get("store") or {}).get("root"),
                              device=old_train.get("device", "cpu"))
            train, _spec, _ = split_settings(flat)
        except (ConfigError, AttributeError) as e:
            raise RunError(f"{cfg}: {e}") from None
        # a relative manifest path was relative to where training ran: recorded relative to
        # the run if it is found from here, else kept as it was (then --dataset gives it)
        d = {**d, "layout": LAYOUT, "train": train.to_dict(),
             "provenance": record_provenance(run, prov, trained_here=False)}
    return _replace_old_files(run, d, loaded)


def _replace_old_files(run: Path, d: dict, loaded: Mapping[Path, Any]) -> list[str]:
    """Write the converted files beside the old ones, load each back, put them in place with
    the new ``config.json``, open the converted run, and only then delete the old files; a
    failure on the way leaves the old files and the old ``config.json`` as they were."""
    cfg = run / CONFIG
    staged: list[tuple[Path, Path]] = []  # (converted, its final place)
    try:
        for p, obj in loaded.items():
            sdir = p.parent
            if p.name == "model.pt":
                tmp = sdir / f".{MODEL_DIR}.converting"
                shutil.rmtree(tmp, ignore_errors=True)
                weights = obj.get("model") if isinstance(obj, dict) else None
                if not isinstance(weights, dict):
                    raise RunError(f"{p}: holds no 'model' weights; refused, nothing converted")
                staged.append((tmp, sdir / MODEL_DIR))
                save_weights(tmp, d["model_name"], d["model"], weights)
                from_pretrained(tmp)  # the converted weights load into the run's model
            else:
                tmp = sdir / f".{STATE}.converting"
                staged.append((tmp, sdir / STATE))
                save_state(tmp, obj)
                load_state(tmp)
    except (CheckpointError, TypeError, ValueError, KeyError) as e:
        for tmp, _ in staged:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise RunError(f"{run}: the converted run does not load ({e}); refused, nothing "
                       "converted") from None
    old_cfg = cfg.read_bytes()
    placed: list[Path] = []
    aside = {p: p.with_name(f".{p.name}.converted") for p in loaded}
    try:
        for tmp, final in staged:
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(tmp, final)
            placed.append(final)
        for p, q in aside.items():  # kept, out of the way of the layout check
            os.replace(p, q)
        atomic_write_json(cfg, d)
        Run.open(run, finished=False)
    except BaseException:
        for final in placed:  # back as it was
            shutil.rmtree(final, ignore_errors=True) if final.is_dir() else \
                final.unlink(missing_ok=True)
        for p, q in aside.items():
            if q.exists():
                os.replace(q, p)
        atomic_write_bytes(cfg, old_cfg)
        raise
    done = [f"{p} -> {final}{'/' if final.name == MODEL_DIR else ''}"
            for p, (_, final) in zip(loaded, staged)]
    done.append(f"{cfg}: rewritten (layout {LAYOUT})")
    for q in aside.values():
        q.unlink()
    return done


__all__ = ["Run", "RunConfig", "RunError", "convert_run", "finished_seeds", "run_folders_inside", "seed_dir"]
