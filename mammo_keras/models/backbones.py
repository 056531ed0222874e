"""ImageNet backbones (VGG16, ResNet50, InceptionV3) and block-wise fine-tuning.

A "convolutional block" is a VGG conv block (`block1`..`block5`), a ResNet residual block
(`conv2_block1`..`conv5_block3`, the stem `conv1`/`pool1` being block 0) or an Inception module
(`mixed0`..`mixed10`, the stem being block 0). Blocks are found from layer names (VGG, ResNet)
or from the graph between the fixed `mixedN` layers (InceptionV3, whose inner layers carry
session-dependent automatic names), never from positions in `model.layers`.

    model = backbone("resnet50", (224, 224, 3), weights="imagenet")
    set_fine_tuning(model, "2FT")       # conv5_block2 + conv5_block3 trainable
    trainable_conv_layers(model)        # 6

Reference: Chougrad et al. 2018, §2.2.3 and Table 1 (fine-tuning strategies).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

import keras

from mammo_keras.models import weights as mk_weights

FAMILIES = ("vgg16", "resnet50", "inceptionv3")
STRATEGIES = ("random", "0FT", "1FT", "2FT", "3FT", "AllFT")
MIN_INPUT_SIZE = {"vgg16": 32, "resnet50": 32, "inceptionv3": 75}
SCALING_MODE = {"vgg16": "caffe", "resnet50": "caffe", "inceptionv3": "tf"}

_APPLICATIONS = {
    "vgg16": keras.applications.VGG16,
    "resnet50": keras.applications.ResNet50,
    "inceptionv3": keras.applications.InceptionV3,
}
# A layer whose presence identifies the family of a (possibly extended) model.
_SIGNATURE_LAYER = {"vgg16": "block5_conv3", "resnet50": "conv5_block3_out", "inceptionv3": "mixed10"}
_RESNET50_STAGES = {2: 3, 3: 4, 4: 6, 5: 3}


class WeightsDownloadError(RuntimeError):
    """ImageNet weights could not be fetched (typically: no network)."""


def backbone(family: str, input_shape: tuple[int, int, int] | None = None, *,
             weights: str | os.PathLike | None = None, name: str | None = None,
             input_tensor=None) -> keras.Model:
    """The convolutional part (`include_top=False`) of a keras.applications network.

    Args:
        family: "vgg16", "resnet50" or "inceptionv3".
        input_shape: (height, width, 3); at least 32x32 (75x75 for InceptionV3).
        weights: None (random), "imagenet" (Keras' own download, cached in ~/.keras) or the path
            of a local HDF5 weights file, loaded by layer name (see `mammo_keras.io`).
        name: model name; defaults to `family`.
        input_tensor: optional Keras tensor to build on (e.g. the output of input layers), which
            keeps the backbone's layers flat inside a larger model.

    Returns:
        A functional `keras.Model` with the application's layer names.
    """
    family = _check_family(family)
    weights_is_path = weights is not None and weights != "imagenet"
    if weights_is_path and not isinstance(weights, (str, os.PathLike)):
        raise ValueError('`weights` must be None, "imagenet" or the path of a local .h5 file. '
                         f"Received: weights={weights!r}")
    kwargs = dict(include_top=False, weights=None if weights_is_path else weights,
                  input_shape=input_shape, input_tensor=input_tensor, name=name or family)
    try:
        model = _APPLICATIONS[family](**kwargs)
    except ValueError:
        raise
    except Exception as error:  # keras' get_file raises a bare Exception on a failed download
        if weights != "imagenet":
            raise
        raise WeightsDownloadError(
            f"Could not download the ImageNet weights of {family} ({error}). On a machine without "
            "network access, download the Keras 'notop' weights file elsewhere and pass its path: "
            f"backbone({family!r}, ..., weights='/path/to/{family}_weights_notop.h5'), or copy it to "
            "~/.keras/models/ where Keras looks first.") from error
    if weights_is_path:
        mk_weights.load_weights_by_name(model, weights)
    return model


def family_of(model: keras.Model) -> str:
    """The backbone family of `model`, recognised by its fixed layer names."""
    names = {layer.name for layer in model.layers}
    for family, signature in _SIGNATURE_LAYER.items():
        if signature in names:
            return family
    raise ValueError(f"The model contains no VGG16/ResNet50/InceptionV3 backbone (looked for the "
                     f"layers {sorted(_SIGNATURE_LAYER.values())}). Received: model={model.name!r}")


def conv_blocks(model: keras.Model, family: str | None = None) -> list[list[str]]:
    """Layer names of each convolutional block, in order.

    Returns:
        VGG16: 5 lists (block1..block5). ResNet50: 17 lists (the stem, then the 16 residual blocks
        conv2_block1..conv5_block3). InceptionV3: 12 lists (the stem, then mixed0..mixed10).
        Within a block, names follow `model.layers` order.
    """
    family = _check_family(family) if family is not None else family_of(model)
    order = [layer.name for layer in model.layers]
    if family == "vgg16":
        groups = [_matching(order, rf"^block{i}_") for i in range(1, 6)]
    elif family == "resnet50":
        groups = [_matching(order, r"^(conv1|pool1)_")]
        groups += [_matching(order, rf"^conv{stage}_block{block}_")
                   for stage, count in _RESNET50_STAGES.items() for block in range(1, count + 1)]
    else:
        groups = _inception_modules(model, order)
    for index, group in enumerate(groups):
        if not group:
            raise ValueError(f"Block {index} of {family} has no layers: the model's layer names "
                             f"do not follow keras.applications. Received: model={model.name!r}")
    return groups


def set_fine_tuning(model: keras.Model, strategy: str, family: str | None = None) -> keras.Model:
    """Make the last blocks of the backbone trainable and freeze the rest, in place.

    Layers outside the backbone (the head, input layers) are made trainable. Frozen
    BatchNormalization layers run in inference mode (Keras 3 does so when `trainable=False`).
    Compile the model after calling this.

    Args:
        strategy: "random" or "AllFT" (every layer trainable), "0FT" (backbone frozen, a fixed
            feature extractor), "1FT"/"2FT"/"3FT" (the last 1/2/3 blocks trainable).

    Reference: Chougrad et al. 2018, §2.2.3 and Fig. 6.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={strategy!r}")
    blocks = conv_blocks(model, family)
    model.trainable = True
    if strategy in ("random", "AllFT"):
        trainable_blocks = blocks
    else:
        count = int(strategy[0])
        trainable_blocks = blocks[len(blocks) - count:] if count else []
    backbone_layers = {name for block in blocks for name in block}
    open_layers = {name for block in trainable_blocks for name in block}
    for layer in model.layers:
        layer.trainable = layer.name in open_layers or layer.name not in backbone_layers
    return model


def trainable_conv_layers(model: keras.Model) -> int:
    """Number of Conv2D layers whose weights train (nested models included)."""
    return sum(1 for layer in _effective_trainable_layers(model)
               if isinstance(layer, keras.layers.Conv2D))


def layerwise_lr_multipliers(model: keras.Model, decay: float,
                             family: str | None = None) -> dict[str, float]:
    """Learning-rate multiplier `decay ** depth` for each layer with weights.

    Depth counts blocks down from the top: the head and the last block have depth 0, the block
    before it depth 1, and so on to the stem, so earlier blocks learn exponentially slower.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"`decay` must be in (0, 1]. Received: decay={decay!r}")
    blocks = conv_blocks(model, family)
    depth = {name: len(blocks) - 1 - index for index, block in enumerate(blocks) for name in block}
    return {layer.name: decay ** depth.get(layer.name, 0) for layer in model.layers if layer.weights}


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {FAMILIES}. Received: family={family!r}")
    return family


def _matching(names: Iterable[str], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [name for name in names if regex.match(name)]


def _effective_trainable_layers(model: keras.Model):
    if not model.trainable:
        return
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _effective_trainable_layers(layer)
        elif layer.trainable:
            yield layer


def layer_parents(model: keras.Model) -> dict[str, set[str]]:
    """Layer name -> names of the layers feeding it, within this model's graph."""
    parents: dict[str, set[str]] = {layer.name: set() for layer in model.layers}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.arguments.keras_tensors:
                source = tensor._keras_history.operation
                if source is not None and node.operation.name in parents:
                    parents[node.operation.name].add(source.name)
    return parents


def _ancestors(parents: dict[str, set[str]], name: str) -> set[str]:
    """`name` and every layer upstream of it."""
    seen, stack = {name}, [name]
    while stack:
        for parent in parents[stack.pop()]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _inception_modules(model: keras.Model, order: list[str]) -> list[list[str]]:
    """Stem + mixed0..mixed10: each module is what lies between two consecutive `mixedN`."""
    parents = layer_parents(model)
    ends = [f"mixed{i}" for i in range(11)]
    missing = [end for end in ends if end not in parents]
    if missing:
        raise ValueError(f"An InceptionV3 backbone needs the layers mixed0..mixed10. "
                         f"Received: model={model.name!r} without {missing}")
    branch_ancestors = [_ancestors(parents, branch) for branch in parents["mixed0"]]
    shared = set.intersection(*branch_ancestors)
    stem_end = max(shared, key=lambda name: len(_ancestors(parents, name)))
    stem_ancestors = _ancestors(parents, stem_end)
    weighted = {layer.name for layer in model.layers if layer.weights}
    first = [name for name in stem_ancestors
             if name in weighted and not (_ancestors(parents, name) - {name}) & weighted]
    before_stem = _ancestors(parents, first[0]) - {first[0]}
    stem = stem_ancestors - before_stem
    modules, previous = [stem], stem_ancestors
    for end in ends:
        upstream = _ancestors(parents, end)
        modules.append(upstream - previous)
        previous = upstream
    return [[name for name in order if name in module] for module in modules]
