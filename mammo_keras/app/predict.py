"""Classify a new mammogram with a saved model, and show where the model looked.

    loaded = load_model_folder("results/chougrad2018/mias_test/merged/inceptionv3/test/model")
    result = predict_image(loaded, "mdb001.png", Lesion("circle", (535, 425, 197), "bottom-left"))
    result.probabilities                      # {"benign": 0.81, "malignant": 0.19}
    write_png("mdb001_gradcam.png", result.panel)

Every step is what training did, by the same code: the manifest records the model's input recipe
(`data.recipes.InputRecipe`) and the steps fitted on its training part (mean grey / mean image);
the file is read as `data prepare` reads it, the item cut by the prepare task's own `extract`
(the Chougrad / Jain & Levy ROI, or the whole image for Shen's networks), resized, scaled and
normalised as the runner does (tests/app/test_recipe_parity.py checks the arrays are identical).

Reference: Chougrad et al. 2018, Sec. 3.4 (the screening GUI); Selvaraju et al. 2017 (Grad-CAM).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mammo_keras.data import roi
from mammo_keras.data.recipes import PREDICTABLE_TASKS, FittedInputs, InputRecipe
from mammo_keras.data.imageio import DEFAULT_MAX_PIXELS, read_normalised
from mammo_keras.errors import DataError
from mammo_keras.fileio import atomic_write_bytes

FORMATS = "DICOM, PNG, PGM, JPEG or TIFF"
Y_ORIGINS = ("top-left", "bottom-left")
DISPLAY_SIZE = 384  # pixels: height of the whole-image panel and side of the ROI panel
ROI_COLOUR = (255, 220, 0)
_NUMBER = r"\s*[-+]?(?:\d+\.?\d*|\.\d+)\s*"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A saved model with the input recipe and fitted input steps its manifest records."""

    model: object  # keras.Model (imported lazily: the CLI parses arguments before TensorFlow loads)
    preprocessing: InputRecipe
    manifest: dict
    directory: Path
    fitted: FittedInputs | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.preprocessing.class_names


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Class probabilities of one image (or lesion), its Grad-CAM map and the picture to show."""

    image: str
    box: roi.Box | None
    probabilities: dict[str, float]
    heatmap: np.ndarray | None  # (H, W) in [0, 1] at the model's input size; None if no 4-D layer
    explained: str  # the class whose score Grad-CAM explains
    panel: np.ndarray  # (h, w, 3) uint8: the image with the ROI marked, the ROI with the heatmap

    @property
    def predicted(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    def row(self, heatmap: str | Path | None = None) -> dict:
        """One output row: image, roi, one column per class (NYU meta-repository style), heatmap."""
        row = {"image": self.image, "roi": format_box(self.box)}
        row.update({column_name(name): round(p, 6) for name, p in self.probabilities.items()})
        row["predicted"] = self.predicted
        row["heatmap"] = "" if heatmap is None else str(heatmap)
        return row


def column_name(class_name: str) -> str:
    """A class name as a CSV column: lower case, spaces to underscores ("not malignant" -> "not_malignant")."""
    return re.sub(r"\W+", "_", class_name.strip().lower()).strip("_")


def heatmap_name(path: str | Path) -> str:
    """The heatmap PNG's file name for an image: `<stem>_<8 hex>_gradcam.png`.

    The hex digits begin the sha256 of the image's absolute path, so files of the same name in
    different folders (every CBIS-DDSM image is `1-1.dcm`) get heatmaps of their own, and an image
    keeps its heatmap's name from one run to the next.
    """
    digest = hashlib.sha256(str(Path(path).absolute()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    stem = re.sub(r"[^\w.-]+", "_", Path(path).stem).strip("._") or "image"
    return f"{stem}_{digest}_gradcam.png"


def format_box(box: roi.Box | None) -> str:
    """`x0,y0,x1,y1` in image pixels from the top-left corner, or "whole" for a whole-image model."""
    if box is None:
        return "whole"
    return ",".join(f"{v:g}" for v in box)


def load_model_folder(directory: str | Path, *, recipe: str | None = None) -> LoadedModel:
    """Verify a folder written by `io.save` against its checksums, then load it with its preprocessing.

    Args:
        recipe: for folders whose manifest records no preprocessing: "chougrad", "jain_levy" or "shen".

    Raises:
        DataError: no such folder, a file whose sha256 differs from the manifest, or a model this
            framework cannot run (several inputs, outputs that do not match the class names).
    """
    from mammo_keras import io as model_io
    from mammo_keras import models  # noqa: F401 - registers the package's custom layers (GreyToRGB, ...)

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "model folder not found (expected a folder written by mammo_keras, "
                                   "e.g. results/<paper>/<table>/<dataset>/<model>/test/model)")
    manifest = model_io.read_manifest(directory)
    model_io.verify_checksums(directory)
    preprocessing = from_manifest(manifest, origin=str(directory / model_io.MANIFEST_FILE), recipe=recipe)
    fitted = preprocessing.fitted_from_manifest(manifest.get("preprocessing") or {}, directory)
    model = model_io.load(directory, verify=False)
    if len(model.inputs) != 1:
        raise DataError(directory, f"the model must have one image input. Received: {len(model.inputs)} inputs")
    height, width, channels = model.inputs[0].shape[1:]
    if (height, width) != preprocessing.input_hw:
        raise DataError(directory, f"the manifest's input size must match the model's. Received: "
                                   f"input_hw={preprocessing.input_hw}, model input {(height, width)}")
    units = model.outputs[0].shape[-1]
    classes = len(preprocessing.class_names)
    if not (units == classes or (units == 1 and classes == 2)):
        raise DataError(directory, f"the model has {units} output units for {classes} class names "
                                   f"{list(preprocessing.class_names)}; they must agree")
    return LoadedModel(model, preprocessing, manifest, directory, fitted)


def from_manifest(manifest: dict, *, origin: str = "<model>", recipe: str | None = None) -> InputRecipe:
    """The input recipe a saved model's manifest records.

    Folders saved before the manifest recorded preprocessing need `recipe` (chougrad, jain_levy
    or shen) from the user; the input size then comes from the model's input shape, the scale is
    1 and the options are the recipe's defaults.

    Raises:
        DataError: no recorded preprocessing and no `recipe`, or a recipe this framework cannot run.
    """
    from mammo_keras.data.prepare import TASKS

    recorded = dict(manifest.get("preprocessing") or {})
    shape = manifest.get("input_shape") or []
    if isinstance(shape, list) and shape and isinstance(shape[0], list):
        raise DataError(origin, f"the screening framework takes models with one image input. "
                                f"Received: input_shape={shape}")
    if "recipe" not in recorded:
        if recipe is None:
            raise DataError(origin, "the manifest records no preprocessing (the folder was saved before "
                                    "mammo_keras recorded it, or by hand): say how the model was trained "
                                    f"with --recipe {'|'.join(PREDICTABLE_TASKS)}")
        if recipe not in PREDICTABLE_TASKS:
            raise DataError(origin, f"--recipe must be one of {PREDICTABLE_TASKS}. Received: recipe={recipe!r}")
        if len(shape) != 3:
            raise DataError(origin, f"the manifest's input_shape must be (height, width, channels). "
                                    f"Received: input_shape={shape}")
        recorded = {"recipe": recipe, "options": TASKS[recipe].recorded(dict(TASKS[recipe].defaults)), "input_hw": shape[:2],
                    "input_channels": shape[2], "input_scale": 1.0}
    name = recorded["recipe"]
    if name not in PREDICTABLE_TASKS:
        raise DataError(origin, f"this model was trained on {name!r} items; the screening framework "
                                f"runs models trained on one of {PREDICTABLE_TASKS}. Received: recipe={name!r}")
    if recorded.get("item_part") is not None or recorded.get("label_map"):
        raise DataError(origin, "models trained on paired or relabelled items are not supported. "
                                f"Received: preprocessing={recorded}")
    class_names = manifest.get("class_names") or list(TASKS[name].class_names)
    return InputRecipe.from_manifest(recorded, class_names)


def parse_numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    """`count` comma-separated numbers, e.g. "535,425,197"."""
    parts = str(text).split(",")
    if len(parts) != count or not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise ValueError(f"{what} takes {count} comma-separated numbers. Received: {text!r}")
    values = tuple(float(p) for p in parts)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} takes finite numbers. Received: {text!r}")
    return values


@dataclasses.dataclass(frozen=True)
class Lesion:
    """A lesion position as a person gives it: a circle (x, y, r), as MIAS lists lesions, or a box
    (x0, y0, x1, y1), in pixels with y counted from the top (image rows) or the bottom (MIAS Info.txt)."""

    kind: str
    values: tuple[float, ...]
    y_origin: str = "top-left"

    def __post_init__(self):
        if self.kind not in ("circle", "box"):
            raise ValueError(f"kind must be 'circle' or 'box'. Received: kind={self.kind!r}")
        if self.y_origin not in Y_ORIGINS:
            raise ValueError(f"y_origin must be one of {Y_ORIGINS}. Received: y_origin={self.y_origin!r}")
        if len(self.values) != (3 if self.kind == "circle" else 4):
            raise ValueError(f"a {self.kind} takes {3 if self.kind == 'circle' else 4} numbers. "
                             f"Received: values={self.values}")
        if self.kind == "circle" and self.values[2] <= 0:
            raise ValueError(f"the ROI radius must be positive. Received: r={self.values[2]:g}")

    @classmethod
    def parse(cls, text: str, kind: str = "circle", y_origin: str = "top-left") -> Lesion:
        """From "x,y,r" (kind "circle") or "x0,y0,x1,y1" (kind "box")."""
        what = "--roi x,y,r" if kind == "circle" else "--bbox x0,y0,x1,y1"
        return cls(kind, parse_numbers(text, 3 if kind == "circle" else 4, what), y_origin)

    def box(self, shape: Sequence[int]) -> roi.Box:
        """`(x0, y0, x1, y1)` in image pixels from the top-left corner of an image of `shape`."""
        if self.kind == "circle":
            x, y, r = self.values
            x0, y0, x1, y1 = x - r, y - r, x + r, y + r
        else:
            x0, y0, x1, y1 = self.values
        if self.y_origin == "bottom-left":
            y0, y1 = shape[0] - y1, shape[0] - y0
        return (x0, y0, x1, y1)


def check_lesion(box: roi.Box, shape: Sequence[int], origin: str) -> None:
    """The lesion's centre must lie inside the image (a box that merely touches it is a typo)."""
    roi.check_box(box, shape, origin=origin)
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    height, width = shape[:2]
    if not (0 <= cx < width and 0 <= cy < height):
        raise DataError(origin, f"the ROI centre lies outside the {width}x{height} image. "
                                f"Received: centre=({cx:g}, {cy:g}), box={format_box(box)}")


