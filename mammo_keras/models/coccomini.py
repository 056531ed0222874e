"""Coccomini's pretrained classifiers and the approaches that add the mass/calcification prediction.

Pretrained classifiers: an ImageNet backbone (grey patches replicated to 3 channels by the
layer "grey_to_rgb", scaled by "imagenet_scaling"), the pooled layer "features", a dense-256
ReLU layer and one sigmoid unit. The report's head ("an internal layer of 256 and an output of
1 with a sigmoid"), 150x150 inputs and RMSprop learning rates 2e-5/2e-6 match the VGG16
example of Chollet's "Deep Learning with Python" (Flatten, Dense 256 ReLU, Dense 1 sigmoid),
which is followed for the unstated details.

Approaches A and B classify benign/malignant from a B/M network's "features" concatenated with
the output of a mass/calcification model, fed as the second input "mc_prediction":

    mc = coccomini_vgg16(...)                          # trained on mass vs calcification
    bm = coccomini_approach_b(feature_model=trained_resnet50_bm)
    bm.predict([patches, (mc.predict(patches) > 0.5).astype("float32")])

Reference: Coccomini et al., Ch. 5 (Tables 5.1/5.2) and Ch. 8 (Figs. 8.1, 8.4).
"""
from __future__ import annotations

import keras
from keras import layers

from mammo_keras.models.backbones import set_fine_tuning
from mammo_keras.models.registry import register
from mammo_keras.models.siamese import coccomini_siamese, fine_tuning_strategy, pretrained_features
from mammo_keras.models.small_cnns import output_layer

MC_INPUT = "mc_prediction"


def _pretrained_classifier(family, input_shape, num_classes, *, weights, name, fine_tune, hidden,
                           pooling, input_scaling) -> keras.Model:
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise ValueError(f"`hidden` must be a positive integer. Received: hidden={hidden!r}")
    strategy = fine_tuning_strategy(fine_tune)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    features = pretrained_features(inputs, family, weights=weights, pooling=pooling,
                                   input_scaling=input_scaling)
    x = layers.Dense(hidden, activation="relu", name="head_dense")(features)
    outputs = output_layer(num_classes)(x)
    model = keras.Model(inputs, outputs, name=name or f"coccomini_{family}")
    return set_fine_tuning(model, strategy, family=family)


def _classifier_doc(family: str, table_note: str) -> str:
    return f"""{family} (ImageNet backbone) with Coccomini's dense-256 + sigmoid head.

    Args:
        input_shape: (height, width, 1 or 3); grey inputs are replicated to 3 channels by the
            layer "grey_to_rgb". Values in [0, 255] when `input_scaling="imagenet"`.
        num_classes: 1 (sigmoid, binary cross-entropy as in the report) or more (softmax).
        weights: None, "imagenet" or the path of a local backbone weights file.
        name: model name.
        fine_tune: "none" (frozen backbone, the report's plain runs), "last_block" (the last
            block trainable: the report's "fine tuning on the last convolutional layer") or "all".
        hidden: width of the ReLU dense layer (256).
        pooling: "flatten" (default) or "avg" between the backbone and the head.
        input_scaling: "imagenet" (the backbone's own preprocessing as a layer) or "none".

    Reference: Coccomini et al., Ch. 5; {table_note}.
    """


@register("coccomini_vgg16", paper="coccomini2021", task="roi")
def coccomini_vgg16(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                    fine_tune: str = "none", hidden: int = 256, pooling: str = "flatten",
                    input_scaling: str = "imagenet") -> keras.Model:
    return _pretrained_classifier("vgg16", input_shape, num_classes, weights=weights, name=name,
                                  fine_tune=fine_tune, hidden=hidden, pooling=pooling,
                                  input_scaling=input_scaling)


@register("coccomini_resnet50", paper="coccomini2021", task="roi")
def coccomini_resnet50(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                       fine_tune: str = "none", hidden: int = 256, pooling: str = "flatten",
                       input_scaling: str = "imagenet") -> keras.Model:
    return _pretrained_classifier("resnet50", input_shape, num_classes, weights=weights, name=name,
                                  fine_tune=fine_tune, hidden=hidden, pooling=pooling,
                                  input_scaling=input_scaling)


@register("coccomini_inceptionv3", paper="coccomini2021", task="roi")
def coccomini_inceptionv3(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                          fine_tune: str = "none", hidden: int = 256, pooling: str = "flatten",
                          input_scaling: str = "imagenet") -> keras.Model:
    return _pretrained_classifier("inceptionv3", input_shape, num_classes, weights=weights,
                                  name=name, fine_tune=fine_tune, hidden=hidden, pooling=pooling,
                                  input_scaling=input_scaling)


coccomini_vgg16.__doc__ = _classifier_doc(
    "VGG16", "Tables 5.1/5.2 (VGG16 rows); best M/C model fine-tuned")
