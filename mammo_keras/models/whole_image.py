"""Shen et al. 2017 whole-image classifiers: a patch classifier cut at its last conv + top layers.

    patch = shen_patch_resnet50(weights="runs/patch_s10.weights.h5")
    model = whole_image_from_patch(patch, top="vgg", blocks=[(256, 1), (128, 1)])   # Resnet-VGG
    model = shen_whole_resnet50(preset="table2_row3")                               # same, by name
    set_patch_trainable(model, False)   # stage 1 of Shen's two-stage training: top layers only

The patch classifier's convolutional layers are copied (same names, same weights, not shared)
onto a whole-image input (default 1152x896x3). On top go, in this order:

- optionally the heatmap (`heatmap=True`): the patch classifier scanned over the image. An
  average pool over one patch's feature window (7x7 for 224-pixel patches at stride 32), then the
  patch classifier's softmax layer as a 1x1 convolution with the same weights; activation ReLU
  (paper, Eq. 2) or softmax (Eq. 1, the patch-class probabilities);
- `top="resnet"`: Resnet blocks `[a-b-c] x n`, given as `((a, b, c), n)`: n bottleneck units
  1x1 a -> 3x3 b -> 1x1 c, BN after every conv, ReLU, shortcut per unit; the first unit strides by
  `block_strides` and projects its shortcut (1x1 conv + BN);
- `top="vgg"`: VGG blocks `N x K`, given as `(N, K)`: K 3x3 convs of depth N, each with BN and
  ReLU, then 2x2 max pooling;
- after either: global average pooling (`top_avg_pool`) and a softmax Dense (`predictions`);
- `top="fc"` (needs the heatmap): max pooling of the heatmap, flatten, two FC layers (BN, ReLU)
  and a shortcut Dense from the flattened heatmap added to the output logits.

Layer names: the patch classifier's own names (`conv5_block3_out`, `block5_pool`, ...), then
`heatmap_window`, `heatmap_conv`, `heatmap`; every new top layer (the paper's g) starts with
`top` (`top1_unit1_1_conv`, `top2_conv1`, `top_fc1`, ...) and the output is `predictions`.
`set_patch_trainable` selects the patch classifier's layers by exactly that rule.

Reference: Shen et al. 2017, Sec. 2.1-2.2 (design), Sec. 3.1.4 and Tables 2 and 3 (configurations).
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from mammo_keras.models import weights as mk_weights
from mammo_keras.models import shen
from mammo_keras.models.registry import register
from mammo_keras.registry import Registry

WHOLE_IMAGE_SHAPE = (1152, 896, 3)
"""Down-sized mammogram shape. Reference: Shen et al. 2017, Sec. 3.1.1."""

TOPS = ("resnet", "vgg", "fc")
HEATMAP_ACTIVATIONS = ("relu", "softmax")
TOP_PREFIX = "top"
OUTPUT_LAYER = "predictions"

DEFAULT_BLOCKS = {"resnet": (((512, 512, 1024), 2), ((512, 512, 1024), 2)),
                  "vgg": ((256, 1), (128, 1))}
"""The best top of each kind in the paper (Resnet-Resnet and VGG-VGG). Reference: Sec. 3.1.4."""

_R = "resnet50"
_V = "vgg16"

PRESETS: Registry[dict] = Registry("whole-image preset", listing="models.whole_image.PRESETS.names()")
for _name, _preset in {
    # Table 2: ResNet50 patch classifier. Rows in the table's order; AUC / A-AUC in comments.
    "table2_row1": dict(patch=_R, top="resnet", blocks=[((512, 512, 2048), 1)] * 2),  # S1: 0.63 / NA
    "table2_row2": dict(patch=_R, top="resnet", blocks=[((512, 512, 2048), 1)] * 2),  # 0.85 / 0.87
    "table2_row3": dict(patch=_R, top="resnet", blocks=[((512, 512, 1024), 2)] * 2),  # 0.85 / 0.87
    "table2_row4": dict(patch=_R, top="resnet",
                        blocks=[((256, 256, 256), 1), ((128, 128, 128), 1)]),      # 0.84 / 0.85
    "table2_row5": dict(patch=_R, top="resnet",
                        blocks=[((256, 256, 256), 3), ((128, 128, 128), 3)]),      # 0.83 / 0.84
    "table2_row6": dict(patch=_R, top="resnet",
                        blocks=[((256, 256, 512), 3), ((128, 128, 256), 3)]),      # 0.84 / 0.87
    "table2_row7": dict(patch=_R, top="vgg", blocks=[(256, 1), (128, 1)]),         # 0.87 / 0.88
    # Table 2, "Insert heatmap between patch classifier and top layers".
    "table2_row8": dict(patch=_R, top="resnet", heatmap=True,
                        blocks=[((512, 512, 1024), 2)] * 2),                        # 0.80 / NA
    "table2_row9": dict(patch=_R, top="resnet", heatmap=True,
                        blocks=[((64, 64, 256), 2), ((128, 128, 512), 2)]),        # 0.81 / NA
    # Table 2, "Add heatmap and FC layers on top (on S10)": pool size, FC1, FC2.
    "table2_row10": dict(patch=_R, top="fc", heatmap=True, heatmap_pool=5, fc_units=(64, 32)),
    "table2_row11": dict(patch=_R, top="fc", heatmap=True, heatmap_pool=2, fc_units=(512, 256)),
    "table2_row12": dict(patch=_R, top="fc", heatmap=True, heatmap_pool=1, fc_units=(2048, 1024)),
    # Table 3: VGG16 patch classifier.
    "table3_row1": dict(patch=_V, top="vgg", blocks=[(512, 3), (512, 3)]),         # 0.81 / 0.82
    "table3_row2": dict(patch=_V, top="vgg", blocks=[(512, 1), (512, 1)]),         # 0.83 / 0.86
    "table3_row3": dict(patch=_V, top="vgg", blocks=[(256, 3), (128, 3)]),         # 0.83 / 0.85
    "table3_row4": dict(patch=_V, top="vgg", blocks=[(256, 1), (128, 1)]),         # 0.85 / 0.86
    "table3_row5": dict(patch=_V, top="vgg", blocks=[(128, 1), (64, 1)]),          # 0.84 / 0.85
    "table3_row6": dict(patch=_V, top="resnet", blocks=[((512, 512, 1024), 2)] * 2),  # 0.85 / 0.88
    "table3_row7": dict(patch=_V, top="fc", heatmap=True, heatmap_pool=5, fc_units=(64, 32)),
    "table3_row8": dict(patch=_V, top="fc", heatmap=True, heatmap_pool=2, fc_units=(512, 256)),
    "table3_row9": dict(patch=_V, top="fc", heatmap=True, heatmap_pool=1, fc_units=(2048, 1024)),
}.items():
    PRESETS.register(_name, _preset)
del _name, _preset
"""Every configuration row of Shen's Tables 2 and 3 as builder arguments (`patch` = the patch
classifier's architecture; the rest go to `whole_image_from_patch`). Rows are numbered in the
table's order, skipping the section headings; table2_row1 differs from row2 only by the patch set
(S1 vs S10), which is training data, not architecture."""

BEST_MODELS = {"resnet_resnet": "table2_row3", "resnet_vgg": "table2_row7",
               "vgg_vgg": "table3_row4", "vgg_resnet": "table3_row6"}
"""The four models averaged in Shen's ensemble (AUC 0.91). Reference: Sec. 3.1.4, Fig. 3."""


