"""The steps between prepared items and model inputs that depend on the training part of a split.

Two of the papers normalise with statistics of their training set, and one augments it offline;
both must be fitted on the training part of each fold (never on validation or test items):

    Normalisation("train_mean_grey")     Shen: subtract the training set's mean grey value
    Normalisation("train_whole_image_mean_grey")
                                         Shen's patches: the mean grey value of the whole images
                                         the training patches come from (index column image_mean_grey)
    Normalisation("train_mean_image")    Jain & Levy: subtract the training set's mean image
    OfflineAugment(5, 5)                 Jain & Levy: 5 random rotations x 5 random crops per item,
                                         corners filled with the training set's mean pixel

`FittedInputs.fit` learns them on the training items of one part; `training_set` and
`transform` then give the model inputs. The fitted values are saved with a model
(`to_manifest` / `arrays`), so `predict` prepares a new image exactly as the run did.
"""
from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
from scipy import ndimage

from mammo_keras.data.roi import centre_crop
from mammo_keras.data.rows import ItemRows, is_lazy, resize_items
from mammo_keras.vocabulary import NORMALISATIONS

IMAGE_MEAN_COLUMN = "image_mean_grey"
FILLS = ("train_mean_pixel",)


@dataclasses.dataclass(frozen=True)
class OfflineAugment:
    """Jain & Levy's offline augmentation of the training set.

    Each training item (a canvas holding the resized context window) is rotated `rotations`
    times by an angle drawn uniformly from [0, 360) degrees, the uncovered corners filled with
    the training set's mean pixel value, and `crops_per_rotation` random crops of the input
    size are cut inside the window: `rotations * crops_per_rotation` items per lesion.

    Reference: Jain & Levy, DeepMammo, Sec. 3.2 (x25, 36,400 training crops from 1,456 images).
    """

    rotations: int = 5
    crops_per_rotation: int = 5
    fill: str = "train_mean_pixel"

    def __post_init__(self):
        for name in ("rotations", "crops_per_rotation"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if self.fill not in FILLS:
            raise ValueError(f"`fill` must be one of {FILLS}. Received: fill={self.fill!r}")

    @property
    def copies(self) -> int:
        return self.rotations * self.crops_per_rotation


def window_slices(shape: tuple[int, int], rows_fraction: float, cols_fraction: float):
    """The centred window of a canvas, from its extent stored as fractions of the canvas side."""
    height, width = shape
    rows, cols = int(round(rows_fraction * height)), int(round(cols_fraction * width))
    top, left = (height - rows) // 2, (width - cols) // 2
    return slice(top, top + rows), slice(left, left + cols)


def _item_rng(seed: int, item_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(str(item_id).encode())])


def offline_augment(canvases: np.ndarray, windows: np.ndarray, item_ids, size: tuple[int, int],
                    spec: OfflineAugment, *, fill: float, seed: int,
                    path: str | Path | None = None) -> tuple[np.ndarray | ItemRows, np.ndarray]:
    """The augmented training items: (N * copies, *size) crops, and the source row of each.

    Args:
        canvases: (N, S, S) canvases; windows: (N, 2) the window extent of each as fractions.
        item_ids: the items' ids; each item's draws depend on (seed, id) only.
        size: (rows, cols) of the crops (the model's input size).
        fill: the value of the rotated-in corners (the training set's mean pixel).
        path: where to write the crops as a .npy file, one crop at a time, and return them as lazy
            `ItemRows` (read per batch): x25 copies of a CBIS-DDSM-sized lesion set are gigabytes
            that need not be resident. None: an array in memory. Both hold the same values.
    """
    source = np.repeat(np.arange(len(canvases)), spec.copies)
    shape = (len(canvases) * spec.copies, *size)
    if path is None:
        out = np.empty(shape, np.float32)
        for position, crop in enumerate(_offline_crops(canvases, windows, item_ids, size, spec, fill=fill, seed=seed)):
            out[position] = crop
        return out, source
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as stream:
        np.lib.format.write_array_header_2_0(stream, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                      "fortran_order": False, "shape": shape})
        for crop in _offline_crops(canvases, windows, item_ids, size, spec, fill=fill, seed=seed):
            stream.write(np.ascontiguousarray(crop, dtype=np.float32).tobytes())
    partial.replace(path)
    return ItemRows.open(path), source