coccomini_resnet50.__doc__ = _classifier_doc(
    "ResNet50", "Tables 5.1/5.2 (ResNet rows); best B/M model fine-tuned")
coccomini_inceptionv3.__doc__ = _classifier_doc("InceptionV3", "Tables 5.1/5.2 (Inception rows)")


def add_mc_prediction(feature_model: keras.Model, num_classes: int = 1, *, name: str | None = None,
                      hidden: int = 256, freeze_features: bool = True) -> keras.Model:
    """Cut `feature_model` at its "features" layer and classify features + the M/C prediction.

    The new model takes the feature model's inputs plus "mc_prediction" (shape (1,): the mass/
    calcification model's predicted label, as in the report, or its probability) and adds
    concatenation "features_and_mc", a ReLU dense layer "head_dense" and "predictions".

    Args:
        feature_model: a model with a layer named "features" (every Coccomini builder has one).
        num_classes: 1 (sigmoid) or more (softmax).
        hidden: width of the dense layer (256 in the report).
        freeze_features: keep the cut network's weights fixed (its batch normalisation then runs
            in inference mode) while the head trains.

    Reference: Coccomini et al., Ch. 8 ("two Dense Layers one of 256 and one final of 1").
    """
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise ValueError(f"`hidden` must be a positive integer. Received: hidden={hidden!r}")
    try:
        cut = feature_model.get_layer("features").output
    except ValueError as error:
        raise ValueError("`feature_model` needs a layer named 'features' to cut at (every Coccomini "
                         f"builder names its pooled features so). Received: model={feature_model.name!r}"
                         ) from error
    extractor = keras.Model(feature_model.inputs, cut, name=f"{feature_model.name}_features")
    extractor.trainable = not freeze_features
    image_inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=_input_name(t, i))
                    for i, t in enumerate(feature_model.inputs)]
    mc = keras.Input(shape=(1,), name=MC_INPUT)
    member_input = image_inputs[0] if len(image_inputs) == 1 else image_inputs
    features = extractor(member_input)
    x = layers.Concatenate(name="features_and_mc")([features, mc])
    x = layers.Dense(hidden, activation="relu", name="head_dense")(x)
    outputs = output_layer(num_classes)(x)
    return keras.Model([*image_inputs, mc], outputs, name=name or f"{feature_model.name}_with_mc")


@register("coccomini_approach_a", paper="coccomini2021", task="roi_pair")
def coccomini_approach_a(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                         feature_model: keras.Model | None = None, encoder: str = "resnet50",
                         fine_tune: str = "none", hidden: int = 256,
                         freeze_features: bool = True) -> keras.Model:
    """Approach A: siamese (baseline-patch) B/M features + the M/C prediction -> dense-256 -> sigmoid.

    Inputs: `[baseline, abnormality, mc_prediction]`. The report cuts its fine-tuned ResNet50
    siamese B/M classifier ("removing the last part of the network"): pass that trained model as
    `feature_model`; without it a new `coccomini_siamese(encoder=encoder, weights=weights,
    fine_tune=fine_tune)` is cut. Train with class weights {benign: 1, malignant: 1.3}.

    Reference: Coccomini et al., Ch. 8, Approach A (Figs. 8.1-8.3).
    """
    if feature_model is None:
        feature_model = coccomini_siamese(input_shape, weights=weights, encoder=encoder,
                                          fine_tune=fine_tune if encoder != "scratch" else None)
    return add_mc_prediction(feature_model, num_classes, hidden=hidden,
                             freeze_features=freeze_features, name=name or "coccomini_approach_a")


@register("coccomini_approach_b", paper="coccomini2021", task="roi")
def coccomini_approach_b(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                         feature_model: keras.Model | None = None, family: str = "resnet50",
                         fine_tune: str = "none", hidden: int = 256,
                         freeze_features: bool = True) -> keras.Model:
    """Approach B: single-patch B/M backbone features + the M/C prediction -> dense-256 -> sigmoid.

    Inputs: `[abnormality, mc_prediction]`. The report uses its fine-tuned ResNet50 B/M
    classifier's features "from the level following the convolutional part": pass that trained
    model as `feature_model`; without it a new `coccomini_<family>` classifier is cut.

    Reference: Coccomini et al., Ch. 8, Approach B (Fig. 8.4; no numbers reported).
    """
    if feature_model is None:
        feature_model = _pretrained_classifier(family, input_shape, 1, weights=weights, name=None,
                                               fine_tune=fine_tune, hidden=hidden, pooling="flatten",
                                               input_scaling="imagenet")
    return add_mc_prediction(feature_model, num_classes, hidden=hidden,
                             freeze_features=freeze_features, name=name or "coccomini_approach_b")


def _input_name(tensor, index: int) -> str:
    layer = tensor._keras_history.operation
    return layer.name if layer is not None else f"input_{index}"
