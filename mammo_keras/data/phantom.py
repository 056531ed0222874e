"""Deterministic synthetic mammograms: the embedded default dataset.

Every experiment can run on a fresh machine with no real data: `read()` renders a
small set of 16-bit PNG "mammograms" once into a cache folder and returns the same
record table as the real readers, with `source == "phantom"` and a `synthetic`
column that is always True. Nothing here is a medical image; numbers obtained on
it say only that the code runs and learns an easy, known signal.

What the images contain (sizes given for the default 1024x832, scaled otherwise):
    breast     a half-ellipse against the chest wall (left edge for laterality L,
               right edge for R) on a dark background; MLO views add a bright
               pectoral-muscle triangle in the upper chest-wall corner
    tissue     multi-scale filtered noise (fibroglandular texture) over a smooth
               density gradient that falls off towards the skin line
    benign     mass: circumscribed round/oval, smooth edge (radius 15-60 px);
               calcification: a few coarse round specks
    malignant  mass: lobulated core with 10-18 radiating spicules;
               calcification: many fine pleomorphic specks in a ductal cluster
    normal     no lesion
Each abnormal image has one lesion, placed so that its bounding box lies inside
the breast (away from the skin line and the pectoral muscle). The lesion outline
is stored as a contour and as a full-size 8-bit mask PNG.

Determinism: the class schedule comes from `seed`, and image `i` is rendered from
`np.random.default_rng([seed, i + 1])`, so the same parameters give byte-identical
pixels on one platform. (numpy's vectorised float32 tanh/cos may differ in the last
bit between CPU families, which can move a rare pixel by 1 after rounding.)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

from mammo_keras import settings
from mammo_keras.data import records
from mammo_keras.fileio import atomic_write_bytes, atomic_write_text

SOURCE = "phantom"
GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.csv"
BACKGROUND_LEVEL = 1000.0
MIN_IMAGE_SIZE = (128, 104)
VIEW_ORDER = (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO"))
# One cycle of image classes (abnormality, pathology): balanced benign/malignant, 1 normal in 5.
KINDS_WITH_CALCIFICATIONS = (("mass", "benign"), ("mass", "malignant"),
                             ("calcification", "benign"), ("calcification", "malignant"),
                             ("normal", "normal"))
KINDS_MASSES_ONLY = (("mass", "benign"), ("mass", "malignant"),
                     ("mass", "benign"), ("mass", "malignant"), ("normal", "normal"))
DEFAULTS = {"n_patients": 12, "images_per_patient": 2, "seed": 0,
            "image_size": (1024, 832), "calcifications": True}

NAME = "phantom"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('phantom',)  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ()
LAYOUT = """\
<root>/<parameter hash>/          one folder per set of generation parameters
    manifest.json                 generator version, parameters, file list (written last)
    records.csv                   the record table (paths relative to this folder)
    phantom_P001_L_CC.png         16-bit greyscale image, one per view
    phantom_P001_L_CC_mask1.png   8-bit lesion mask (255 inside the lesion)