def sniff_format(path: str | Path) -> str | None:
    """"dicom", "png", "jpeg", "tiff" or "pgm" from the file's first bytes; None for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] in (b"P5", b"P2") and head[2:3].isspace():
        return "pgm"
    return None


def read_scan(path: str | Path, *, name: str | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The image in [0, 1] by its format's range, as `data prepare` reads training images.

    Args:
        max_pixels: refuse larger images, judged from the file's header before decoding
            (None: only Pillow's decompression-bomb limit).

    Raises:
        DataError: missing file, a file that is not one of the supported formats (judged by its
            content, not its name), corrupt pixel data, an image over `max_pixels`, or a DICOM
            this package cannot decode.
    """
    path = Path(path)
    origin = name or str(path)
    if not path.is_file():
        raise DataError(origin, "image file not found")
    kind = sniff_format(path)
    if kind is None and path.suffix.lower() not in (".dcm", ".dicom"):
        raise DataError(origin, f"not an image this tool reads: expected {FORMATS} (judged by the "
                                "file's content, not its name)")
    try:
        image = read_normalised(path, max_pixels=max_pixels)
    except DataError as error:  # name the upload, not the server's temporary file
        raise DataError(origin, error.problem) from None
    if image.ndim != 2 or min(image.shape) < 2:
        raise DataError(origin, f"expected a 2-D greyscale image. Received: shape={image.shape}")
    return image


