"""Model export and import: JSON architecture + HDF5 weights + `.keras`, with a checksummed manifest.

    save(model, "out/inceptionv3-md", architecture="chougrad_inceptionv3",
         class_names=["benign", "malignant"], preprocessing={"roi": 300, "gcn": "mean"})
    model = load("out/inceptionv3-md")                 # model.keras, checksums verified
    model = load("out/inceptionv3-md", format="json")  # model.json + model.weights.h5, the papers' format

A saved folder holds `model.keras` (the primary format: Keras 3's single-file archive, what `load`
and `predict` read), `model.json` + `model.weights.h5` (JSON architecture and HDF5 weights, the
format the papers used, kept beside it), `MODEL_CARD.md` and `manifest.json`. Each file is written
to a temporary file in the same folder and moved into place with `os.replace`, the manifest last,
so a reader never sees a half-written model. The manifest lists the sha256 of every other file,
the model card included (a card edited after saving fails the check like a changed weight file:
it is the record of what the weights are).

MODEL_CARD.md says what the model is (architecture, input recipe, classes, parameters), what it
was trained on (datasets with their data fingerprints and licences), how (the protocol lines of
the run's plan), how well (the metrics of its part with 95% CIs), and what it is not for: it is a
research model, not a medical device. `save(..., card=...)` takes those facts from the training
runner; without them the card still states the model and the limitations, and says the rest is
unknown.

`pack` zips a saved folder with a `SHA256SUMS` list of every file in it (manifest.json included;
`sha256sum -c SHA256SUMS` checks it by hand) and `unpack` refuses an archive with unsafe paths
(absolute, `..`, links) or a file whose sha256 differs, before anything reaches the destination:
a model trained on a GPU machine moves to a laptop, where `predict` verifies the manifest again.

Weight files are read by `mammo_keras.models.weights` (legacy Keras HDF5 and Keras 3 `.weights.h5`,
by layer name); its functions are re-exported here for the notebooks that import them from io.

Reference: Chougrad et al. 2018, §2.2.4 ("we saved the weights of each model in HDF5 format and
the structure in a JSON format").
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import h5py
import keras
import numpy as np

from mammo_keras import __version__
from mammo_keras.errors import DataError
from mammo_keras.fileio import sha256_file
from mammo_keras import models  # noqa: F401, I001 - registers the package's layers for loading
from mammo_keras.models.weights import MATCH_MODES, load_weights_by_name, read_weight_file  # noqa: F401

ARCHITECTURE_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
KERAS_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "MODEL_CARD.md"
CHECKSUMS_FILE = "SHA256SUMS"
MANIFEST_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same folder packs to the same bytes
LOAD_FORMATS = ("keras", "json")


def save(model: keras.Model, directory: str | os.PathLike, *, architecture: str | None = None,
         class_names: list[str] | None = None, preprocessing: dict | None = None,
         arrays: dict[str, np.ndarray] | None = None, card: dict | None = None,
         files: dict[str, Callable[[Path], object]] | None = None) -> Path:
    """Write the model as JSON + HDF5 weights + `.keras` and its MODEL_CARD.md, then a manifest with checksums.

    Args:
        architecture: registry name of the builder (defaults to `model.name`).
        class_names: names of the output units, in order.
        preprocessing: JSON-serialisable description of the input pipeline (ROI size, scaling).
        arrays: `.npy` files the input pipeline needs (e.g. a training-set mean image), by file name;
            they are checksummed with the rest.
        card: what the training run knows for the model card (`model_card`): title, data (name,
            fingerprint, licence, role, synthetic), part, protocol (lines), command, metrics
            ({name: {value, low, high}}), metrics_note, calibration ({brier, ece, figure}), profile.
        files: further files of the folder by plain file name (the runner's reliability diagram,
            `calibration.png`), each written by its function to a temporary path; checksummed with the rest.

    Returns:
        The folder written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "architecture": architecture or model.name,
        "input_shape": _input_shape(model),
        "class_names": list(class_names) if class_names is not None else None,
        "preprocessing": dict(preprocessing or {}),
        "keras_version": keras.__version__,
        "mammo_keras_version": __version__,
    }
    try:
        json.dumps(manifest)
    except TypeError as error:
        raise ValueError("`class_names` and `preprocessing` must be JSON-serialisable. "
                         f"Received: preprocessing={preprocessing!r} ({error})") from None
    checksums = {
        ARCHITECTURE_FILE: _atomic_write(directory / ARCHITECTURE_FILE,
                                         lambda tmp: tmp.write_text(model.to_json(indent=1))),
        WEIGHTS_FILE: _atomic_write(directory / WEIGHTS_FILE, model.save_weights),
        KERAS_FILE: _atomic_write(directory / KERAS_FILE, model.save),
    }
    for filename, array in (arrays or {}).items():
        if not filename.endswith(".npy") or Path(filename).name != filename:
            raise ValueError(f"array files are plain '<name>.npy' names. Received: {filename!r}")
        checksums[filename] = _atomic_write(directory / filename,
                                            lambda tmp, a=array: np.save(tmp, np.asarray(a), allow_pickle=False))
    for filename, write in (files or {}).items():
        if Path(filename).name != filename or filename in checksums or filename in (CARD_FILE, MANIFEST_FILE):
            raise ValueError(f"further files are plain file names other than the model's own. Received: {filename!r}")
        checksums[filename] = _atomic_write(directory / filename, write)
    text = model_card(manifest, model, card)
    checksums[CARD_FILE] = _atomic_write(directory / CARD_FILE, lambda tmp: tmp.write_text(text))
    manifest["model_card"] = CARD_FILE
    manifest["sha256"] = checksums
    _atomic_write(directory / MANIFEST_FILE,
                  lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return directory


def model_card(manifest: dict, model: keras.Model | None = None, card: dict | None = None) -> str:
    """MODEL_CARD.md of a saved model: what it is, its training data, protocol and metrics, its use and limits.

    Reference: Mitchell et al. 2019, "Model Cards for Model Reporting", FAT* (the sections).
    """
    card = dict(card or {})
    preprocessing = manifest.get("preprocessing") or {}
    classes = manifest.get("class_names") or []
    shape = manifest.get("input_shape")
    lines = [f"# Model card: {manifest['architecture']}" + (f" ({card['title']})" if card.get("title") else ""), "",
             f"Written by mammo_keras {manifest['mammo_keras_version']} when the model was saved. Research use only: "
             "this is not a medical device.", "", "## Model", "",
             f"- architecture: `{manifest['architecture']}` (a `mammo_keras.models` registry name), Keras "
             f"{manifest['keras_version']}",
             f"- input: {_shape_text(shape)}"
             + (f"; preprocessing recipe `{preprocessing['recipe']}` {json.dumps(preprocessing.get('options', {}))}, "
                f"input scale {preprocessing.get('input_scale')}, normalisation {preprocessing.get('normalisation')}"
                if preprocessing.get("recipe") else "; preprocessing not recorded"),
             f"- outputs: {', '.join(classes) if classes else 'class names not recorded'}"]
    if model is not None:
        trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        lines.append(f"- parameters: {model.count_params():,} ({trainable:,} trainable at the end of training)")
    lines += ["- files: model.keras (the primary format, what `io.load` and `predict` read), model.json + "
              "model.weights.h5 (JSON architecture and HDF5 weights, the papers' format); manifest.json holds the "
              "sha256 of every file, this card included (`mammo-keras predict` and `models unpack` verify them)",
              "", "## Training data", ""]
    data = card.get("data") or []
    for entry in data:
        lines.append(f"- {entry.get('role', 'training')}: `{entry['name']}`"
                     + (" (SYNTHETIC phantom images, not mammograms)" if entry.get("synthetic") else "")
                     + f"; data fingerprint {entry.get('fingerprint') or 'not recorded'}; licence: "
                       f"{entry.get('licence') or 'not recorded'}")
    if not data:
        lines.append("- not recorded (the model was saved outside the training runner)")
    part = card.get("part") or {}
    if part:
        lines.append(f"- part: {part.get('what', '')}: {part.get('n_train', '?')} training, {part.get('n_val', '?')} "
                     f"validation and {part.get('n_test', '?')} test items")
    lines += ["", "## Protocol", ""]
    protocol = card.get("protocol") or []
    lines += [f"- {line}" for line in protocol] or ["- not recorded"]
    if card.get("command"):
        lines.append(f"- command: `{card['command']}`")
    lines += ["", "## Metrics", ""]
    metrics = card.get("metrics") or {}
    if metrics:
        lines += [card.get("metrics_note", "On the part's test items."), "", "| metric | value | 95% CI |",
                  "|---|---:|---|"]
        for name, value in metrics.items():
            low, high = value.get("low"), value.get("high")
            ci = (f"[{low:.3f}, {high:.3f}]" if isinstance(low, float) and isinstance(high, float)
                  and np.isfinite(low) and np.isfinite(high) else "-")
            lines.append(f"| {name} | {value['value']:.3f} | {ci} |")
    else:
        lines.append("Not known when the model was saved.")
    calibration = card.get("calibration") or {}
    if calibration:
        lines += ["", f"Calibration on the same items: Brier score {calibration['brier']:.3f}, expected calibration "
                      f"error {calibration['ece']:.3f} (ten equal-width bins); reliability diagram "
                      f"`{calibration['figure']}` in this folder."]
    lines += ["", "## Intended use", "",
              "Research: reproducing the paper's experiment this model belongs to, studying the method, and trying "
              "the package's `predict` / `serve` pipeline on images prepared the way its training images were.",
              "", "## Limitations", "",
              "- Research use only. Not a medical device: not cleared or approved by any regulator; do not use it to "
              "screen, diagnose or decide the care of any person.",
              "- Its numbers hold for the data and split above; other scanners, populations, film vs digital images "
              "or a different preprocessing can change them, untested.",
              "- A model from the `tiny` or `cpu` profile (reduced epochs, small inputs) shows the pipeline works; it "
              "is not a useful classifier." + (f" This one is from the `{card['profile']}` profile."
                                             if card.get("profile") else ""),
              "- The training data's licence terms apply to sharing this model and its outputs.", ""]
    return "\n".join(lines)


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a folder written by `save`."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise DataError(path, f"no {MANIFEST_FILE}: this folder was not written by "
                              "mammo_keras.io.save (expected model.json, model.weights.h5, "
                              "model.keras and manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error.msg})", line=error.lineno) from None
    except UnicodeDecodeError:
        raise DataError(path, "not a text file (a manifest is UTF-8 JSON)") from None
    checksums = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(checksums, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in checksums.items()):
        raise DataError(path, "no `sha256` table of file names and checksums: not a manifest written by "
                              "mammo_keras.io.save")
    return manifest