def is_top_layer(layer_name: str) -> bool:
    """True for the layers added on top of the patch classifier (the paper's g)."""
    return layer_name == OUTPUT_LAYER or layer_name.startswith(TOP_PREFIX)


def patch_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers that came from the patch classifier (heatmap layers included)."""
    return [layer.name for layer in model.layers
            if not is_top_layer(layer.name) and not isinstance(layer, keras.layers.InputLayer)]


def set_patch_trainable(model: keras.Model, trainable: bool) -> list[str]:
    """Freeze (or unfreeze) the patch-classifier layers by name; returns the names changed.

    Frozen BatchNormalization layers run in inference mode (Keras 3 semantics).
    Reference: Shen et al. 2017, Sec. 3.1.2 (stage 1 trains only the newly added top layers).
    """
    names = patch_layer_names(model)
    for layer_name in names:
        model.get_layer(layer_name).trainable = trainable
    return names


def _check_choice(arg: str, value, options: Sequence) -> None:
    if value not in options:
        raise ValueError(f"`{arg}` must be one of {list(options)}. Received: {arg}={value!r}")


def _pair(value, arg: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"`{arg}` must be a positive int or a pair of them. Received: {arg}={value!r}")
    return pair


def _check_blocks(top: str, blocks) -> tuple:
    """Blocks as a tuple of `((a, b, c), n)` (resnet) or `(depth, n)` (vgg), validated."""
    if top == "fc":
        if blocks is not None:
            raise ValueError("`blocks` is for top='resnet' or 'vgg'; top='fc' takes `fc_units` and "
                             f"`heatmap_pool`. Received: blocks={blocks!r}")
        return ()
    if blocks is None:
        return DEFAULT_BLOCKS[top]
    form = "((a, b, c), n)" if top == "resnet" else "(depth, n)"
    checked = []
    for block in blocks:
        try:
            depths, repeats = block
            depths = tuple(depths) if top == "resnet" else (depths,)
            valid = (len(depths) == (3 if top == "resnet" else 1) and isinstance(repeats, int)
                     and repeats >= 1 and all(isinstance(d, int) and d >= 1 for d in depths))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"Each top='{top}' block must be {form} with positive ints. "
                             f"Received: blocks={blocks!r}")
        checked.append((depths if top == "resnet" else depths[0], repeats))
    if not checked:
        raise ValueError(f"`blocks` must list at least one block. Received: blocks={blocks!r}")
    return tuple(checked)


def _cut_layer_name(patch_model: keras.Model, cut_layer: str | None) -> str:
    names = {layer.name for layer in patch_model.layers}
    if cut_layer is None:
        found = [n for n in shen.CUT_LAYERS.values() if n in names]
        if len(found) != 1:
            raise ValueError("Cannot tell where to cut the patch classifier: pass `cut_layer`, the "
                             f"name of its last conv output (known: {sorted(shen.CUT_LAYERS.values())})."
                             f" Received: model={patch_model.name!r} with {len(found)} known names")
        return found[0]
    if cut_layer not in names:
        raise ValueError(f"`cut_layer` must name a layer of the patch classifier {patch_model.name!r}. "
                         f"Received: cut_layer={cut_layer!r}")
    return cut_layer


def _scan_features(patch_model: keras.Model, cut: str, image: keras.KerasTensor) -> keras.KerasTensor:
    """The patch classifier's layers up to `cut`, copied (with weights) onto the whole-image input."""
    features = keras.Model(patch_model.inputs[0], patch_model.get_layer(cut).output)
    scanned = keras.models.clone_model(features, input_tensors=image)
    for layer in features.layers:
        if layer.weights:
            scanned.get_layer(layer.name).set_weights(layer.get_weights())
    return scanned.outputs[0]


