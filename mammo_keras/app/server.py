"""`mammo-keras serve`: a local web page that classifies an uploaded mammogram.

A person uploads an image, marks the lesion (a click on the image, or typed pixels) and sees the
class probabilities and the Grad-CAM heatmap, computed by `predict.py` exactly as the CLI does.

Why Flask: a small, long-maintained synchronous framework (Pallets) whose request model suits
one blocking TensorFlow call per request; it brings what this page needs and no more: Jinja2
templates with autoescaping, an upload size cap (`MAX_CONTENT_LENGTH`, answered with 413 before
the body is read), Werkzeug's multipart parser and a test client. An async framework (FastAPI)
would add an ASGI server and gain nothing for one local user.

Safety rules: it binds to 127.0.0.1 unless told otherwise; uploads are written only to the
server's own temporary folder, under random names it makes itself (never the uploaded name), the
last `keep_uploads` kept so a lesion can be marked on an earlier upload, all removed on exit;
files are judged by their content; every bad request is answered with a message on the page and
the server goes on serving.
"""
from __future__ import annotations

import base64
import re
import secrets
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np
from flask import Flask, g, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mammo_keras.app.predict import (FORMATS, Lesion, LoadedModel, format_box, parse_numbers, png_bytes,
                                     predict_image, read_scan)
from mammo_keras.data import roi
from mammo_keras.errors import DataError

TOKEN = re.compile(r"[0-9a-f]{32}")
DICOM_SUFFIXES = (".dcm", ".dicom")  # kept on the stored file: a DICOM without preamble is known by its name
PREVIEW_HEIGHT = 512


def create_app(loaded: LoadedModel, workdir: str | Path, *, max_upload_mb: float = 100.0,
               keep_uploads: int = 20) -> Flask:
    """The Flask app serving `loaded`; uploads go to `workdir` (which the caller creates and removes)."""
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive. Received: max_upload_mb={max_upload_mb}")
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ValueError(f"workdir must be an existing folder. Received: workdir={str(workdir)!r}")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    lock = threading.Lock()  # one prediction at a time: the model and TensorFlow's graph are shared
    preprocessing = loaded.preprocessing

    def page(status: int = 200, **context):
        values = {"model_name": f"{loaded.manifest.get('architecture', 'model')} "
                                f"({'/'.join(loaded.directory.parts[-5:])})",
                  "recipe": preprocessing.recipe, "input_hw": preprocessing.input_hw,
                  "class_names": preprocessing.class_names, "needs_roi": preprocessing.needs_roi,
                  "formats": FORMATS, "max_mb": f"{max_upload_mb:g}",
                  "max_bytes": app.config["MAX_CONTENT_LENGTH"], "x": "", "y": "", "r": "",
                  "y_from_bottom": False, **context}
        return render_template("index.html", **values), status

    @app.get("/")
    def index():
        return page()

    @app.post("/predict")
    def predict():
        stored, filename = _stored_upload(workdir, keep_uploads)
        fields = {key: request.form.get(key, "").strip() for key in ("x", "y", "r")}
        y_from_bottom = bool(request.form.get("y_from_bottom"))
        state = {"token": stored.name.split(".")[0], "filename": filename, "y_from_bottom": y_from_bottom,
                 **fields}
        try:
            image = read_scan(stored, name=filename)
        except DataError:
            _forget(stored)  # a file that cannot be read is of no later use
            raise
        state.update(_preview(image))
        g.state = state  # an error below (e.g. an ROI outside the image) keeps the image to mark again
        lesion = _lesion(fields, y_from_bottom) if preprocessing.needs_roi else None
        if preprocessing.needs_roi and lesion is None:
            return page(notice="Click the centre of the lesion on the image (set the radius if needed), "
                               "then press Classify.", **state)
        with lock:
            result = predict_image(loaded, stored, lesion, name=filename)
        heatmap = base64.b64encode(png_bytes(result.panel)).decode("ascii")
        return page(result=result, heatmap=heatmap, roi=format_box(result.box), **state)

    @app.errorhandler(DataError)
    @app.errorhandler(ValueError)
    def bad_input(error):
        return page(400, error=str(error), **g.get("state", {}))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        return page(413, error=f"The upload is larger than the {max_upload_mb:g} MB limit "
                               f"(--max-upload-mb). Received: {request.content_length} bytes")

    @app.errorhandler(HTTPException)
    def http_error(error):
        return page(error.code or 500, error=f"{error.code} {error.name}: {error.description}")

    @app.errorhandler(Exception)
    def unexpected(error):  # keep serving: a bug in one request must not stop the page
        app.logger.exception("prediction failed")
        return page(500, error=f"Internal error while classifying ({type(error).__name__}: {error}); "
                               "the server is still running.")

    return app