def verify_checksums(directory: str | os.PathLike, *, required: Sequence[str] = ()) -> None:
    """Check every file listed in the manifest against its sha256; raise naming the first bad one.

    `required`: files that must be listed (those about to be loaded): a manifest that leaves a file
    out, or lists nothing, would otherwise let an unchecked file through.
    """
    directory = Path(directory)
    checksums = read_manifest(directory)["sha256"]
    for filename in required:
        if filename not in checksums:
            raise DataError(directory / MANIFEST_FILE, f"does not list {filename}, so its checksum cannot be "
                                                       "verified (a folder written by mammo_keras.io.save lists "
                                                       "every file it wrote)")
    for filename, expected in checksums.items():
        if not _is_plain_relative(filename):
            raise DataError(directory / MANIFEST_FILE, f"lists {filename!r}: a manifest names files inside its "
                                                       "own folder only")
        path = directory / filename
        if not path.is_file():
            raise DataError(path, f"listed in {MANIFEST_FILE} but missing")
        actual = sha256(path)
        if actual != expected:
            raise DataError(path, f"sha256 mismatch: the file changed after it was saved "
                                  f"(manifest {expected}, file {actual})")


def load(directory: str | os.PathLike, *, verify: bool = True, format: str = "keras") -> keras.Model:  # noqa: A002
    """Rebuild a model saved by `save`.

    Args:
        verify: check the sha256 of every file first.
        format: "keras" (model.keras, the primary format) or "json" (architecture JSON + HDF5
            weights, the papers' format); both give the same model.
    """
    if format not in LOAD_FORMATS:
        raise ValueError(f"`format` must be one of {LOAD_FORMATS}. Received: format={format!r}")

    directory = Path(directory)
    needed = (KERAS_FILE,) if format == "keras" else (ARCHITECTURE_FILE, WEIGHTS_FILE)
    if verify:
        verify_checksums(directory, required=needed)
    for name in needed:
        if not (directory / name).is_file():
            raise DataError(directory / name, f"missing: loading format={format!r} needs {' and '.join(needed)} "
                                              "(a folder written by mammo_keras.io.save has both formats)")
    if format == "keras":
        with _unreadable(directory / KERAS_FILE, "a Keras model archive"):
            return keras.saving.load_model(directory / KERAS_FILE, compile=False, safe_mode=True)
    try:
        config = json.loads((directory / ARCHITECTURE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(directory / ARCHITECTURE_FILE, f"not valid JSON ({error})") from None
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    with _unreadable(directory / WEIGHTS_FILE, "an HDF5 weights file of this architecture"):
        model.load_weights(directory / WEIGHTS_FILE)
    return model


@contextlib.contextmanager
def _unreadable(path: Path, what: str):
    """Errors of h5py, zipfile or Keras on a damaged file, as a DataError naming it (a truncated
    model.keras otherwise reads as Keras's "File not found", though the file is there)."""
    try:
        yield
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as error:  # the library's own words kept in the message
        raise DataError(path, f"cannot be read as {what} ({type(error).__name__}: {error})") from None


def pack(directory: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Zip a folder written by `save` for another machine, with the sha256 of every file.

    The folder's checksums are verified first (a damaged model is not shipped). The archive holds
    every file of the folder at its relative path (names starting with "." are left out: they are
    temporary files of interrupted writes) and `SHA256SUMS`, in `sha256sum` format, covering all
    of them. Entries are sorted and dated 1980-01-01, so packing the same folder twice gives the
    same bytes. The archive is written atomically.

    Raises:
        DataError: a file changed since it was saved, a missing manifest, or a link in the folder.
    """
    directory = Path(directory)
    verify_checksums(directory)
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or relative.as_posix() == CHECKSUMS_FILE:
            continue
        if path.is_symlink():
            raise DataError(path, "a model folder to pack holds plain files only; this is a link")
        if path.is_file():
            files.append((relative.as_posix(), path))
    sums = "".join(f"{sha256(path)}  {name}\n" for name, path in files)
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for name, path in files:
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                with open(path, "rb") as source, bundle.open(info, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
            info = zipfile.ZipInfo(CHECKSUMS_FILE, date_time=_ZIP_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            bundle.writestr(info, sums, compress_type=zipfile.ZIP_DEFLATED)

    _atomic_write(archive, write)
    return archive


def unpack(archive: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Extract an archive written by `pack` into `directory` (new, or an empty folder), verified.

    Every entry name is checked (relative, no `..`, no links, no duplicates), every file must be
    listed in SHA256SUMS with the sha256 of its bytes, and the manifest's own checksums must hold;
    files are extracted into a temporary folder beside `directory` and moved into place only when
    all of that holds, so a refused archive leaves nothing behind.

    Raises:
        DataError: naming the archive (and the entry): not a zip, an unsafe path, a file missing
            from SHA256SUMS or from the archive, a sha256 mismatch, or a destination that is not empty.
    """
    archive, directory = Path(archive), Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DataError(directory, "unpack needs a new or empty destination folder; this one is not empty "
                                   "(choose another, or remove it first)")
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(archive, f"not a model archive written by `mammo-keras models pack` ({error})") from None
    with bundle:
        entries = [info for info in bundle.infolist() if not info.is_dir()]
        names = [_safe_member(archive, info) for info in entries]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise DataError(archive, f"the archive holds {duplicated[0]!r} twice; refusing to choose one")
        if CHECKSUMS_FILE not in names:
            raise DataError(archive, f"no {CHECKSUMS_FILE} in the archive: it was not written by "
                                     "`mammo-keras models pack`, and its files cannot be verified")
        expected = _parse_sums(archive, bundle.read(CHECKSUMS_FILE).decode("utf-8", errors="replace"))
        unlisted = sorted(set(names) - set(expected) - {CHECKSUMS_FILE})
        absent = sorted(set(expected) - set(names))
        if unlisted:
            raise DataError(archive, f"{unlisted[0]}: in the archive but not in {CHECKSUMS_FILE}")
        if absent:
            raise DataError(archive, f"{absent[0]}: listed in {CHECKSUMS_FILE} but not in the archive")
        if MANIFEST_FILE not in names:
            raise DataError(archive, f"no {MANIFEST_FILE} in the archive: not a model folder")
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.unpack."))
        try:
            for info, name in zip(entries, names):
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with bundle.open(info) as source, open(target, "wb") as sink:
                    for block in iter(lambda: source.read(1 << 20), b""):
                        digest.update(block)
                        sink.write(block)
                if name != CHECKSUMS_FILE and digest.hexdigest() != expected[name]:
                    raise DataError(archive, f"{name}: sha256 mismatch: the file changed after it was packed "
                                             f"({CHECKSUMS_FILE} {expected[name]}, file {digest.hexdigest()})")
            listed = read_manifest(staging).get("sha256", {})
            for filename in listed:
                if not _is_plain_relative(filename):
                    raise DataError(archive, f"{MANIFEST_FILE} lists an unsafe file name. Received: {filename!r}")
            try:
                verify_checksums(staging)
            except DataError as error:
                raise DataError(archive, f"{Path(error.path).name}: {error.problem}") from None
            if directory.exists():
                directory.rmdir()
            os.replace(staging, directory)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return directory


def load_legacy_h5(path: str | os.PathLike, *, compile: bool = False) -> keras.Model:  # noqa: A002
    """Load a legacy full-model HDF5 file (`model.save("x.h5")` in Keras 2 or 3)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No legacy Keras model file at {path}.")
    if path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"A legacy Keras model file ends in .h5 or .hdf5. Received: path={str(path)!r}")
    with _unreadable(path, "an HDF5 file"), h5py.File(path, "r") as handle:
        if "model_config" not in handle.attrs:
            raise DataError(path, "no `model_config` attribute: this is a weights-only file; build "
                                  "the model and use load_weights_by_name instead")
    with _unreadable(path, "a legacy Keras model file"):
        return keras.saving.load_model(path, compile=compile, safe_mode=True)


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (the package's one implementation, `fileio.sha256_file`)."""
    return sha256_file(path)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> str:
    """Write through a temporary file in the same folder, then `os.replace`; returns the sha256."""
    suffix = "".join(path.suffixes)  # Keras checks ".weights.h5" / ".keras"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    temporary = Path(temporary)
    try:
        write(temporary)
        digest = sha256(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return digest


def _safe_member(archive: Path, info: zipfile.ZipInfo) -> str:
    """The entry's name when it is a plain relative path inside the destination, else raise."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(archive, f"{name}: the archive holds a symbolic link; model archives hold plain files "
                                 "only")
    if not _is_plain_relative(name):
        raise DataError(archive, f"unsafe path in the archive (absolute, a drive, a backslash or '..'); "
                                 f"refusing to extract it. Received: {name!r}")
    return name


def _is_plain_relative(name: str) -> bool:
    path = PurePosixPath(name)
    return (bool(name) and "\\" not in name and ":" not in name and not path.is_absolute()
            and all(part not in ("", ".", "..") for part in name.split("/")))


def _parse_sums(archive: Path, text: str) -> dict[str, str]:
    """{name: sha256} from `sha256sum` lines ("<64 hex>  <name>")."""
    sums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise DataError(archive, f"{CHECKSUMS_FILE} line {number} must read '<sha256>  <file>'. "
                                     f"Received: {line!r}")
        sums[name] = digest
    return sums


def _shape_text(shape) -> str:
    """[224, 224, 1] -> "224 x 224 x 1" (several inputs: each)."""
    if isinstance(shape, list) and shape and isinstance(shape[0], list):
        return "; ".join(_shape_text(part) for part in shape)
    return " x ".join(str(side) for side in shape) if isinstance(shape, list) else str(shape)


def _input_shape(model: keras.Model):
    shapes = [list(tensor.shape[1:]) for tensor in model.inputs]
    return shapes[0] if len(shapes) == 1 else shapes