def _heatmap(x, patch_model: keras.Model, cut: str, classifier_layer: str, activation: str,
             window) -> keras.KerasTensor:
    """The patch classifier applied at every position: window average + its Dense as a 1x1 conv."""
    classifier = patch_model.get_layer(classifier_layer)
    if not isinstance(classifier, keras.layers.Dense):
        raise ValueError(f"`classifier_layer` must name the patch classifier's Dense output layer. "
                         f"Received: classifier_layer={classifier_layer!r} "
                         f"({type(classifier).__name__})")
    if window is None:
        window = tuple(patch_model.get_layer(cut).output.shape[1:3])
        if None in window:
            raise ValueError("The patch classifier has a variable input size, so the heatmap window "
                             f"cannot be derived: pass `heatmap_window`. Received: window={window}")
    window = _pair(window, "heatmap_window")
    if any(f is not None and f < w for f, w in zip(x.shape[1:3], window)):
        raise ValueError(f"The whole image's feature map {tuple(x.shape[1:3])} is smaller than one "
                         f"patch window {window}: use a larger `input_shape`. Received: {window=}")
    x = keras.layers.AveragePooling2D(window, strides=1, padding="valid", name="heatmap_window")(x)
    conv = keras.layers.Conv2D(classifier.units, 1, use_bias=classifier.use_bias, name="heatmap_conv")
    x = conv(x)
    kernel, *bias = classifier.get_weights()
    conv.set_weights([kernel.reshape((1, 1) + kernel.shape), *bias])
    if activation == "relu":
        return keras.layers.ReLU(name="heatmap")(x)
    return keras.layers.Softmax(axis=-1, name="heatmap")(x)