def _offline_crops(canvases, windows, item_ids, size, spec: OfflineAugment, *, fill: float, seed: int):
    """Each item's `spec.copies` crops in order: rotations drawn from (seed, item id), then crops of each."""
    for canvas, (rows_fraction, cols_fraction), item_id in zip(canvases, windows, item_ids):
        rng = _item_rng(seed, item_id)
        rows, cols = window_slices(canvas.shape, rows_fraction, cols_fraction)
        window = canvas[rows, cols]
        if window.shape[0] < size[0] or window.shape[1] < size[1]:
            raise ValueError(f"item {item_id!r}: its window {window.shape} is smaller than the crop size {size}")
        for _ in range(spec.rotations):
            angle = rng.uniform(0.0, 360.0)
            rotated = ndimage.rotate(window, angle, reshape=False, order=1, mode="constant", cval=fill)
            for _ in range(spec.crops_per_rotation):
                top = rng.integers(0, rotated.shape[0] - size[0] + 1)
                left = rng.integers(0, rotated.shape[1] - size[1] + 1)
                yield rotated[top:top + size[0], left:left + size[1]]


def mean_window_pixel(canvases: np.ndarray, windows: np.ndarray) -> float:
    """The mean pixel value over the windows of the training canvases (not their empty margins)."""
    total, count = 0.0, 0
    for canvas, (rows_fraction, cols_fraction) in zip(canvases, windows):
        rows, cols = window_slices(canvas.shape, rows_fraction, cols_fraction)
        window = canvas[rows, cols]
        total += float(window.sum(dtype=np.float64))
        count += window.size
    return total / count if count else 0.0


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Subtract a statistic of the training part: its mean grey value (a scalar) or mean image."""

    kind: str = "none"

    def __post_init__(self):
        if self.kind not in NORMALISATIONS:
            raise ValueError(f"`normalisation` must be one of {NORMALISATIONS}. Received: {self.kind!r}")

    def fit(self, images: np.ndarray, index=None) -> np.ndarray | float | None:
        """The statistic of the training part (`index`: its rows, for the whole-image means)."""
        if self.kind == "none":
            return None
        if self.kind == "train_whole_image_mean_grey":
            if index is None or IMAGE_MEAN_COLUMN not in index:
                raise ValueError(f"normalisation {self.kind!r} needs the index column {IMAGE_MEAN_COLUMN!r} "
                                 "(the source image's mean grey value, which the Shen patch tasks record)")
            per_image = index.drop_duplicates("image_id")[IMAGE_MEAN_COLUMN].astype(float)
            if per_image.empty:
                raise ValueError("cannot fit a training-set normalisation on an empty training part")
            return float(per_image.mean())  # every image has the same size: the mean of the means
        if len(images) == 0:
            raise ValueError("cannot fit a training-set normalisation on an empty training part")
        if is_lazy(images):
            return _lazy_mean(images, image=self.kind == "train_mean_image")
        images = np.asarray(images, dtype=np.float64)
        if self.kind == "train_mean_grey":
            return float(images.mean())
        return images.mean(axis=0).astype(np.float32)


def _lazy_mean(images: ItemRows, *, image: bool) -> np.ndarray | float:
    """The mean grey value or mean image of rows read a chunk at a time, in float64.

    The mean image adds the items one by one in order, as NumPy's `mean(axis=0)` does, so it is
    bitwise the in-memory one; the mean grey value sums each chunk (pairwise, as NumPy) and then
    the chunk sums, which can differ from one pairwise sum over the whole part in the last bits
    of the float64 value (about 1e-16 relative), below float32's resolution, the precision it is
    subtracted in.
    """
    if image:
        total = np.zeros(images.item_shape, np.float64)
        for chunk in images.chunks():
            for item in chunk.astype(np.float64):
                total += item
        return (total / len(images)).astype(np.float32)
    total = sum(float(chunk.astype(np.float64).sum()) for chunk in images.chunks())
    return total / (len(images) * int(np.prod(images.item_shape)))


@dataclasses.dataclass
class FittedInputs:
    """The training-part-dependent steps of one part (fold), fitted on its training items."""

    normalisation: Normalisation
    offline: OfflineAugment | None
    crop: tuple[int, int] | None  # evaluation crop of canvases (Jain & Levy); None: items as they are
    mean: np.ndarray | float | None = None
    fill: float | None = None

    @classmethod
    def fit(cls, images: np.ndarray, index, *, normalisation: Normalisation, offline: OfflineAugment | None,
            crop: tuple[int, int] | None, seed: int,
            offline_path: str | Path | None = None) -> tuple[FittedInputs, np.ndarray, np.ndarray]:
        """Fit on the training items; returns (fitted, training inputs, source row of each input).

        `offline_path`: with offline augmentation, the copies are written there and read per batch
        (`offline_augment(path=...)`) instead of held in memory."""
        fitted = cls(normalisation, offline, crop)
        if offline is not None or (crop is not None and is_lazy(images)):  # small ROI canvases: in memory
            images = np.asarray(images, dtype=np.float32)
        if offline is not None:
            windows = index[["window_rows", "window_cols"]].to_numpy(dtype=np.float64)
            fitted.fill = mean_window_pixel(images, windows)
            train, source = offline_augment(images, windows, index["item_id"].astype(str), crop, offline,
                                            fill=fitted.fill, seed=seed, path=offline_path)
        else:
            train = fitted._cropped(images)
            source = np.arange(len(images))
        fitted.mean = normalisation.fit(train, index)
        return fitted, fitted._subtract(train), source

    def _cropped(self, images: np.ndarray) -> np.ndarray:
        if self.crop is None:
            return images if is_lazy(images) else np.asarray(images, dtype=np.float32)
        return centre_crop(np.asarray(images, dtype=np.float32), self.crop)

    def _subtract(self, images: np.ndarray) -> np.ndarray:
        if is_lazy(images):  # subtracted per batch when read, the same float32 arithmetic
            return images.minus(self.mean)
        if self.mean is None:
            return np.asarray(images, dtype=np.float32)
        return np.asarray(images, dtype=np.float32) - np.asarray(self.mean, dtype=np.float32)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Evaluation inputs (validation, test, new images): centre crop, then the fitted subtraction."""
        return self._subtract(self._cropped(images))

    def to_manifest(self) -> dict:
        """What a saved model records; a mean image goes to the array file `mean_image.npy`."""
        record: dict = {"normalisation": self.normalisation.kind}
        if self.normalisation.kind in ("train_mean_grey", "train_whole_image_mean_grey"):
            record["mean_grey"] = float(self.mean)
        elif self.normalisation.kind == "train_mean_image":
            record["mean_image_file"] = "mean_image.npy"
        if self.crop is not None:
            record["eval_crop"] = list(self.crop)
        if self.fill is not None:
            record["offline_fill"] = float(self.fill)
        return record

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean_image.npy": np.asarray(self.mean, np.float32)} \
            if self.normalisation.kind == "train_mean_image" else {}


