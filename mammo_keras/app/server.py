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

Against hostile files: an image over `max_pixels` (40 MP by default; mammograms are at most
about 40 MP) or over Pillow's decompression-bomb limit is refused from its header before it is
decoded, with a 400 and the upload removed; each upload is decoded once (the preview and the
prediction share the array), at most `decode_slots` decoded images are held at a time, and the
heap is trimmed after each request so that memory returns to its level before the request.

Against hostile pages: the page is served only under the Host names of the address it binds to
(DNS rebinding); a POST must carry the per-session CSRF token of the form and, when the browser
sends an Origin, come from this server's origin; every response carries a Content-Security-Policy
(scripts and styles only with the page's nonce, no framing), X-Content-Type-Options: nosniff and
X-Frame-Options: DENY.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import hmac
import ipaddress
import re
import secrets
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from flask import Flask, g, render_template, request, session
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mammo_keras.app.predict import (FORMATS, Lesion, LoadedModel, format_box, png_bytes, predict_image,
                                     read_scan)
from mammo_keras.data import roi
from mammo_keras.data.imageio import DEFAULT_MAX_PIXELS
from mammo_keras.errors import DataError

TOKEN = re.compile(r"[0-9a-f]{32}")
DICOM_SUFFIXES = (".dcm", ".dicom")  # kept on the stored file: a DICOM without preamble is known by its name
PREVIEW_HEIGHT = 512
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SHOWN_CHARACTERS = 24  # longer form values are cut when echoed in a message or back into the form
NAME_CHARACTERS = 120  # uploaded file names are cut to this length
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
DECODE_WAIT_S = 120.0  # a request waiting longer than this for a decode slot gets a 503


class Forbidden(Exception):
    """A request from another site (no CSRF token, a foreign Origin) or for a Host not served here."""


class Busy(Exception):
    """Every decode slot stayed taken for DECODE_WAIT_S."""


def allowed_hosts_for(host: str) -> tuple[str, ...] | None:
    """The Host names a server bound to `host` answers to; None (any) when it binds every interface."""
    if host in ("", "0.0.0.0", "::"):
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() == "localhost"
    return tuple(dict.fromkeys((host.lower(), *LOOPBACK_NAMES))) if loopback else (host.lower(),)


def create_app(loaded: LoadedModel, workdir: str | Path, *, max_upload_mb: float = 100.0,
               keep_uploads: int = 20, max_pixels: int | None = DEFAULT_MAX_PIXELS, decode_slots: int = 2,
               allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES) -> Flask:
    """The Flask app serving `loaded`; uploads go to `workdir` (which the caller creates and removes).

    Args:
        max_pixels: uploads with more pixels are refused from their header, before decoding.
        decode_slots: how many decoded uploads may be in memory at once (the others wait).
        allowed_hosts: Host header names served (None: any, for a server bound to every interface).
    """
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive. Received: max_upload_mb={max_upload_mb}")
    if max_pixels is not None and max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive. Received: max_pixels={max_pixels}")
    if decode_slots < 1:
        raise ValueError(f"decode_slots must be at least 1. Received: decode_slots={decode_slots}")
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ValueError(f"workdir must be an existing folder. Received: workdir={str(workdir)!r}")
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_mb * 1024 * 1024), SECRET_KEY=secrets.token_bytes(32),
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    lock = threading.Lock()  # one prediction at a time: the model and TensorFlow's graph are shared
    slots = threading.BoundedSemaphore(decode_slots)  # decoded images held at once (memory bound)
    preprocessing = loaded.preprocessing

    def page(status: int = 200, **context):
        if "csrf" not in session:
            session["csrf"] = secrets.token_hex(16)
        values = {"model_name": f"{loaded.manifest.get('architecture', 'model')} "
                                f"({'/'.join(loaded.directory.parts[-5:])})",
                  "recipe": preprocessing.task, "input_hw": preprocessing.input_hw,
                  "class_names": preprocessing.class_names, "needs_roi": preprocessing.needs_roi,
                  "formats": FORMATS, "max_mb": f"{max_upload_mb:g}",
                  "max_bytes": app.config["MAX_CONTENT_LENGTH"], "x": "", "y": "", "r": "",
                  "y_from_bottom": False, "csrf_token": session["csrf"], "nonce": _nonce(), **context}
        return render_template("index.html", **values), status

    @app.before_request
    def same_site_only():
        g.nonce = secrets.token_urlsafe(16)
        if allowed_hosts is not None and _hostname(request.host) not in allowed_hosts:
            raise Forbidden(f"this server answers only to the host names {list(allowed_hosts)} (a page "
                            f"reaching it under another name may be DNS rebinding). "
                            f"Received: Host={_shown(request.host)}")
        if request.method != "POST":
            return
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            raise Forbidden(f"the form must be sent from this server's own page. Received: Origin={_shown(origin)}")
        sent, expected = request.form.get("csrf_token", ""), session.get("csrf", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("the form must carry this session's token (the page has expired or the request "
                            "came from another site): reload the page and send it again")

    @app.after_request
    def security_headers(response):
        nonce = _nonce()
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" would make the form's Origin "null"
        response.headers["Cache-Control"] = "no-store"  # pages hold patient images
        return response

    @app.teardown_request
    def release_memory(error=None):
        if request.method == "POST":  # after the page is built: its buffers are freed too
            _trim_heap()

    @app.get("/")
    def index():
        return page()

    @app.post("/predict")
    def predict():
        stored, filename = _stored_upload(workdir, keep_uploads)
        raw = {key: request.form.get(key, "").strip() for key in ("x", "y", "r")}
        y_from_bottom = bool(request.form.get("y_from_bottom"))
        state = {"token": stored.name.split(".")[0], "filename": filename, "y_from_bottom": y_from_bottom,
                 **{key: value[:SHOWN_CHARACTERS] for key, value in raw.items()}}
        if not slots.acquire(timeout=DECODE_WAIT_S):
            raise Busy()
        try:
            try:
                image = read_scan(stored, name=filename, max_pixels=max_pixels)
            except DataError:
                _forget(stored)  # a file that cannot be read (or is over the cap) is of no later use
                raise
            state.update(_preview(image))
            g.state = state  # an error below (e.g. an ROI outside the image) keeps the image to mark again
            lesion = _lesion(raw, y_from_bottom, image.shape) if preprocessing.needs_roi else None
            if preprocessing.needs_roi and lesion is None:
                return page(notice="Click the centre of the lesion on the image (set the radius if needed), "
                                   "then press Classify.", **state)
            with lock:
                result = predict_image(loaded, stored, lesion, name=filename, image=image)
        finally:
            image = None  # the decoded upload is dropped before the slot is given back
            slots.release()
        heatmap = base64.b64encode(png_bytes(result.panel)).decode("ascii")
        return page(result=result, heatmap=heatmap, roi=format_box(result.box), **state)

    @app.errorhandler(DataError)
    @app.errorhandler(ValueError)
    def bad_input(error):
        return page(400, error=str(error), **g.get("state", {}))

    @app.errorhandler(Forbidden)
    def forbidden(error):
        return page(403, error=f"Refused: {error}")

    @app.errorhandler(Busy)
    def busy(error):
        return page(503, error="The server is busy decoding other images; send the image again in a moment.")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        limit = app.config["MAX_CONTENT_LENGTH"]
        received = (f"{request.content_length:,} bytes" if request.content_length is not None
                    else f"more than {limit:,} bytes (a chunked upload, stopped at the limit)")
        return page(413, error=f"The upload is larger than the {max_upload_mb:g} MB limit "
                               f"(--max-upload-mb). Received: {received}")

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
        filename = _shorter(Path(upload.filename.replace("\\", "/")).name or "upload", NAME_CHARACTERS)
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
    """Keep the newest `keep` uploads (and their name files).

    Other requests store and remove uploads meanwhile: a file gone between listing and stat is skipped.
    """
    uploads = []
    for path in workdir.iterdir():
        try:
            if path.suffix != ".name":
                uploads.append((path.stat().st_mtime_ns, path.name, path))
        except FileNotFoundError:
            continue
    uploads.sort()
    for *_, old in uploads[:-keep] if keep > 0 else uploads:
        _forget(old)


def _forget(upload: Path) -> None:
    upload.unlink(missing_ok=True)
    upload.with_name(f"{upload.name.split('.')[0]}.name").unlink(missing_ok=True)


def _lesion(fields: dict[str, str], y_from_bottom: bool, shape: tuple[int, ...]) -> Lesion | None:
    """The lesion typed or clicked on the page; None when all three fields are empty.

    The centre must lie on the image and the radius be 1 pixel to the image's larger side.
    """
    if not any(fields.values()):
        return None
    if not all(fields.values()):
        raise ValueError("Give the lesion's x, y and radius (click its centre on the image to fill x and y). "
                         f"Received: x={_shown(fields['x'])}, y={_shown(fields['y'])}, radius={_shown(fields['r'])}")
    values = {}
    for key, label in (("x", "x"), ("y", "y"), ("r", "radius")):
        if not NUMBER.fullmatch(fields[key]):
            raise ValueError(f"The lesion's {label} must be a number of pixels. Received: {label}={_shown(fields[key])}")
        values[key] = float(fields[key])
    height, width = shape[:2]
    x, y, r = values["x"], values["y"], values["r"]
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"The lesion centre lies outside the {width}x{height} image: x must be 0 to {width - 1}, "
                         f"y 0 to {height - 1}{' (counted from the bottom)' if y_from_bottom else ''}. "
                         f"Received: x={x:g}, y={y:g}")
    if not 1 <= r <= max(height, width):
        raise ValueError(f"The radius must be 1 pixel to the image's larger side ({max(height, width)} pixels). "
                         f"Received: radius={r:g}")
    return Lesion("circle", (x, y, r), "bottom-left" if y_from_bottom else "top-left")