def _bottleneck_unit(x, depths: tuple[int, int, int], strides: int, project: bool, prefix: str,
                     conv_kw: dict) -> keras.KerasTensor:
    """One [a-b-c] bottleneck unit, Keras ResNet50 v1 layout (conv-BN-ReLU, add, ReLU)."""
    a, b, c = depths
    shortcut = x
    if project:
        shortcut = keras.layers.Conv2D(c, 1, strides=strides, name=f"{prefix}_0_conv", **conv_kw)(x)
        shortcut = keras.layers.BatchNormalization(name=f"{prefix}_0_bn")(shortcut)
    for index, (filters, size, stride) in enumerate(((a, 1, strides), (b, 3, 1), (c, 1, 1)), 1):
        x = keras.layers.Conv2D(filters, size, strides=stride, padding="same",
                                name=f"{prefix}_{index}_conv", **conv_kw)(x)
        x = keras.layers.BatchNormalization(name=f"{prefix}_{index}_bn")(x)
        if index < 3:
            x = keras.layers.ReLU(name=f"{prefix}_{index}_relu")(x)
    x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def _resnet_blocks(x, blocks, strides: int, conv_kw: dict) -> keras.KerasTensor:
    for block_index, (depths, repeats) in enumerate(blocks, 1):
        for unit in range(1, repeats + 1):
            x = _bottleneck_unit(x, depths, strides if unit == 1 else 1, unit == 1,
                                 f"{TOP_PREFIX}{block_index}_unit{unit}", conv_kw)
    return x


def _vgg_blocks(x, blocks, conv_kw: dict) -> keras.KerasTensor:
    # "same" pooling equals Shen's "valid" 2x2 pooling on even sizes (all of the paper's) and keeps
    # odd or tiny feature maps from collapsing to zero.
    for block_index, (depth, repeats) in enumerate(blocks, 1):
        prefix = f"{TOP_PREFIX}{block_index}"
        for k in range(1, repeats + 1):
            x = keras.layers.Conv2D(depth, 3, padding="same", name=f"{prefix}_conv{k}", **conv_kw)(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn{k}")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu{k}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{prefix}_pool")(x)
    return x


def _fc_top(x, num_classes: int, fc_units: Sequence[int], shortcut: bool, conv_kw: dict):
    flat = keras.layers.Flatten(name=f"{TOP_PREFIX}_flatten")(x)
    hidden = flat
    for k, units in enumerate(fc_units, 1):
        hidden = keras.layers.Dense(units, name=f"{TOP_PREFIX}_fc{k}", **conv_kw)(hidden)
        hidden = keras.layers.BatchNormalization(name=f"{TOP_PREFIX}_fc{k}_bn")(hidden)
        hidden = keras.layers.ReLU(name=f"{TOP_PREFIX}_fc{k}_relu")(hidden)
    logits = keras.layers.Dense(num_classes, name=f"{TOP_PREFIX}_logits", **conv_kw)(hidden)
    if shortcut:
        direct = keras.layers.Dense(num_classes, name=f"{TOP_PREFIX}_shortcut", **conv_kw)(flat)
        logits = keras.layers.Add(name=f"{TOP_PREFIX}_add")([logits, direct])
    return keras.layers.Softmax(name=OUTPUT_LAYER)(logits)