def _stored_upload(workdir: Path, keep: int) -> tuple[Path, str]:
    """The uploaded file saved under a random name in `workdir`, or an earlier one named by `token`."""
    upload = request.files.get("image")
    if upload is not None and upload.filename:
        filename = Path(upload.filename.replace("\\", "/")).name or "upload"
        suffix = Path(filename).suffix.lower()
        path = workdir / (secrets.token_hex(16) + (suffix if suffix in DICOM_SUFFIXES else ""))
        upload.save(path)
        if path.stat().st_size == 0:
            path.unlink()
            raise DataError(filename, "the uploaded file is empty")
        (workdir / f"{path.name.split('.')[0]}.name").write_text(filename, encoding="utf-8")
        _prune(workdir, keep)
        return path, filename
    token = request.form.get("token", "")
    if not token:
        raise ValueError("Choose an image file to upload.")
    if not TOKEN.fullmatch(token):
        raise ValueError(f"an upload token is 32 hexadecimal characters. Received: token={token[:40]!r}")
    found = [p for p in workdir.glob(f"{token}*") if p.suffix != ".name"]
    if not found:
        raise ValueError("That upload is no longer kept on the server; upload the image again.")
    names = workdir / f"{token}.name"
    return found[0], names.read_text(encoding="utf-8") if names.is_file() else "upload"


def _prune(workdir: Path, keep: int) -> None:
    """Keep the newest `keep` uploads (and their name files)."""
    uploads = sorted((p for p in workdir.iterdir() if p.suffix != ".name"), key=lambda p: p.stat().st_mtime)
    for old in uploads[:-keep] if keep > 0 else uploads:
        _forget(old)


def _forget(upload: Path) -> None:
    upload.unlink(missing_ok=True)
    upload.with_name(f"{upload.name.split('.')[0]}.name").unlink(missing_ok=True)


def _lesion(fields: dict[str, str], y_from_bottom: bool) -> Lesion | None:
    """The lesion typed or clicked on the page; None when all three fields are empty."""
    if not any(fields.values()):
        return None
    if not all(fields.values()):
        raise ValueError("Give the lesion's x, y and radius (click its centre on the image to fill x and y). "
                         f"Received: x={fields['x']!r}, y={fields['y']!r}, radius={fields['r']!r}")
    values = parse_numbers(f"{fields['x']},{fields['y']},{fields['r']}", 3, "the lesion x, y, radius")
    return Lesion("circle", values, "bottom-left" if y_from_bottom else "top-left")


def _preview(image: np.ndarray) -> dict:
    """A contrast-stretched PNG of the image (base64) for marking the lesion, and the image size."""
    height = min(PREVIEW_HEIGHT, image.shape[0])
    small = roi.resize(image, (height, max(1, round(image.shape[1] * height / image.shape[0]))))
    low, high = float(small.min()), float(small.max())
    grey = np.zeros_like(small) if high <= low else (small - low) / (high - low)
    rgb = np.repeat(np.round(255 * grey).astype(np.uint8)[..., None], 3, axis=-1)
    return {"preview": base64.b64encode(png_bytes(rgb)).decode("ascii"),
            "width": image.shape[1], "height": image.shape[0]}


def serve(loaded: LoadedModel, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 100.0,
          ready: threading.Event | None = None) -> None:
    """Serve until interrupted; uploads live in a temporary folder removed on exit."""
    from werkzeug.serving import make_server

    workdir = Path(tempfile.mkdtemp(prefix="mammo_keras_serve_"))
    try:
        app = create_app(loaded, workdir, max_upload_mb=max_upload_mb)
        server = make_server(host, port, app, threaded=True)
        print(f"Serving {loaded.directory} at http://{host}:{server.port}/ (uploads in {workdir}; "
              "Ctrl-C stops)", flush=True)
        if ready is not None:
            ready.set()
        if threading.current_thread() is threading.main_thread():  # `kill` cleans up as Ctrl-C does
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