def _preview(image: np.ndarray) -> dict:
    """A contrast-stretched PNG of the image (base64) for marking the lesion, and the image size."""
    height = min(PREVIEW_HEIGHT, image.shape[0])
    small = roi.resize(image, (height, max(1, round(image.shape[1] * height / image.shape[0]))))
    low, high = float(small.min()), float(small.max())
    grey = np.zeros_like(small) if high <= low else (small - low) / (high - low)
    rgb = np.repeat(np.round(255 * grey).astype(np.uint8)[..., None], 3, axis=-1)
    return {"preview": base64.b64encode(png_bytes(rgb)).decode("ascii"),
            "width": image.shape[1], "height": image.shape[0]}


def _shorter(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _shown(text: str) -> str:
    """`text` quoted for a message, cut after SHOWN_CHARACTERS (with its full length said)."""
    if len(text) <= SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:SHOWN_CHARACTERS]!r}... ({len(text):,} characters)"


def _hostname(host: str) -> str:
    """The name part of a Host header: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "::1"."""
    host = host.lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _nonce() -> str:
    if "nonce" not in g:
        g.nonce = secrets.token_urlsafe(16)
    return g.nonce


@functools.cache
def _libc():
    """The C library when it has glibc's malloc_trim, else None."""
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return library if library is not None and hasattr(library, "malloc_trim") else None


def _trim_heap() -> None:
    """Give freed heap memory back to the system: glibc keeps the freed blocks of a decoded image
    in its per-thread arenas, so RSS would stay at the peak; a no-op without malloc_trim."""
    library = _libc()
    if library is not None:
        library.malloc_trim(0)


def serve(loaded: LoadedModel, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 100.0,
          max_pixels: int | None = DEFAULT_MAX_PIXELS, ready: threading.Event | None = None) -> None:
    """Serve until interrupted; uploads live in a temporary folder removed on exit."""
    from werkzeug.serving import make_server

    workdir = Path(tempfile.mkdtemp(prefix="mammo_keras_serve_"))
    try:
        app = create_app(loaded, workdir, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                         allowed_hosts=allowed_hosts_for(host))
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