def whole_image_from_patch(patch_model: keras.Model, *,
                           input_shape: tuple[int, int, int] = WHOLE_IMAGE_SHAPE,
                           num_classes: int = 2, top: str = "resnet", blocks: Sequence | None = None,
                           block_strides: int = 2, heatmap: bool = False,
                           heatmap_activation: str = "relu", heatmap_window=None,
                           heatmap_pool=None, fc_units: Sequence[int] = (64, 32),
                           shortcut: bool = True, cut_layer: str | None = None,
                           classifier_layer: str = OUTPUT_LAYER, freeze_patch: bool = False,
                           weight_decay: float = 0.0, name: str | None = None) -> keras.Model:
    """Convert a patch classifier into an end-to-end whole-image classifier.

    Args:
        patch_model: a flat functional patch classifier (e.g. `shen_patch_resnet50()`); it is not
            modified, its layers up to `cut_layer` are copied with their weights.
        input_shape: whole-image shape; 1152x896x3 in the paper.
        num_classes: whole-image classes (2: benign-or-normal vs malignant).
        top: "resnet" or "vgg" blocks then GAP + softmax, or "fc" (heatmap + FC layers).
        blocks: resnet: `[((a, b, c), n), ...]` for `[a-b-c] x n`; vgg: `[(N, K), ...]` for `N x K`.
            Default: `DEFAULT_BLOCKS[top]`.
        block_strides: stride of the first unit of each Resnet block (2 in the paper).
        heatmap: insert the patch classifier's heatmap before the top layers (needed for "fc").
        heatmap_activation: "relu" (paper, Eq. 2) or "softmax" (class probabilities, Eq. 1).
        heatmap_window: patch window on the feature map; default: the patch classifier's own
            feature-map size (7x7 for 224-pixel ResNet50/VGG16 patches).
        heatmap_pool: max-pool size after the heatmap (pool size in Tables 2-3); default 5 for
            "fc", 1 (none) otherwise. Valid padding, stride = pool size.
        fc_units: the FC layer widths of top="fc" (FC1, FC2 in Tables 2-3).
        shortcut: top="fc" only: a Dense from the flattened heatmap added to the output logits.
        cut_layer: name of the last kept patch layer; default `conv5_block3_out` / `block5_pool`.
        classifier_layer: the patch classifier's Dense output, turned into the heatmap's 1x1 conv.
        freeze_patch: build with the patch-classifier layers frozen (training stage 1).
        weight_decay: L2 factor on the kernels of the new top layers (0 = none).
        name: model name.

    Returns:
        A flat functional `keras.Model` mapping images to a `num_classes` softmax.

    Reference: Shen et al. 2017, Sec. 2.1-2.2 and Tables 2-3.
    """
    _check_choice("top", top, TOPS)
    _check_choice("heatmap_activation", heatmap_activation, HEATMAP_ACTIVATIONS)
    blocks = _check_blocks(top, blocks)
    if top == "fc" and not heatmap:
        raise ValueError("top='fc' is Shen's heatmap + max-pooling + FC design: it needs "
                         f"heatmap=True. Received: top={top!r}, heatmap={heatmap!r}")
    if heatmap_pool is not None and not heatmap:
        raise ValueError("`heatmap_pool` pools the heatmap: set heatmap=True. "
                         f"Received: heatmap_pool={heatmap_pool!r}, heatmap={heatmap!r}")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")
    channels = patch_model.inputs[0].shape[-1]
    if input_shape[-1] != channels:
        raise ValueError(f"`input_shape` must have the patch classifier's {channels} channels. "
                         f"Received: input_shape={tuple(input_shape)}")
    if top == "fc" and not (fc_units and all(isinstance(u, int) and u >= 1 for u in fc_units)):
        raise ValueError(f"`fc_units` must list positive ints. Received: fc_units={fc_units!r}")
    cut = _cut_layer_name(patch_model, cut_layer)
    conv_kw = {"kernel_initializer": "he_normal",
               "kernel_regularizer": keras.regularizers.L2(weight_decay) if weight_decay else None}

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = _scan_features(patch_model, cut, image)
    if heatmap:
        x = _heatmap(x, patch_model, cut, classifier_layer, heatmap_activation, heatmap_window)
        pool = _pair(heatmap_pool if heatmap_pool is not None else (5 if top == "fc" else 1),
                     "heatmap_pool")
        if any(f is not None and f < p for f, p in zip(x.shape[1:3], pool)):
            raise ValueError(f"The heatmap {tuple(x.shape[1:3])} is smaller than the pool size: use a "
                             f"larger `input_shape` or a smaller pool. Received: heatmap_pool={pool}")
        x = keras.layers.MaxPooling2D(pool, name=f"{TOP_PREFIX}_heatmap_pool")(x)
    if top == "fc":
        outputs = _fc_top(x, num_classes, fc_units, shortcut, conv_kw)
    else:
        x = (_resnet_blocks(x, blocks, block_strides, conv_kw) if top == "resnet"
             else _vgg_blocks(x, blocks, conv_kw))
        x = keras.layers.GlobalAveragePooling2D(name=f"{TOP_PREFIX}_avg_pool")(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", name=OUTPUT_LAYER,
                                     **conv_kw)(x)
    model = keras.Model(image, outputs, name=name or f"{patch_model.name}_whole_{top}")
    if freeze_patch:
        set_patch_trainable(model, False)
    return model


