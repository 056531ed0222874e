"""`mammo-keras data prepare`: cut every paper's inputs from a dataset, resumably.

Layout of the output folder (`<out>`):

    items/<image_id>.npz   the arrays cut from one image, with their metadata and the key of what
                           they were cut from (`source_keys`: the image's record rows and its
                           file's size and mtime); written atomically once the whole image is
                           done, so a killed run resumes at the first image without one, and an
                           image whose records or file changed since is cut again
    images.npy             all items stacked (N, ...) float32, in index order; written through a
                           memory map image by image, and kept as it is when a run changes nothing
    index.csv              one row per item: item_id, image/patient/lesion ids, label, ...
    prepare.json           the task, options, counts, skipped files, fingerprints, timing, and what
                           images.npy was stacked from (`stack`; `stack_reused` when it was kept)
    contact_sheet.png      a grid of items per class, for a person to look at

Each task names which record rows it uses and how one image becomes arrays; the
runner (reading, workers, resume, bad-input policy, fingerprints) is shared.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_keras.data import patches
from mammo_keras.data import records as rec
from mammo_keras.data import roi
from mammo_keras.data.imageio import read_normalised
from mammo_keras.errors import DataError
from mammo_keras.registry import Registry
from mammo_keras.fileio import (atomic_npy_memmap, atomic_save_npy, atomic_write_bytes, atomic_write_json,
                               atomic_write_text)

FORMAT_VERSION = 2  # 2: Jain & Levy items are canvases with their window's extent


@dataclass(frozen=True)
class Item:
    """One prepared array and what it shows."""

    item_id: str
    array: np.ndarray
    label: int
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """How a paper's inputs are cut: which rows, how one image becomes items, class names.

    `select(table, options)` picks the record rows the task uses; `extract(image, rows, options)`
    cuts one image's items. `added_options` names options added after the task was first used
    whose default keeps the earlier behaviour: at their default they are left out of the recorded
    options (recipe.json, prepare.json, the plan, a saved model's manifest), so folders prepared
    before they existed are reused as they are; set to anything else they are recorded, and the
    items are cut again. `classes_for(options)` gives the class names where the options change
    them (the `shen` task's `label`); `check(options)` rejects bad option values before any work.
    """

    name: str
    description: str
    select: Callable[[pd.DataFrame, dict], pd.DataFrame]
    extract: Callable[[np.ndarray, pd.DataFrame, dict], list[Item]]
    class_names: tuple[str, ...]
    defaults: dict = field(default_factory=dict)
    chain: Callable[[dict], list[dict]] = lambda options: []  # the steps, in order, for the plan
    added_options: tuple[str, ...] = ()
    classes_for: Callable[[dict], tuple[str, ...]] | None = None
    check: Callable[[dict], None] = lambda options: None

    def resolve(self, options: dict | None = None) -> dict:
        """The task's defaults with `options` over them, checked.

        Raises:
            ValueError: an option the task does not take, or a value it rejects.
        """
        unknown = set(options or {}) - set(self.defaults)
        if unknown:
            raise ValueError(f"Task {self.name!r} takes options {sorted(self.defaults)}. Received: {sorted(unknown)}")
        resolved = {**self.defaults, **(options or {})}
        self.check(resolved)
        return resolved

    def recorded(self, options: dict) -> dict:
        """The options as recorded: `added_options` at their default are left out (see the class)."""
        return {key: value for key, value in options.items()
                if not (key in self.added_options and value == self.defaults[key])}

    def classes(self, options: dict | None = None) -> tuple[str, ...]:
        """The class names, by label, of items cut with these options."""
        return tuple(self.classes_for(self.resolve(options))) if self.classes_for else self.class_names

    def steps(self, options: dict | None = None) -> list[dict]:
        """What `extract` does to an image with these options, step by step (read first)."""
        read = {"step": "read", "what": "pixels to float in [0, 1] by the file format's value range "
                                         "(DICOM: VOI LUT, MONOCHROME1 inverted)"}
        return [read, *self.chain(self.resolve(options))]


TASKS: Registry[Task] = Registry("prepare task", listing="`mammo-keras data prepare --help`")


def register_task(task: Task) -> Task:
    return TASKS.register(task.name, task)


def _binary_lesions(table: pd.DataFrame, options: dict | None = None) -> pd.DataFrame:
    """Lesions with a box and a benign/malignant label (the ROI papers' inputs)."""
    chosen = rec.lesions(table, with_geometry=True)
    return chosen[chosen["pathology"].isin(["benign", "malignant"])]


def _lesion_label(row) -> int:
    return int(row.pathology == "malignant")


def _lesion_meta(row) -> dict:
    return {"lesion_id": row.lesion_id, "abnormality": row.abnormality, "pathology": row.pathology,
            "box": [row.x0, row.y0, row.x1, row.y1]}


def _extract_chougrad(image: np.ndarray, rows: pd.DataFrame, options: dict) -> list[Item]:
    items = []
    for row in rows.itertuples(index=False):
        array = roi.chougrad_roi(image, (row.x0, row.y0, row.x1, row.y1), r=options["r"],
                                 out_size=options["size"], grow_to_fit=options["grow_to_fit"],
                                 origin=f"{row.path} (lesion {row.lesion_id})")
        items.append(Item(row.lesion_id, array, _lesion_label(row), _lesion_meta(row)))
    return items


def _extract_jain_levy(image: np.ndarray, rows: pd.DataFrame, options: dict) -> list[Item]:
    items = []
    for row in rows.itertuples(index=False):
        array, (height, width) = roi.jain_levy_canvas(
            image, (row.x0, row.y0, row.x1, row.y1), context=options["context"], padding=options["padding"],
            factor=options["factor"], out_size=options["size"], canvas=options["canvas"],
            origin=f"{row.path} (lesion {row.lesion_id})")
        side = array.shape[0]  # the window's extent as a fraction of the canvas survives a resize
        meta = {**_lesion_meta(row), "window_rows": height / side, "window_cols": width / side}
        items.append(Item(row.lesion_id, array, _lesion_label(row), meta))
    return items


WHOLE_IMAGE_LABELS = {"malignancy": ("not malignant", "malignant"), "abnormal": ("normal", "abnormal")}
"""The `shen` task's `label` rules and their class names (label 0, label 1)."""


def _extract_shen_whole(image: np.ndarray, rows: pd.DataFrame, options: dict) -> list[Item]:
    first = rows.iloc[0]
    malignant = bool((rows["pathology"] == "malignant").any())
    abnormal = bool((rows["abnormality"] != "normal").any())  # any finding, with or without coordinates
    array = roi.shen_whole_image(image, size=(options["height"], options["width"]))
    meta = {"lesion_id": "", "abnormality": ",".join(sorted(set(rows["abnormality"]))),
            "pathology": "malignant" if malignant else rec.image_labels(rows)["pathology"].iloc[0],
            "box": []}
    label = abnormal if options["label"] == "abnormal" else malignant
    return [Item(first.image_id, array, int(label), meta)]


def _check_shen_whole(options: dict) -> None:
    if options["label"] not in WHOLE_IMAGE_LABELS:
        raise ValueError(f"The shen task's `label` is one of {sorted(WHOLE_IMAGE_LABELS)}. "
                         f"Received: label={options['label']!r}")


def _stable_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator that depends on the image only, so results do not depend on worker order."""
    return np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode())])


def _mass_and_calcification_lesions(table: pd.DataFrame, options: dict | None = None) -> pd.DataFrame:
    chosen = _binary_lesions(table)
    return chosen[chosen["abnormality"].isin(["mass", "calcification"])]


def _normal_images(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of images without any finding (every row of the image is normal): normal breasts.

    An image with a finding the patch tasks do not use (a distortion, or a lesion without
    coordinates) is not one: its background could not be kept off that finding.
    """
    normal = (table["abnormality"] == "normal").groupby(table["image_id"]).transform("all")
    return table[normal.to_numpy(dtype=bool)]


def _shen_patch_rows(table: pd.DataFrame, options: dict) -> pd.DataFrame:
    """Mass and calcification lesions with a box; with `normal_images`, also the normal images."""
    chosen = _mass_and_calcification_lesions(table)
    if options["normal_images"]:
        chosen = pd.concat([chosen, _normal_images(table)])
    return chosen


def _check_shen_patches(options: dict) -> None:
    count = options["normal_images"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("`normal_images` is the number of background patches per normal image, an integer "
                         f">= 0 (0: normal images give none). Received: normal_images={count!r}")


def _extract_shen_patches(image: np.ndarray, rows: pd.DataFrame, options: dict) -> list[Item]:
    size = (options["height"], options["width"])
    resized = roi.shen_whole_image(image, size=size)
    first = rows.iloc[0]
    rng = _stable_rng(options["seed"], first.image_id)
    image_mean = float(resized.mean())  # Shen subtracts the whole images' mean grey, patches included
    if (rows["abnormality"] == "normal").all():  # a normal breast (`normal_images`): background only
        sampled = patches.sample_background_patches(
            resized, [], count=options["normal_images"], patch_size=options["patch_size"], rng=rng,
            origin=str(first.path))
        return [Item(f"{first.image_id}_p{number:02d}", patch.array, 0,
                     {"lesion_id": "", "box": [float(v) for v in patch.box], "image_mean_grey": image_mean,
                      "abnormality": "background", "pathology": "normal"})
                for number, patch in enumerate(sampled)]
    scale_x, scale_y = patches.resize_factors(image.shape, size)
    scaled = patches.scale_geometry(rows, scale_x=scale_x, scale_y=scale_y)
    sampled = patches.sample_shen_patches(
        resized, scaled, patch_size=options["patch_size"], per_roi=options["per_roi"],
        min_overlap=options["min_overlap"], rng=rng, origin=str(first.path))
    items = []
    for number, patch in enumerate(sampled):
        lesion = scaled[scaled["lesion_id"] == patch.lesion_id]
        meta = {"lesion_id": patch.lesion_id or "", "box": [float(v) for v in patch.box], "image_mean_grey": image_mean,
                "abnormality": lesion["abnormality"].iloc[0] if len(lesion) else "background",
                "pathology": lesion["pathology"].iloc[0] if len(lesion) else "normal"}
        items.append(Item(f"{first.image_id}_p{number:02d}", patch.array, int(patch.label), meta))
    return items


def _extract_coccomini(image: np.ndarray, rows: pd.DataFrame, options: dict) -> list[Item]:
    items = []
    rng = _stable_rng(options["seed"], rows.iloc[0].image_id)
    for row in rows.itertuples(index=False):
        pair = patches.baseline_pair(image, (row.x0, row.y0, row.x1, row.y1), size=options["size"],
                                     rng=rng, origin=f"{row.path} (lesion {row.lesion_id})")
        if pair is None:  # as in the course data: a lesion without a baseline patch is dropped
            continue
        label = COCCOMINI_LABELS[(row.abnormality, row.pathology)]
        items.append(Item(row.lesion_id, np.stack(pair), label, _lesion_meta(row)))
    return items


COCCOMINI_LABELS = {("mass", "benign"): 1, ("mass", "malignant"): 2,
                    ("calcification", "benign"): 3, ("calcification", "malignant"): 4}

LESIONS = {"step": "select", "what": "lesions with a box and a benign/malignant pathology; benign=0 malignant=1"}

register_task(Task(
    "chougrad", "Chougrad 2018: r x r lesion ROI (r=300), GCN, 224 x 224; benign=0 malignant=1",
    _binary_lesions, _extract_chougrad, ("benign", "malignant"),
    {"r": 300, "size": 224, "grow_to_fit": True},
    lambda o: [LESIONS,
               {"step": "crop", "rule": "r x r window centred on the lesion box, clipped at the image border "
                                        "and rescaled to r x r", "r": o["r"],
                "grow_to_fit": o["grow_to_fit"]},
               {"step": "resize", "size": [o["size"], o["size"]], "filter": "bilinear (antialiased)"},
               {"step": "gcn", "what": "subtract the ROI's own mean (no division by its std)"}]))
register_task(Task(
    "jain_levy", "Jain & Levy: box + context padding, shorter side 224, kept on a 336 x 336 canvas (random "
    "224 crops for training, the centre 224 x 224 for evaluation); benign=0 malignant=1",
    _binary_lesions, _extract_jain_levy, ("benign", "malignant"),
    {"context": "proportional", "padding": 50, "factor": 2.0, "size": 224, "canvas": 1.5},
    lambda o: [LESIONS,
               {"step": "crop", "rule": "the lesion box with context, clipped at the image border",
                "context": o["context"], **({"factor": o["factor"]} if o["context"] == "proportional"
                                            else {"padding": o["padding"]})},
               {"step": "resize", "what": "shorter side to size, the other in proportion", "size": o["size"]},
               {"step": "canvas", "what": "kept centred on a square canvas (random training crops come from "
                                          "it; evaluation uses its centre square)", "side": round(o["size"] * o["canvas"])}]))
register_task(Task(
    "shen", "Shen 2017: whole image resized to 1152 x 896; malignant image=1 else 0 (option label=abnormal: "
    "any finding=1, normal image=0)",
    lambda table, options: table, _extract_shen_whole, WHOLE_IMAGE_LABELS["malignancy"],
    {"height": 1152, "width": 896, "label": "malignancy"},
    lambda o: [{"step": "select", "what": "every image; malignant=1 if any lesion on it is malignant, else 0 "
                                          "(benign or normal)"} if o["label"] == "malignancy" else
               {"step": "select", "label": o["label"],
                "what": "every image; abnormal=1 if any finding is on it (mass, calcification, distortion, "
                        "asymmetry; benign or malignant; with or without coordinates), normal=0"},
               {"step": "resize", "size": [o["height"], o["width"]], "filter": "bilinear (antialiased)"}],
    added_options=("label",), classes_for=lambda o: WHOLE_IMAGE_LABELS[o["label"]], check=_check_shen_whole))


def _shen_patch_steps(o: dict) -> list[dict]:
    steps = [{"step": "select", "what": "mass and calcification lesions with a box and a benign/malignant "
                                        "pathology; 5 classes: " + ", ".join(patches.SHEN_CLASSES)},
             {"step": "resize", "size": [o["height"], o["width"]], "what": "the whole image first"},
             {"step": "patches", "per_roi": o["per_roi"], "size": o["patch_size"],
              "min_overlap": o["min_overlap"],
              "what": "patches around each ROI (overlap ratio >= min_overlap) and as many background "
                      "patches from the same image"}]
    if o["normal_images"]:
        steps.append({"step": "normal_images", "per_image": o["normal_images"], "size": o["patch_size"],
                      "what": "background patches (label 0) from every image without any finding, resized "
                              "the same way and drawn by the same rule (at least 75% breast tissue, inside "
                              "the image; no lesion to avoid)"})
    return steps


for _per_roi in (1, 10):
    register_task(Task(
        f"shen_s{_per_roi}",
        f"Shen 2017 S{_per_roi}: {_per_roi} 224 x 224 patch(es) per ROI (overlap >= 0.9) + as many "
        "background patches, from the 1152 x 896 image; 5 classes (option normal_images=N: also N "
        "background patches per normal image)",
        _shen_patch_rows, _extract_shen_patches, patches.SHEN_CLASSES,
        {"height": 1152, "width": 896, "patch_size": 224, "per_roi": _per_roi, "min_overlap": 0.9,
         "seed": 0, "normal_images": 0},
        _shen_patch_steps, added_options=("normal_images",), check=_check_shen_patches))
register_task(Task(
    "coccomini", "Coccomini 2021: 150 x 150 lesion patch + adjacent baseline patch (item = [lesion, "
    "baseline]); labels 1-4 = mass/calcification x benign/malignant",
    _mass_and_calcification_lesions, _extract_coccomini,
    ("baseline", "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant"),
    {"size": 150, "seed": 0},
    lambda o: [{"step": "select", "what": "mass and calcification lesions with a box and a benign/malignant "
                                          "pathology; labels 1-4 = mass/calcification x benign/malignant"},
               {"step": "patch_pair", "size": [o["size"], o["size"]],
                "what": "the lesion's box and an adjacent, non-overlapping baseline patch of the same size, "
                        "each resized (nearest) to size; lesions without a baseline patch are dropped"}]))


@dataclass
class PrepareReport:
    """What a prepare run did; saved as prepare.json."""

    dataset: str
    task: str
    options: dict
    root: str
    out: str
    items: int = 0
    images: int = 0
    skipped: list[dict] = field(default_factory=list)
    resumed_images: int = 0
    changed_images: int = 0  # items found but cut again: their records or image file changed (`source_keys`)
    counts_by_label: dict = field(default_factory=dict)
    source_fingerprint: str = ""
    data_fingerprint: str = ""
    seconds: float = 0.0
    images_per_second: float = 0.0
    items_per_second: float = 0.0
    workers: int = 1
    item_shape: list[int] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    stack_reused: bool = False  # images.npy and index.csv kept from the previous run (nothing changed)
    stack: dict = field(default_factory=dict)  # what they were stacked from (`_finalise`), to tell next time


_UNSAFE_NAME_CHARACTERS = re.compile(r"[%/\\:\x00-\x1f\x7f]")


def item_file_name(image_id: str) -> str:
    """The item file's name for an image id, always one plain file name inside items/.

    Ids come from dataset files (a BCDR image_filename holds folders, a CSV may hold `../`), so
    `%`, path separators, `:` and control characters are %-escaped (`a/b` -> `a%2Fb`): distinct ids
    keep distinct names, `..` can only appear inside a name, and ids without those characters keep
    the names earlier versions gave them. A name over the file system's 255 bytes is cut and ends
    with a hash of the whole id.
    """
    name = _UNSAFE_NAME_CHARACTERS.sub(lambda match: f"%{ord(match.group()):02X}", str(image_id)) + ".npz"
    if len(name.encode()) > 255:
        digest = hashlib.sha256(str(image_id).encode()).hexdigest()[:16]
        name = name.encode()[:200].decode(errors="ignore") + f"~{digest}.npz"
    return name


def _item_file(out: Path, image_id: str) -> Path:
    return out / "items" / item_file_name(image_id)


def _process_image(task_name: str, path: str, rows: pd.DataFrame, options: dict,
                   out: str) -> tuple[str, int]:
    """Read one image, cut its items and save them with their metadata and source key (one atomic file)."""
    task = TASKS[task_name]
    first = rows.iloc[0]
    source = source_keys(rows)[str(first.image_id)]  # before the pixels are read: a file changed meanwhile
    image = read_normalised(path)
    items = task.extract(image, rows, options)
    classes = task.classes(options)
    metadata = [dict(item_id=item.item_id, image_id=first.image_id, patient_id=first.patient_id,
                     label=item.label, class_name=classes[item.label], source=first.source,
                     laterality=first.laterality, view=first.view, image_path=path,
                     **{k: v for k, v in item.meta.items() if k != "box"},
                     box=json.dumps(item.meta.get("box", [])))
                for item in items]
    buffer = io.BytesIO()
    arrays = np.stack([item.array for item in items]) if items else np.zeros((0,), np.float32)
    np.savez(buffer, arrays=arrays.astype(np.float32), metadata=np.array(json.dumps(metadata)),
             source=np.array(source))
    atomic_write_bytes(_item_file(Path(out), str(first.image_id)), buffer.getvalue())
    return str(first.image_id), len(items)


def _load_items(path: Path) -> tuple[np.ndarray, list[dict]]:
    """The arrays and metadata of an item file; the arrays' CRC is checked (np.load does not check
    it), so damage inside them raises instead of reaching images.npy."""
    with zipfile.ZipFile(path) as archive:
        arrays = np.load(io.BytesIO(archive.read("arrays.npy")), allow_pickle=False)
        metadata = np.load(io.BytesIO(archive.read("metadata.npy")), allow_pickle=False)
    return arrays, json.loads(str(metadata))


def _groups(selected: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    for image_id, rows in selected.groupby("image_id", sort=True):
        yield str(image_id), rows


def source_keys(table: pd.DataFrame) -> dict[str, str]:
    """Each image's source key: sha256 of what its items are cut from, its record rows as the task
    selected them (every column, in order, but the label file's line numbers, `*_line`: a line added
    above a row changes no item) and its image file's path, size and mtime_ns.

    An item file is reused only while its key is unchanged, so a relabelled lesion, a moved box or a
    replaced image is cut again, never kept stale. Each row's text is its values' str(), so the key of
    an image is the same computed from the whole table or from that image's rows alone.
    """
    columns = sorted(column for column in table.columns if not str(column).endswith("_line"))
    texts = ["\x1f".join(map(str, values)) for values in table[columns].to_numpy(dtype=object).tolist()]
    paths = [str(path) for path in table["path"]]
    stats = {path: _file_stat(Path(path)) for path in dict.fromkeys(paths)}
    keys = {}
    for image_id, positions in table.groupby("image_id", sort=True).indices.items():
        digest = hashlib.sha256()
        for position in positions:
            digest.update(texts[position].encode() + b"\n")
        for path in dict.fromkeys(paths[position] for position in positions):
            stat = stats[path]
            digest.update(f"{path}\t{stat[:2] if stat else None}\n".encode())
        keys[str(image_id)] = digest.hexdigest()
    return keys


def _stored_source(path: Path) -> str | None:
    """The source key an item file was cut from; None when it has none (cut before keys were kept) or
    cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["source"]) if "source" in data.files else None
    except (OSError, ValueError, KeyError, EOFError):
        return None


def source_fingerprint(table: pd.DataFrame, root: Path | None) -> str:
    """sha256 of the selected records (ids, labels, geometry) and each image file's name and size."""
    digest = hashlib.sha256()
    columns = ["image_id", "patient_id", "lesion_id", "abnormality", "pathology", "x0", "y0", "x1", "y1"]
    digest.update(table[columns].to_csv(index=False).encode())
    for path in sorted(set(table["path"])):
        name = os.path.relpath(path, root) if root else Path(path).name
        size = Path(path).stat().st_size if Path(path).is_file() else -1
        digest.update(f"{name}\t{size}\n".encode())
    return digest.hexdigest()


def prepare(dataset: str, table: pd.DataFrame, out: str | Path, task: str, *,
            root: str | Path | None = None, options: dict | None = None, workers: int = 1,
            skip_bad: bool = False, skip_missing: bool = False, progress: bool = True,
            contact_sheet: bool = True) -> PrepareReport:
    """Cut `task`'s inputs from `table` into `out`; resumes a killed run.

    Args:
        dataset: the dataset name, recorded in the report.
        table: the dataset's record table.
        out: output folder (created).
        task: one of TASKS.
        options: overrides of the task's defaults (e.g. {"r": 300}); recorded in prepare.json
            (`Task.recorded`: an option added later is left out at its default).
        workers: worker processes (1 = in this process; 0 = one per CPU core). Results do
            not depend on it: each image's randomness is seeded from its id.
        skip_bad: record unreadable images/lesions in the report and go on, instead of raising.
        skip_missing: the same for image files the table names but the folder lacks (a partial
            download; read the table with the reader's `missing="keep"`): they are recorded in
            the report's `skipped` list with reason "missing" and the rest is prepared.

    Raises:
        DataError: on the first bad (or missing) image unless skip_bad (or skip_missing); items already
            written stay, and the same command resumes after the problem is fixed.
    """
    TASKS.canonical(task)  # an unknown task raises, suggesting the close ones
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"`workers` must be an integer >= 0 (0: one per CPU core). Received: workers={workers!r}")
    workers = workers or os.cpu_count() or 1
    spec = TASKS[task]
    options = spec.resolve(options)
    out = Path(out)
    _discard_damaged_recipe(out)
    _forget_other_recipe(out, task, spec.recorded(options))
    (out / "items").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = PrepareReport(dataset, task, spec.recorded(options), str(root or ""), str(out))
    skip = _skip_policy(skip_bad, skip_missing)
    if skip_missing:  # before the task selects: a lesion row of a missing image may lack geometry too
        present = np.array([Path(path).is_file() for path in table["path"]], dtype=bool)
        for image_id, rows in _groups(table[~present]):
            _skipped(report, image_id, rows, DataError(rows.iloc[0]["path"], "image file not found"))
        table = table[present]
    selected = spec.select(table, options)
    if selected.empty:
        raise DataError(root, f"dataset {dataset!r} has no rows usable for task {task!r}")
    groups = list(_groups(selected))
    _discard_damaged_items(out, groups)
    keys = source_keys(selected)
    found = {image_id: _item_file(out, image_id).is_file() for image_id, _ in groups}
    current = {image_id: found[image_id] and _stored_source(_item_file(out, image_id)) == keys[image_id]
               for image_id, _ in groups}
    pending = [(image_id, rows) for image_id, rows in groups if not current[image_id]]
    report.resumed_images = len(groups) - len(pending)
    report.changed_images = sum(found[image_id] for image_id, _ in pending)  # cut again: records or file changed
    _run(task, pending, options, out, workers, skip, progress, report)
    skipped_ids = {entry["image_id"] for entry in report.skipped}
    processed = len({image_id for image_id, _ in pending} - skipped_ids)
    _finalise(spec, [g for g in groups if g[0] not in skipped_ids], out, report, changed=processed > 0)
    report.source_fingerprint = source_fingerprint(selected, Path(root) if root else None)
    report.seconds = round(time.perf_counter() - started, 3)
    report.images_per_second = round(processed / report.seconds, 2) if report.seconds else 0.0
    report.items_per_second = round(report.items / report.seconds, 2) if report.seconds else 0.0
    report.workers = workers
    atomic_write_json(out / "prepare.json", asdict(report))
    if contact_sheet and report.items and not (report.stack_reused and (out / "contact_sheet.png").is_file()):
        from mammo_keras.data.contact_sheet import contact_sheet as draw

        draw(*load_prepared(out), out / "contact_sheet.png", title=out.name)
    return report


def _forget_other_recipe(out: Path, task: str, options: dict) -> None:
    """Items cut with another task, other options or an older format are not reused: remove them.

    Items of this recipe are reused image by image while their records and file are unchanged
    (`source_keys`, checked in `prepare`)."""
    key = {"task": task, "options": options, "format_version": FORMAT_VERSION}
    marker = out / "recipe.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(key)):
        return
    items = out / "items"
    if items.is_dir():
        for path in items.glob("*.npz"):
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, key)


def _discard_damaged_recipe(out: Path) -> None:
    """A recipe.json that does not parse is removed, with a warning naming it.

    Without it nobody knows which task and options the items were cut with, so none may be reused:
    treated as absent, every item is cut again (the items are a cache of the dataset), which gives
    the same results as a fresh folder; stopping instead would only make the user delete it.
    """
    marker = out / "recipe.json"
    if not marker.is_file():
        return
    try:
        json.loads(marker.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        warnings.warn(f"{marker}: damaged ({error}); the items under {out / 'items'} are cut again")
        marker.unlink()


def _discard_damaged_items(out: Path, groups: list) -> None:
    """Item files of this run that are not readable .npz files (0 bytes, truncated by a full disk or
    a copy) are removed, so that the run cuts them again instead of failing while stacking.

    Only the zip directory and the metadata are read; damage inside the arrays is found by `_finalise`.
    """
    for image_id, _ in groups:
        path = _item_file(out, image_id)
        if path.is_file() and not _item_readable(path):
            warnings.warn(f"{path}: damaged item file; it is cut again")
            path.unlink()


def _item_readable(path: Path) -> bool:
    """Whether an item file opens as an .npz holding `arrays` and parseable `metadata`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "arrays" not in data.files:
                return False
            return isinstance(json.loads(str(data["metadata"])), list)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return False


def _skip_policy(skip_bad: bool, skip_missing: bool) -> Callable[[str], bool]:
    """Whether an image (by its path) that failed is recorded and skipped instead of raising."""
    def skip(path: str) -> bool:
        return bool(skip_bad or (skip_missing and not Path(path).is_file()))
    return skip


def _skipped(report: PrepareReport, image_id: str, rows: pd.DataFrame, error: Exception) -> None:
    """Record one skipped image in the report (prepare.json `skipped`): reason "missing" or "bad"."""
    path = str(rows.iloc[0]["path"])
    report.skipped.append({"image_id": image_id, "path": path, "error": str(error),
                           "reason": "bad" if Path(path).is_file() else "missing"})


def _run(task: str, pending: list, options: dict, out: Path, workers: int,
         skip: Callable[[str], bool], progress: bool, report: PrepareReport) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc=f"prepare {task} ({workers} worker{'s' * (workers > 1)})", unit="img",
               disable=not progress)

    def failed(image_id: str, rows: pd.DataFrame, error: Exception) -> None:
        if not skip(str(rows.iloc[0]["path"])):
            bar.close()
            raise error
        _skipped(report, image_id, rows, error)

    if workers <= 1:
        for image_id, rows in pending:
            try:
                _process_image(task, str(rows.iloc[0]["path"]), rows, options, str(out))
            except DataError as error:
                failed(image_id, rows, error)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_process_image, task, str(rows.iloc[0]["path"]), rows, options,
                                   str(out)): (image_id, rows) for image_id, rows in pending}
            for future in as_completed(futures):
                image_id, rows = futures[future]
                try:
                    future.result()
                except DataError as error:
                    failed(image_id, rows, error)
                bar.update()
    bar.close()


def _finalise(spec: Task, groups: list, out: Path, report: PrepareReport, *, changed: bool = True) -> None:
    """Stack every image's items in a fixed order into images.npy + index.csv, streamed.

    images.npy is filled image by image from `items/*.npz` through a memory map (`atomic_npy_memmap`),
    so memory holds one image's items, not the stack; the data fingerprint is the sha256 of the
    stack's bytes (fed image by image, the same value as hashing the whole stack) and of the
    index's item_id,label CSV. When nothing `changed` in this run (no image was cut) and
    images.npy, index.csv and the item files are those the previous prepare.json recorded
    (`_reusable_stack`), the files are kept as they are (`stack_reused`).
    """
    files = [_item_file(out, image_id) for image_id, _ in groups]
    signature = _items_signature(files)
    previous = None if changed else _reusable_stack(out, signature)
    report.images = len(groups)
    if previous is not None and previous["items"]:
        report.items, report.item_shape = previous["items"], previous["item_shape"]
        report.data_fingerprint, report.counts_by_label = previous["data_fingerprint"], previous["counts_by_label"]
        report.stack, report.stack_reused = previous["stack"], True
        return
    metadata, shapes = [], []
    for path in files:  # first pass: metadata and array shapes only, to size the stack
        with _damaged_item_named(path), np.load(path, allow_pickle=False) as data:
            image_meta = json.loads(str(data["metadata"]))
            metadata.extend(image_meta)
            shapes.append(_stored_shape(data, "arrays") if image_meta else None)
    if not metadata:
        _refuse_empty(out, report)
    index = pd.DataFrame(metadata)
    item_shapes = {shape[1:] for shape in shapes if shape is not None}
    if len(item_shapes) > 1:
        raise ValueError(f"Every item of one task has one shape, to be stacked. Received: shapes {sorted(item_shapes)} "
                         f"in {out / 'items'}")
    digest = hashlib.sha256()
    if metadata:
        item_shape = item_shapes.pop()
        with atomic_npy_memmap(out / "images.npy", (len(metadata), *item_shape), np.float32) as stack:
            start = 0
            for path, shape in zip(files, shapes):
                if shape is None:
                    continue
                with _damaged_item_named(path):
                    arrays = np.ascontiguousarray(_load_items(path)[0], dtype=np.float32)
                stack[start:start + len(arrays)] = arrays
                digest.update(arrays.tobytes())  # the C-order bytes of the stack, image by image
                start += len(arrays)
    else:
        item_shape = ()
        atomic_save_npy(out / "images.npy", np.zeros((0,), np.float32))
    atomic_write_text(out / "index.csv", index.to_csv(index=False))
    digest.update(index[["item_id", "label"]].to_csv(index=False).encode() if len(index) else b"")
    report.items = len(index)
    report.item_shape = list(item_shape)
    report.data_fingerprint = digest.hexdigest()
    if len(index):
        counts = index["class_name"].value_counts().sort_index()
        report.counts_by_label = {str(k): int(v) for k, v in counts.items()}
    report.stack = {"items": signature, "images.npy": _file_stat(out / "images.npy"),
                    "index.csv": _file_stat(out / "index.csv")}


@contextlib.contextmanager
def _damaged_item_named(path: Path) -> Iterator[None]:
    """An item file that fails to read while stacking (damage `_discard_damaged_items` cannot see
    without reading every array) raises a DataError naming it; the next run cuts it again."""
    try:
        yield
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(path, f"damaged item file ({error}); delete it and run the same command "
                              "again to cut it again") from None


def _refuse_empty(out: Path, report: PrepareReport) -> None:
    """No item was cut: raise, after removing a previous run's stack, so that nothing in `out` reads
    as a prepared dataset (an empty stack would only fail later, in training, without a file named)."""
    for name in ("images.npy", "index.csv", "prepare.json", "contact_sheet.png"):
        (out / name).unlink(missing_ok=True)
    skipped = (f"; {len(report.skipped)} image(s) skipped, the first: {report.skipped[0]['error']}"
               if report.skipped else "")
    raise DataError(out, f"0 items cut from {report.root or '<table>'} for task {report.task!r} "
                         f"({report.images} image(s) selected{skipped})")


def _stored_shape(data, name: str) -> tuple[int, ...]:
    """The shape of array `name` in an open .npz, from its .npy header (the array is not read)."""
    with data.zip.open(f"{name}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version in readers:
            return tuple(readers[version](stream)[0])
    return data[name].shape


def _file_stat(path: Path) -> list[int] | None:
    """[size, mtime_ns, inode] of a file, None when it is missing.

    The inode is there because a file replaced atomically gets a new one: an item cut again within the
    file system's timestamp granularity, at the same size, still reads as changed.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _items_signature(files: list[Path]) -> str:
    """sha256 of the item files' names, in stacking order, with their size, mtime_ns and inode."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\t{_file_stat(path)}\n".encode())
    return digest.hexdigest()


def _reusable_stack(out: Path, signature: str) -> dict | None:
    """The previous prepare.json when images.npy and index.csv are still the ones it recorded for these
    item files (same names in the same order, same size, mtime_ns and inode), else None."""
    try:
        previous = json.loads((out / "prepare.json").read_text())
        stack = previous.get("stack") or {}
        if (previous.get("format_version") != FORMAT_VERSION or stack.get("items") != signature
                or any(stack.get(name) != _file_stat(out / name) for name in ("images.npy", "index.csv"))):
            return None
        images = np.load(out / "images.npy", mmap_mode="r")  # reads the header only
        items, item_shape = int(previous["items"]), list(previous["item_shape"])
        if images.shape != ((items, *item_shape) if items else (0,)) or images.dtype != np.float32:
            return None
        previous["counts_by_label"] = dict(previous.get("counts_by_label") or {})
        if not isinstance(previous.get("data_fingerprint"), str):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return previous


def load_prepared(folder: str | Path, *, mmap: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """The stacked arrays and the index of a prepared folder.

    Raises:
        DataError: images.npy or index.csv missing, unreadable or empty, or their lengths differ,
            naming the file.
    """
    folder = Path(folder)
    for name in ("images.npy", "index.csv"):
        if not (folder / name).is_file():
            raise DataError(folder / name, "prepared file missing: run `mammo-keras data prepare` first")
    try:
        images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(folder / "images.npy", f"not a readable .npy stack ({error}); run "
                                               "`mammo-keras data prepare` again") from None
    try:
        index = pd.read_csv(folder / "index.csv", keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise DataError(folder / "index.csv", f"empty or damaged index ({error}); run "
                                              "`mammo-keras data prepare` again") from None
    if not len(index):
        raise DataError(folder / "index.csv", "the index lists no items; run `mammo-keras data prepare` again")
    if len(index) != len(images):
        raise DataError(folder / "index.csv", f"index has {len(index)} rows but images.npy has {len(images)}")
    return images, index