def lesion_window(preprocessing: InputRecipe, box: roi.Box | None, shape: Sequence[int]) -> roi.Window:
    """The part of the image that the model input shows (for drawing; the input itself is cut by roi.*)."""
    height, width = shape[:2]
    if box is None or not preprocessing.needs_roi:
        return roi.Window(0, 0, width, height)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    options = preprocessing.options
    if preprocessing.task == "chougrad":
        side = max(options["r"], x1 - x0, y1 - y0) if options["grow_to_fit"] else options["r"]
        return roi.clip_window(cx, cy, side, side, shape)
    if options["context"] == "fixed":
        w, h = (x1 - x0) + 2 * options["padding"], (y1 - y0) + 2 * options["padding"]
    else:
        w, h = (x1 - x0) * options["factor"], (y1 - y0) * options["factor"]
    window = roi.clip_window(cx, cy, w, h, shape)
    side = min(window.width, window.height)  # jain_levy_roi keeps the centre square
    left, top = window.x0 + (window.width - side) // 2, window.y0 + (window.height - side) // 2
    return roi.Window(left, top, left + side, top + side, window.clipped)


def model_input(image: np.ndarray, preprocessing: InputRecipe, box: roi.Box | None = None, *,
                origin: str = "<image>", fitted: FittedInputs | None = None) -> np.ndarray:
    """The (H, W) array the model takes, cut, resized, scaled and normalised as for training
    (`InputRecipe.model_input`, the runner's code path).

    Raises:
        DataError: an ROI model without a lesion box, a whole-image model given one, or a box
            outside the image.
    """
    if preprocessing.needs_roi:
        if box is None:
            raise DataError(origin, f"this model classifies lesion ROIs ({preprocessing.task} recipe): "
                                    "give the lesion as --roi x,y,r or --bbox x0,y0,x1,y1")
        check_lesion(box, image.shape, origin)
    elif box is not None:
        raise DataError(origin, "this model classifies whole images (shen recipe) and takes no ROI. "
                                f"Received: roi={format_box(box)}")
    if fitted is None:
        fitted = preprocessing.fitted_from_manifest({}, ".")
    return preprocessing.model_input(image, box, fitted, origin=origin)[0]