"""
HOW_TO_GET = ("Nothing to download: the phantom is rendered on first use by "
              "mammo_keras.data.phantom.read() (a few seconds) into ~/.cache/mammo_keras/phantom.")


@dataclass(frozen=True)
class PhantomLesion:
    """One rendered lesion; `mask` is a local crop whose top-left pixel is (x, y) = offset."""

    abnormality: str
    pathology: str
    shape: str
    mask: np.ndarray
    offset: tuple[int, int]
    contour: list[tuple[float, float]]

    def full_mask(self, image_size: tuple[int, int]) -> np.ndarray:
        """The lesion mask as a boolean array of the whole image."""
        full = np.zeros(image_size, dtype=bool)
        x, y = self.offset
        height, width = self.mask.shape
        full[y:y + height, x:x + width] = self.mask
        return full


@dataclass(frozen=True)
class PhantomImage:
    """A rendered image: 16-bit pixels, the breast region and its lesions."""

    pixels: np.ndarray
    breast: np.ndarray
    lesions: tuple[PhantomLesion, ...]


def cache_dir() -> Path:
    """The per-user cache folder of mammo_keras (`settings.cache_dir`)."""
    return settings.cache_dir()


def parameters(**options) -> dict:
    """Generation parameters with defaults filled in and checked.

    Raises:
        ValueError: an unknown option or a value out of range.
    """
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown phantom option. Valid options: {sorted(DEFAULTS)}. "
                         f"Received: {unknown}")
    params = {**DEFAULTS, **options}
    params["image_size"] = tuple(int(v) for v in params["image_size"])
    for name in ("n_patients", "images_per_patient", "seed"):
        params[name] = int(params[name])
    params["calcifications"] = bool(params["calcifications"])
    if params["n_patients"] < 1:
        raise ValueError(f"n_patients must be at least 1. Received: n_patients={params['n_patients']}")
    if not 1 <= params["images_per_patient"] <= len(VIEW_ORDER):
        raise ValueError("images_per_patient must be between 1 and 4 (L/R x CC/MLO). "
                         f"Received: images_per_patient={params['images_per_patient']}")
    size = params["image_size"]
    if len(size) != 2 or size[0] < MIN_IMAGE_SIZE[0] or size[1] < MIN_IMAGE_SIZE[1]:
        raise ValueError(f"image_size must be (rows, columns) of at least {MIN_IMAGE_SIZE}. "
                         f"Received: image_size={params['image_size']}")
    return params


def parameter_hash(params: dict) -> str:
    """A short stable hash of the generator version and parameters (the cache folder name)."""
    text = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read(root: str | Path | None = None, **options) -> pd.DataFrame:
    """The phantom record table, rendered into `root/<parameter hash>/` on first use.

    Args:
        root: cache folder; None means `cache_dir() / "phantom"`.
        **options: the keyword arguments of `generate` (n_patients, images_per_patient,
            seed, image_size, calcifications).
    """
    params = parameters(**options)
    base = Path(root).expanduser() if root is not None else cache_dir() / "phantom"
    return generate(base / parameter_hash(params), **params)


def generate(out_dir: str | Path, *, n_patients: int = 12, images_per_patient: int = 2,
             seed: int = 0, image_size: tuple[int, int] = (1024, 832),
             calcifications: bool = True) -> pd.DataFrame:
    """Render the phantom set into `out_dir` and return its record table.

    Idempotent: when `out_dir` already holds a manifest with the same parameters and
    all its files, nothing is rewritten. Every file is written to a temporary name
    and moved into place; the manifest is written last, so an interrupted run is
    redone rather than reused.

    Args:
        images_per_patient: views per woman, taken in the order L-CC, R-CC, L-MLO, R-MLO.
        image_size: (rows, columns) of every image.
        calcifications: include calcification clusters; otherwise all lesions are masses.
    """
    params = parameters(n_patients=n_patients, images_per_patient=images_per_patient, seed=seed,
                        image_size=image_size, calcifications=calcifications)
    out_dir = Path(out_dir).expanduser().resolve()
    if _is_complete(out_dir, params):
        return _load_records(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = class_schedule(params["n_patients"] * params["images_per_patient"], params["seed"],
                           calcifications=params["calcifications"])
    rows, files = [], []
    for index, (abnormality, pathology) in enumerate(kinds):
        patient = f"phantom_P{index // params['images_per_patient'] + 1:03d}"
        laterality, view = VIEW_ORDER[index % params["images_per_patient"]]
        image_id = f"{patient}_{laterality}_{view}"
        image = render_image(params["seed"], index, laterality=laterality, view=view,
                             abnormality=abnormality, pathology=pathology,
                             image_size=params["image_size"])
        _write_png(out_dir / f"{image_id}.png", image.pixels)
        files.append(f"{image_id}.png")
        base = {"image_id": image_id, "patient_id": patient, "path": f"{image_id}.png",
                "source": SOURCE, "laterality": laterality, "view": view, "synthetic": True}
        if not image.lesions:
            rows.append({**base, "abnormality": "normal", "pathology": "normal", "shape": "",
                         "contour": None})
        for number, lesion in enumerate(image.lesions, start=1):
            mask_name = f"{image_id}_mask{number}.png"
            _write_png(out_dir / mask_name,
                       lesion.full_mask(params["image_size"]).astype(np.uint8) * 255)
            files.append(mask_name)
            rows.append({**base, "lesion_id": f"{image_id}_{number}",
                         "abnormality": lesion.abnormality, "pathology": lesion.pathology,
                         "shape": lesion.shape, "mask_path": mask_name,
                         **records.contour_geometry(lesion.contour)})
    table = records.make_table(rows, origin=str(out_dir / RECORDS))
    as_json = table["contour"].map(lambda c: json.dumps(c) if isinstance(c, list) else "")
    table = table.assign(contour=as_json)
    atomic_write_text(out_dir / RECORDS, table.to_csv(index=False))
    manifest = {"generator_version": GENERATOR_VERSION, "parameters": params,
                "records": RECORDS, "files": files}
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, default=list))
    return _load_records(out_dir)


def class_schedule(n_images: int, seed: int, *, calcifications: bool = True) -> list[tuple[str, str]]:
    """(abnormality, pathology) per image: the class cycle repeated, then shuffled by `seed`.

    With calcifications the cycle is benign mass, malignant mass, benign calcification,
    malignant calcification, normal, so counts differ by at most one between classes.
    """
    cycle = KINDS_WITH_CALCIFICATIONS if calcifications else KINDS_MASSES_ONLY
    kinds = [cycle[i % len(cycle)] for i in range(n_images)]
    order = np.random.default_rng(seed).permutation(n_images)
    return [kinds[i] for i in order]


def render_image(seed: int, index: int, *, laterality: str, view: str, abnormality: str,
                 pathology: str, image_size: tuple[int, int] = (1024, 832)) -> PhantomImage:
    """Render image number `index` of the set with `seed` (pure function of its arguments)."""
    rng = np.random.default_rng([seed, index + 1])
    height, width = image_size
    scale = min(height / 1024.0, width / 832.0)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    from_wall = cols if laterality == "L" else (width - 1) - cols
    semi_x = width * rng.uniform(0.78, 0.9)
    semi_y = height * rng.uniform(0.40, 0.46)
    centre_y = height * (0.5 + rng.uniform(-0.04, 0.04))
    rho2 = (from_wall / semi_x) ** 2 + ((rows - centre_y) / semi_y) ** 2
    breast = rho2 < 1.0
    thickness = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))
    low = _smooth_noise(rng, image_size, max(4, round(90 * scale)))
    mid = _smooth_noise(rng, image_size, max(3, round(24 * scale)))
    fine = _smooth_noise(rng, image_size, max(2, round(6 * scale)))
    gland = _sigmoid(1.6 * low + 0.8 * mid + 2.5 * (thickness - 0.6))
    tissue = 9000 + 15000 * np.sqrt(thickness) + 14000 * gland * thickness + 1500 * fine
    tissue += 300 * rng.standard_normal(image_size, dtype=np.float32)
    skin = np.clip((1.0 - rho2) / 0.02, 0.0, 1.0)
    pixels = BACKGROUND_LEVEL + skin * (tissue - BACKGROUND_LEVEL)
    pixels += 150 * rng.standard_normal(image_size, dtype=np.float32)
    allowed = rho2 < 0.85 ** 2
    if view == "MLO":
        muscle_x, muscle_y = width * rng.uniform(0.25, 0.35), height * rng.uniform(0.45, 0.6)
        reach = 1.0 - from_wall / muscle_x - rows / muscle_y
        pixels += 12000 * _sigmoid(reach * 40.0) * breast
        allowed &= reach < -0.1
    lesions = []
    if abnormality != "normal":
        lesion, intensity = _place_lesion(rng, abnormality, pathology, scale, allowed)
        x, y = lesion.offset
        h, w = intensity.shape
        pixels[y:y + h, x:x + w] += intensity
        lesions.append(lesion)
    pixels = np.clip(np.rint(pixels), 0, 65535).astype(np.uint16)
    return PhantomImage(pixels=pixels, breast=breast, lesions=tuple(lesions))


def _place_lesion(rng: np.random.Generator, abnormality: str, pathology: str, scale: float,
                  allowed: np.ndarray) -> tuple[PhantomLesion, np.ndarray]:
    """Draw a lesion and a centre whose whole local box lies inside `allowed`."""
    padded = np.pad(allowed, 1)
    room = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
    for attempt in range(6):
        shrink = 0.8 ** attempt
        draw = _RENDERERS[(abnormality, pathology)]
        mask, intensity, shape = draw(rng, scale * shrink, shrink)
        half = mask.shape[0] // 2
        candidates = np.flatnonzero(room.ravel() > half + 2)
        if len(candidates):
            cy, cx = np.unravel_index(rng.choice(candidates), room.shape)
            offset = (int(cx) - half, int(cy) - half)
            contour = _contour(mask, star=abnormality == "mass")
            contour = [(x + offset[0], y + offset[1]) for x, y in contour]
            lesion = PhantomLesion(abnormality, pathology, shape, mask, offset, contour)
            return lesion, intensity
    raise ValueError("The breast is too small to hold a lesion; use a larger image_size. "
                     f"Received: image_size={allowed.shape}")


def _local_grid(extent: float) -> tuple[np.ndarray, np.ndarray]:
    half = int(math.ceil(extent)) + 3
    axis = np.arange(-half, half + 1, dtype=np.float32)
    return axis[None, :], axis[:, None]


def _radius_range(size: float, floor: float) -> tuple[float, float]:
    """Mass core radius range: 15-60 px at 1024x832, never below 8-16 px times `floor`."""
    return max(15.0 * size, 8.0 * floor), max(60.0 * size, 16.0 * floor)


def _benign_mass(rng: np.random.Generator, size: float, floor: float):
    """Circumscribed round/oval mass with a smooth (sigmoid) edge."""
    radius = rng.uniform(*_radius_range(size, floor))
    aspect = rng.uniform(0.65, 1.0)
    angle = rng.uniform(0, np.pi)
    dx, dy = _local_grid(radius)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho = np.sqrt((u / radius) ** 2 + (v / (aspect * radius)) ** 2)
    amplitude = rng.uniform(9000, 13000)
    dome = 0.85 + 0.15 * np.sqrt(np.clip(1 - rho ** 2, 0, 1))
    intensity = amplitude * dome * _sigmoid((1 - rho) * radius / 1.5)
    return rho <= 1.0, intensity, "round" if aspect > 0.85 else "oval"


def _malignant_mass(rng: np.random.Generator, size: float, floor: float):
    """Irregular lobulated core with radiating tapered spicules."""
    radius = rng.uniform(*_radius_range(size, floor))
    harmonics = np.arange(3, 8)
    weights = rng.uniform(0.03, 0.09, len(harmonics))
    phases = rng.uniform(0, 2 * np.pi, len(harmonics))
    n_spicules = int(rng.integers(10, 19))
    angles = (np.arange(n_spicules) + rng.uniform(-0.3, 0.3, n_spicules)) * 2 * np.pi / n_spicules
    lengths = radius * rng.uniform(1.5, 2.2, n_spicules)
    base = max(1.5, 0.12 * radius)
    dx, dy = _local_grid(max(lengths.max(), radius * (1 + weights.sum())))
    rho = np.sqrt(dx ** 2 + dy ** 2)
    theta = np.arctan2(dy, dx)
    edge = radius * (1 + np.tensordot(weights, np.cos(harmonics[:, None, None] * theta
                                                        + phases[:, None, None]), axes=1))
    amplitude = rng.uniform(9000, 13000)
    core = amplitude * _sigmoid((edge - rho) / 0.8)
    delta = theta[None] - angles[:, None, None]
    along = rho[None] * np.cos(delta)
    across = rho[None] * np.abs(np.sin(delta))
    width = base * (1 - along / lengths[:, None, None]) + 0.6
    inside_length = (along > 0) & (along < lengths[:, None, None])
    spicule = np.where(inside_length, _sigmoid((width - across) / 0.5), 0.0).max(axis=0)
    mask = (rho <= edge) | (inside_length & (across < width)).any(axis=0)
    intensity = np.maximum(core, 0.6 * amplitude * spicule)
    return mask, intensity, "spiculated"


def _calcification_cluster(rng: np.random.Generator, size: float, floor: float, *,
                           malignant: bool):
    """A cluster of bright specks: few coarse round (benign) or many fine pleomorphic (malignant)."""
    if malignant:
        spread = max(rng.uniform(25, 45) * size, 14.0 * floor)
    else:
        spread = max(rng.uniform(18, 35) * size, 8.0 * floor)
    count = int(rng.integers(12, 26)) if malignant else int(rng.integers(3, 7))
    dx, dy = _local_grid(spread + 6)
    if malignant:
        axis = rng.uniform(0, np.pi)
        along = rng.uniform(-1, 1, count) * spread
        across = rng.normal(0, 0.35, count) * spread
        xs = np.clip(along * np.cos(axis) - across * np.sin(axis), -spread, spread)
        ys = np.clip(along * np.sin(axis) + across * np.cos(axis), -spread, spread)
        long_axes = rng.uniform(0.8, 2.0, count) * max(1.0, 1.5 * size)
        short_axes = long_axes * rng.uniform(0.3, 1.0, count)
    else:
        distance = spread * np.sqrt(rng.uniform(0, 1, count))
        direction = rng.uniform(0, 2 * np.pi, count)
        xs, ys = distance * np.cos(direction), distance * np.sin(direction)
        long_axes = rng.uniform(2.5, 4.0, count) * max(1.0, size) + 1.0
        short_axes = long_axes * rng.uniform(0.85, 1.0, count)
    tilt = rng.uniform(0, np.pi, count)
    intensity = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=np.float32)
    specks = np.zeros(intensity.shape, dtype=bool)
    for x, y, a, b, t in zip(xs, ys, long_axes, short_axes, tilt):
        u = (dx - x) * np.cos(t) + (dy - y) * np.sin(t)
        v = -(dx - x) * np.sin(t) + (dy - y) * np.cos(t)
        r2 = (u / a) ** 2 + (v / b) ** 2
        intensity = np.maximum(intensity, 22000 * np.exp(-r2))
        specks |= r2 <= 1.0
        specks[int(round(y)) + dy.shape[0] // 2, int(round(x)) + dx.shape[1] // 2] = True
    region = _filled_hull(ndimage.binary_dilation(specks, iterations=2))
    return region, intensity, "pleomorphic" if malignant else "coarse"


_RENDERERS: dict[tuple[str, str], Callable] = {
    ("mass", "benign"): _benign_mass,
    ("mass", "malignant"): _malignant_mass,
    ("calcification", "benign"): partial(_calcification_cluster, malignant=False),
    ("calcification", "malignant"): partial(_calcification_cluster, malignant=True),
}


def _hull_points(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    return points[ConvexHull(points).vertices]


def _filled_hull(mask: np.ndarray) -> np.ndarray:
    canvas = Image.new("L", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in _hull_points(mask)], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool) | mask


def _contour(mask: np.ndarray, *, star: bool) -> list[tuple[float, float]]:
    """Outline points (x, y) of a local mask, ordered by angle around the crop centre.

    Star-shaped masks (masses) keep the farthest pixel in each of 256 angle bins plus
    the extreme pixels, so the contour follows spicules and its box equals the mask's;
    calcification regions are convex hulls.
    """
    if not star:
        return [(float(x), float(y)) for x, y in _hull_points(mask)]
    ys, xs = np.nonzero(mask)
    centre = mask.shape[0] // 2
    angle = np.arctan2(ys - centre, xs - centre)
    distance = np.hypot(ys - centre, xs - centre)
    bins = np.minimum(((angle + np.pi) / (2 * np.pi) * 256).astype(int), 255)
    order = np.lexsort((-distance, bins))
    first = order[np.r_[True, bins[order][1:] != bins[order][:-1]]]
    extremes = [np.argmin(xs), np.argmax(xs), np.argmin(ys), np.argmax(ys)]
    keep = np.unique(np.concatenate([first, extremes]))
    keep = keep[np.argsort(angle[keep], kind="stable")]
    return [(float(xs[i]), float(ys[i])) for i in keep]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Unit-variance noise with features about `cell` pixels wide (coarse grid, blurred, upsampled)."""
    height, width = shape
    coarse = ndimage.gaussian_filter(rng.standard_normal((height // cell + 2, width // cell + 2)), 0.8)
    # Bilinear upsampling as two small matrix products: much faster than ndimage.zoom.
    fine = _linear_weights(height, cell) @ coarse.astype(np.float32) @ _linear_weights(width, cell).T
    return (fine - fine.mean()) / (fine.std() + 1e-6)


def _linear_weights(length: int, cell: int) -> np.ndarray:
    """(length, length // cell + 2) matrix interpolating a grid of spacing `cell` linearly."""
    position = np.arange(length, dtype=np.float64) / cell
    left = np.floor(position).astype(int)
    weights = np.zeros((length, length // cell + 2), dtype=np.float32)
    weights[np.arange(length), left] = 1.0 - (position - left)
    weights[np.arange(length), left + 1] = position - left
    return weights


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    atomic_write_bytes(path, buffer.getvalue())


def _is_complete(out_dir: Path, params: dict) -> bool:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    stored = {**manifest.get("parameters", {})}
    stored["image_size"] = tuple(stored.get("image_size", ()))
    return (manifest.get("generator_version") == GENERATOR_VERSION and stored == params
            and (out_dir / RECORDS).is_file()
            and all((out_dir / name).is_file() for name in manifest.get("files", [])))


def _load_records(out_dir: Path) -> pd.DataFrame:
    origin = str(out_dir / RECORDS)
    frame = pd.read_csv(origin, keep_default_na=False,
                        na_values={c: [""] for c in records.GEOMETRY})
    frame["contour"] = [[tuple(p) for p in json.loads(c)] if c else None for c in frame["contour"]]
    frame["path"] = [str(out_dir / p) for p in frame["path"]]
    frame["mask_path"] = [str(out_dir / p) if p else "" for p in frame["mask_path"]]
    frame["synthetic"] = frame["synthetic"].astype(str) == "True"
    return records.make_table(frame.to_dict("records"), origin=origin)