PREDICTABLE_TASKS = ("chougrad", "jain_levy", "shen")  # one 2-D item cut from one image (or the whole image)
ROI_TASKS = ("chougrad", "jain_levy")
MANIFEST_KEYS = ("recipe", "options", "input_hw", "input_channels", "input_scale", "intensity")


@dataclasses.dataclass(frozen=True)
class InputRecipe:
    """How a file becomes a model input: one object for `data prepare`, the runner and `predict`.

        recipe = InputRecipe.of(config)               # from an experiment config (and a row)
        items = recipe.items_from_image(image, box)   # what `data prepare` cuts: the task's own code
        arrays = recipe.scaled(recipe.resized(items))  # what the runner trains on, before the fitted steps
        recipe.model_input(image, box, fitted)         # all of it, for a new image (`predict`)

    task: the prepare task (its `extract` cuts the items: crop rule, resize, GCN); options: its
    options; input_hw / input_channels: the model's input; input_scale: the intensity factor
    (255: 0-255 units); item_part: the part of a paired item (Coccomini) or None; label_map: the
    task's labels to the row's; class_names: the model's output classes; normalisation / offline:
    the training-part-dependent steps (their fitted values live in `FittedInputs`).
    """

    task: str
    options: dict
    input_hw: tuple[int, int]
    input_channels: int = 1
    input_scale: float = 1.0
    item_part: int | None = None
    label_map: dict = dataclasses.field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    normalisation: str = "none"
    offline: dict | None = None
    intensity: str = "format_range"

    @classmethod
    def of(cls, config, row=None) -> InputRecipe:
        """The recipe of an `ExperimentConfig` (and of one of its `ModelRow`s: its own input_scale)."""
        from mammo_keras.data.prepare import TASKS

        task = TASKS[config.task] if config.task in TASKS else None
        scale = row.input_scale if row is not None and row.input_scale is not None else config.input_scale
        options = task.resolve(config.task_options) if task is not None else dict(config.task_options)
        class_names = task.classes(options) if task is not None else ()
        if config.label_map:  # relabelled tasks (Coccomini): the prepared class names no longer apply
            class_names = tuple(f"class_{i}" for i in sorted(set(config.label_map.values())))
        return cls(config.task, options, tuple(config.input_hw),
                   int(config.input_channels), float(scale), config.item_part,
                   {int(k): int(v) for k, v in config.label_map.items()}, class_names,
                   config.normalisation, dict(config.offline_augment) or None)

    @property
    def canvas(self) -> float | None:
        """Canvas side / input side for tasks whose items are canvases (Jain & Levy), else None."""
        return self.options.get("canvas")

    @property
    def item_hw(self) -> tuple[int, int]:
        """The (rows, cols) prepared items are resized to: the input size, or the canvas around it."""
        if not self.canvas:
            return tuple(self.input_hw)
        return tuple(int(round(side * self.canvas)) for side in self.input_hw)

    @property
    def needs_roi(self) -> bool:
        """Lesion-ROI recipes need a lesion position; whole-image recipes (Shen) do not."""
        return self.task in ROI_TASKS

    @property
    def eval_crop(self) -> tuple[int, int] | None:
        return tuple(self.input_hw) if self.canvas else None

    def resized(self, items: np.ndarray) -> np.ndarray:
        """Prepared items (N, H, W) or pairs (N, parts, H, W) to the profile's size, part chosen."""
        return resize_items(items, self.item_part, self.item_hw)

    def scaled(self, arrays: np.ndarray) -> np.ndarray:
        return arrays * np.float32(self.input_scale) if self.input_scale != 1.0 else arrays

    def training_arrays(self, path, rows: np.ndarray) -> ItemRows:
        """The runner's arrays of a prepared images.npy (`path`): the items at `rows`, lazily (`ItemRows`:
        read, part chosen and resized per batch, never loaded whole); a row applies its own `scaled`."""
        return ItemRows.open(path).resized(self.item_part, self.item_hw)[np.asarray(rows, dtype=np.int64)]

    def items_from_image(self, image: np.ndarray, box=None, *, origin: str = "<image>") -> np.ndarray:
        """The item `data prepare` cuts from `image` for a lesion at `box` (None: a whole-image task),
        through the task's own `extract`."""
        import pandas as pd

        from mammo_keras.data.prepare import TASKS

        if self.task not in PREDICTABLE_TASKS:
            raise ValueError(f"items of task {self.task!r} come from several images or parts; a new image can "
                             f"be prepared for the tasks {PREDICTABLE_TASKS}. Received: task={self.task!r}")
        x0, y0, x1, y1 = box if box is not None else (np.nan,) * 4
        row = {"image_id": "query", "patient_id": "query", "lesion_id": "query", "path": origin,
               "abnormality": "mass" if box is not None else "normal", "pathology": "benign" if box is not None
               else "normal", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "source": "query", "laterality": "",
               "view": ""}
        items = TASKS[self.task].extract(image, pd.DataFrame([row]), TASKS[self.task].resolve(self.options))
        return np.stack([item.array for item in items]).astype(np.float32)

    def model_input(self, image: np.ndarray, box, fitted: FittedInputs, *, origin: str = "<image>") -> np.ndarray:
        """The (1, H, W) model input of a new image: cut, resized, scaled and transformed as in training."""
        return fitted.transform(self.scaled(self.resized(self.items_from_image(image, box, origin=origin))))

    def to_manifest(self) -> dict:
        """The `preprocessing` section of a saved model's manifest (`io.save` writes it)."""
        from mammo_keras.data.prepare import TASKS

        options = TASKS[self.task].recorded(self.options) if self.task in TASKS else dict(self.options)
        record = {"recipe": self.task, "options": options, "input_hw": list(self.input_hw),
                  "input_channels": self.input_channels, "input_scale": self.input_scale,
                  "intensity": self.intensity, "normalisation": self.normalisation}
        if self.item_part is not None:
            record["item_part"] = self.item_part
        if self.label_map:
            record["label_map"] = {str(k): v for k, v in self.label_map.items()}
        if self.offline:
            record["offline_augment"] = dict(self.offline)
        return record

    @classmethod
    def from_manifest(cls, record: dict, class_names) -> InputRecipe:
        from mammo_keras.data.prepare import TASKS

        task = record["recipe"]
        options = {**(TASKS[task].defaults if task in TASKS else {}), **dict(record.get("options") or {})}
        return cls(task, options, tuple(int(v) for v in record["input_hw"]), int(record.get("input_channels", 1)),
                   float(record.get("input_scale", 1.0)), record.get("item_part"),
                   {int(k): int(v) for k, v in (record.get("label_map") or {}).items()},
                   tuple(str(c) for c in class_names), record.get("normalisation", "none"),
                   record.get("offline_augment"), record.get("intensity", "format_range"))

    def fitted_from_manifest(self, record: dict, folder) -> FittedInputs:
        """The fitted steps a saved model recorded (mean grey inline, a mean image as its .npy file)."""
        fitted = FittedInputs(Normalisation(record.get("normalisation", "none")), None,
                              tuple(record["eval_crop"]) if record.get("eval_crop") else self.eval_crop)
        if "mean_grey" in record:
            fitted.mean = float(record["mean_grey"])
        elif record.get("mean_image_file"):
            fitted.mean = np.load(Path(folder) / record["mean_image_file"], allow_pickle=False)
        return fitted