def class_probabilities(outputs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """(N, k) probabilities: a softmax output as it is, one sigmoid unit p as (1 - p, p)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        positive = outputs.reshape(-1)
        return np.stack([1.0 - positive, positive], axis=-1)
    if outputs.shape[-1] != len(class_names):
        raise ValueError(f"the model output has {outputs.shape[-1]} units for {len(class_names)} classes")
    return outputs


def predict_image(loaded: LoadedModel, path: str | Path, lesion: Lesion | None = None, *,
                  name: str | None = None, display_size: int = DISPLAY_SIZE,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, image: np.ndarray | None = None) -> Prediction:
    """Probabilities, Grad-CAM map and a picture for one image file (and lesion).

    Args:
        lesion: where the lesion is; None for whole-image models.
        name: how to call the image in messages and rows (default: the path).
        max_pixels: refuse larger images (see `read_scan`).
        image: the file already decoded by `read_scan` (the server decodes each upload once).

    Grad-CAM explains the last class (malignant for benign/malignant models), like the per-fold
    Grad-CAM sheets of `reproduce`, so that the map always shows the evidence for cancer.
    """
    from mammo_keras.evaluation.saliency import grad_cam
    from mammo_keras.models.inputs import as_model_input

    name = name or str(path)
    if image is None:
        image = read_scan(path, name=name, max_pixels=max_pixels)
    box = None if lesion is None else lesion.box(image.shape)
    array = model_input(image, loaded.preprocessing, box, origin=name, fitted=loaded.fitted)
    batch = as_model_input(array[None], loaded.model)
    outputs = loaded.model(batch, training=False)
    probabilities = class_probabilities(np.asarray(outputs), loaded.class_names)[0]
    explained = loaded.class_names[-1]
    heatmap = None
    layer = explained_layer(loaded.model)
    if layer is not None:
        class_index = None if loaded.model.outputs[0].shape[-1] == 1 else len(loaded.class_names) - 1
        heatmap = grad_cam(loaded.model, batch, layer_name=layer, class_index=class_index)[0]
    result = dict(zip(loaded.class_names, (float(p) for p in probabilities)))
    panel = render_panel(image, loaded.preprocessing, box, heatmap, display_size=display_size)
    return Prediction(name, box, result, heatmap, explained, panel)


def explained_layer(model) -> str | None:
    """The layer Grad-CAM explains: the last 4-D feature map with more than one position.

    A 1 x 1 map (InceptionV3's mixed8-10 at 75 px inputs) gives a constant heatmap, so the last
    layer that still has a spatial extent is taken instead; None when the model has no 4-D layer.
    """
    from mammo_keras.evaluation.saliency import feature_layers

    names = feature_layers(model)
    spatial = [n for n in names if max(model.get_layer(n).output.shape[1:3]) > 1]
    return spatial[-1] if spatial else (names[-1] if names else None)


def render_panel(image: np.ndarray, preprocessing: InputRecipe, box: roi.Box | None,
                 heatmap: np.ndarray | None, *, display_size: int = DISPLAY_SIZE) -> np.ndarray:
    """The picture to show: for ROI models the whole image with the ROI outlined beside the ROI
    with its Grad-CAM overlay; for whole-image models the image with the overlay."""
    from mammo_keras.evaluation.saliency import overlay

    window = lesion_window(preprocessing, box, image.shape)
    scale = display_size / image.shape[0]
    whole_hw = (display_size, max(1, round(image.shape[1] * scale)))
    whole = roi.resize(image, whole_hw)
    if not preprocessing.needs_roi:
        heat = heatmap if heatmap is not None else np.zeros(whole_hw, np.float32)
        return overlay(whole, heat, alpha=0.4 if heatmap is not None else 0.0)
    left = Image.fromarray(overlay(whole, np.zeros(whole_hw, np.float32), alpha=0.0))
    ImageDraw.Draw(left).rectangle([window.x0 * scale, window.y0 * scale, window.x1 * scale - 1,
                                    window.y1 * scale - 1], outline=ROI_COLOUR, width=2)
    crop = roi.resize(window.crop(image), (display_size, display_size))
    heat = heatmap if heatmap is not None else np.zeros((display_size, display_size), np.float32)
    right = overlay(crop, heat, alpha=0.4 if heatmap is not None else 0.0)
    gap = np.full((display_size, 8, 3), 255, np.uint8)
    return np.concatenate([np.asarray(left), gap, right], axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB array as PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB array as a PNG, atomically."""
    return atomic_write_bytes(path, png_bytes(rgb))