def _whole_image(arch: str, preset: str, input_shape, num_classes: int, weights, name,
                 patch_model: keras.Model | None, patch_weights, patch_input_shape,
                 options: dict) -> keras.Model:
    """Shared body of the registered builders: preset arguments, overridden by `options`."""
    _check_choice("preset", preset, PRESETS)
    config = dict(PRESETS[preset])
    if config.pop("patch") != arch:
        raise ValueError(f"Preset {preset!r} is for the {PRESETS[preset]['patch']} patch classifier; "
                         f"use shen_whole_{PRESETS[preset]['patch']} or build_preset. "
                         f"Received: {preset=}")
    config.update(options)
    shen.check_weights(weights)
    # The patch classifier takes the whole image's channels (one grey channel is replicated to
    # three inside it, by its `grey_to_rgb` layer).
    patch_input_shape = (*tuple(patch_input_shape)[:2], tuple(input_shape)[-1])
    if patch_model is None:
        patch_init = "imagenet" if weights == "imagenet" else patch_weights
        if weights == "imagenet" and patch_weights is not None:
            raise ValueError("Pass either weights='imagenet' or `patch_weights`, not both. "
                             f"Received: weights={weights!r}, patch_weights={patch_weights!r}")
        patch_model = shen.shen_patch_classifier(arch, patch_input_shape, weights=patch_init)
    elif patch_weights is not None or weights == "imagenet":
        raise ValueError("`patch_model` is used as given: drop `patch_weights` and weights='imagenet'. "
                         f"Received: patch_weights={patch_weights!r}, weights={weights!r}")
    model = whole_image_from_patch(patch_model, input_shape=input_shape, num_classes=num_classes,
                                   name=name or f"shen_whole_{arch}", **config)
    if weights not in (None, "imagenet"):
        mk_weights.load_weights_by_name(model, weights)
    return model


_SIGNATURE_DOC = """
    Args:
        input_shape: whole-image shape (1152x896x3 in the paper).
        num_classes: 2 (benign-or-normal vs malignant).
        weights: None; "imagenet" (the new patch classifier's backbone); or an HDF5 weights
            file of this same whole-image model, loaded by layer name.
        name: model name.
        preset: a key of `PRESETS` for this patch architecture (a Table 2/3 row).
        patch_model: a trained patch classifier to convert; default: a new one.
        patch_weights: weights file of a trained patch classifier (the usual start).
        patch_input_shape: the patch size the classifier was trained on (224x224x3).
        **options: `whole_image_from_patch` arguments overriding the preset.
"""


PATCH_ARCH: dict[str, str] = {}
"""Registry name of each whole-image builder -> the patch classifier architecture it converts."""


def _registered(registry_name: str, arch: str, default_preset: str, summary: str):
    def builder(input_shape: tuple[int, int, int] = WHOLE_IMAGE_SHAPE, num_classes: int = 2, *,
                weights: str | None = None, name: str | None = None, preset: str = default_preset,
                patch_model: keras.Model | None = None, patch_weights: str | None = None,
                patch_input_shape: tuple[int, int, int] = shen.PATCH_INPUT_SHAPE,
                **options) -> keras.Model:
        return _whole_image(arch, preset, input_shape, num_classes, weights, name, patch_model,
                            patch_weights, patch_input_shape, options)

    PATCH_ARCH[registry_name] = arch
    builder.__name__ = builder.__qualname__ = registry_name
    builder.__doc__ = (f"{summary}\n{_SIGNATURE_DOC}\n"
                       f"    Reference: Shen et al. 2017, preset {default_preset}.\n")
    return register(registry_name, paper="shen2017", task="whole_image")(builder)


shen_whole_resnet50 = _registered(
    "shen_whole_resnet50", "resnet50", "table2_row3",
    "Shen's Resnet-Resnet whole-image classifier: ResNet50 patch net + [512-512-1024]x2 twice.")
shen_whole_vgg16 = _registered(
    "shen_whole_vgg16", "vgg16", "table3_row4",
    "Shen's VGG-VGG whole-image classifier: VGG16 patch net + VGG blocks 256x1 and 128x1.")
shen_whole_resnet50_heatmap = _registered(
    "shen_whole_resnet50_heatmap", "resnet50", "table2_row8",
    "Shen's ResNet50 whole-image classifier with the heatmap inserted before the Resnet blocks.")
shen_whole_resnet50_heatmap_fc = _registered(
    "shen_whole_resnet50_heatmap_fc", "resnet50", "table2_row10",
    "Shen's heatmap + max-pooling + two FC layers + shortcut on a ResNet50 patch net.")
shen_whole_vgg16_heatmap_fc = _registered(
    "shen_whole_vgg16_heatmap_fc", "vgg16", "table3_row7",
    "Shen's heatmap + max-pooling + two FC layers + shortcut on a VGG16 patch net.")

_BUILDERS = {"resnet50": shen_whole_resnet50, "vgg16": shen_whole_vgg16}


def build_preset(preset: str, **kwargs) -> keras.Model:
    """Build a Table 2/3 row by its `PRESETS` key, with its own patch architecture.

    `kwargs` are the registered builders' arguments (input_shape, patch_weights, options, ...).
    """
    _check_choice("preset", preset, PRESETS)
    return _BUILDERS[PRESETS[preset]["patch"]](preset=preset, **kwargs)
