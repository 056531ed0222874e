"""The web app against hostile files and hostile pages, through Flask's test client: the pixel cap
and decompression bombs (refused from the header, upload removed, no traceback), one decode per
upload with bounded concurrent decodes, ROI bounds, CSRF token, Origin/Host checks, security headers."""
from __future__ import annotations

import io
import logging
import re
import threading
import time

import pytest

from app_fixtures import fixture_png, trained_model  # noqa: F401 - fixtures
from hostile_files import bomb_png, large_png
from mammo_keras.app import predict as predict_module
from mammo_keras.app.predict import load_model_folder
from mammo_keras.app.server import allowed_hosts_for, create_app
from test_server import _csrf, _post, _probabilities

ERROR = '<div id="error" class="error" role="alert">'


@pytest.fixture(scope="module")
def loaded(trained_model):
    return load_model_folder(trained_model)


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def _uploads(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_image_over_the_pixel_cap_is_refused_from_its_header_and_removed(loaded, work, monkeypatch):
    client = create_app(loaded, work, max_upload_mb=1, max_pixels=10_000).test_client()
    decoded = []
    real = predict_module.read_normalised
    monkeypatch.setattr(predict_module, "read_normalised",
                        lambda path, **kw: decoded.append(path) or real(path, **kw))
    data = large_png(200, 100)
    for loader in ("PIL.Image.Image.load", "PIL.ImageFile.ImageFile.load"):
        monkeypatch.setattr(loader, lambda self: pytest.fail("an over-cap image was decoded"))
    answer = _post(client, {"x": "10", "y": "10", "r": "5"}, (data, "wide.png"))
    assert answer.status_code == 400 and ERROR in answer.text
    assert ("wide.png: images may have at most 10,000 pixels (0.01 megapixels, --max-pixels), checked before "
            "decoding. Received: 200x100 = 20,000 pixels") in answer.text
    assert len(decoded) == 1 and _uploads(work) == []


def test_a_decompression_bomb_is_a_4xx_on_the_page_without_a_traceback(loaded, work, caplog):
    client = create_app(loaded, work, max_upload_mb=1).test_client()
    with caplog.at_level(logging.DEBUG):
        answer = _post(client, {}, (bomb_png(), "bomb.png"))
    assert answer.status_code == 400 and ERROR in answer.text
    assert "bomb.png: images may have at most 40,000,000 pixels" in answer.text
    assert "Image size (900000000 pixels)" in answer.text
    assert _uploads(work) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # and the server goes on serving
    assert client.get("/").status_code == 200


def test_each_upload_is_decoded_once_and_decodes_are_bounded(loaded, work, fixture_png, monkeypatch):
    app = create_app(loaded, work, max_upload_mb=1, decode_slots=1)
    real, active, peak, calls = predict_module.read_normalised, [0], [0], []
    guard = threading.Lock()

    def slow_decode(path, **kwargs):
        with guard:
            calls.append(path)
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.05)
            return real(path, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(predict_module, "read_normalised", slow_decode)
    answer = _post(app.test_client(), {"x": "100", "y": "60", "r": "12"}, (fixture_png.read_bytes(), "case.png"))
    assert answer.status_code == 200 and _probabilities(answer.text)
    assert len(calls) == 1  # the preview and the prediction share one decoded array
    statuses = []

    def upload():
        statuses.append(_post(app.test_client(), {}, (fixture_png.read_bytes(), "case.png")).status_code)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4 and len(calls) == 5 and peak[0] == 1


@pytest.mark.parametrize("fields, message", [
    ({"x": "100", "y": "60", "r": "99999999"},
     "The radius must be 1 pixel to the image&#39;s larger side (160 pixels). Received: radius=1e+08"),
    ({"x": "100", "y": "60", "r": "0.0001"}, "Received: radius=0.0001"),
    ({"x": "100", "y": "60", "r": "-3"}, "Received: radius=-3"),
    ({"x": "1e9", "y": "60", "r": "12"},
     "The lesion centre lies outside the 160x160 image: x must be 0 to 159, y 0 to 159. Received: x=1e+09, y=60"),
    ({"x": "100", "y": "160", "r": "12"}, "Received: x=100, y=160"),
    ({"x": "100", "y": "-1", "r": "12", "y_from_bottom": "1"}, "(counted from the bottom). Received: x=100, y=-1"),
    ({"x": "nan", "y": "60", "r": "12"}, "x must be a number of pixels"),
])
def test_roi_values_are_bounded_to_the_image(loaded, work, fixture_png, fields, message):
    answer = _post(create_app(loaded, work).test_client(), fields, (fixture_png.read_bytes(), "case.png"))
    assert answer.status_code == 400 and ERROR in answer.text and message in answer.text
    assert 'id="preview"' in answer.text  # the image stays on the page to mark again


def test_over_long_values_are_not_echoed_in_full(loaded, work, fixture_png):
    client = create_app(loaded, work).test_client()
    long = "1" * 5000
    answer = _post(client, {"x": long, "y": "60", "r": "12"}, (fixture_png.read_bytes(), "case.png"))
    assert answer.status_code == 400 and "x=1.11111e+4999" not in answer.text
    assert "1" * 100 not in answer.text
    answer = _post(client, {"x": "9" * 30 + "x", "y": "60", "r": "12"}, (fixture_png.read_bytes(), "case.png"))
    assert "Received: x=&#39;" + "9" * 24 + "&#39;... (31 characters)" in answer.text
    named = _post(client, {}, (b"not an image", "a" * 3000 + ".png"))
    assert named.status_code == 400 and "a" * 121 not in named.text and "a" * 120 + "..." in named.text


def test_a_chunked_over_cap_upload_says_how_much_was_refused(loaded, work):
    client = create_app(loaded, work, max_upload_mb=0.05).test_client()
    token = _csrf(client)
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + bytes(200_000) + f"\r\n--{boundary}--\r\n".encode()
    answer = client.post("/predict", input_stream=io.BytesIO(body),
                         content_type=f"multipart/form-data; boundary={boundary}",
                         headers={"Transfer-Encoding": "chunked"},  # as the server sees it: no length
                         environ_overrides={"wsgi.input_terminated": True})
    assert answer.status_code == 413
    assert "Received: None" not in answer.text
    assert "Received: more than 52,428 bytes (a chunked upload, stopped at the limit)" in answer.text
    sized = _post(client, {}, (bytes(60_000), "big.png"))
    assert sized.status_code == 413 and re.search(r"Received: 60,[0-9]{3} bytes", sized.text)


def test_a_post_needs_the_sessions_csrf_token(loaded, work, fixture_png):
    client = create_app(loaded, work).test_client()
    upload = (fixture_png.read_bytes(), "case.png")
    for data in ({}, {"csrf_token": "0" * 32}):
        refused = _post(client, data, upload, csrf=False)
        assert refused.status_code == 403 and ERROR in refused.text
        assert "the form must carry this session&#39;s token" in refused.text
    other = create_app(loaded, work).test_client()  # a token from another session does not do
    assert _post(client, {"csrf_token": _csrf(other)}, upload, csrf=False).status_code == 403
    assert _uploads(work) == []  # refused before the upload is stored
    page = client.get("/").text
    token = re.search(r'name="csrf_token" value="([0-9a-f]{32})"', page).group(1)
    assert _post(client, {"csrf_token": token}, upload, csrf=False).status_code == 200


def test_cross_origin_posts_and_foreign_host_names_are_refused(loaded, work, fixture_png):
    client = create_app(loaded, work).test_client()
    upload = (fixture_png.read_bytes(), "case.png")
    foreign = _post(client, {}, upload, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "Received: Origin=&#39;https://evil.example&#39;" in foreign.text
    assert _post(client, {}, upload, headers={"Origin": "null"}).status_code == 403
    assert _post(client, {}, upload, headers={"Origin": "http://localhost"}).status_code == 200
    rebound = client.get("/", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and "Received: Host=&#39;evil.example:8000&#39;" in rebound.text
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert client.get("/", headers={"Host": host}).status_code == 200
    assert allowed_hosts_for("127.0.0.1") == ("127.0.0.1", "localhost", "::1")
    assert allowed_hosts_for("192.168.1.5") == ("192.168.1.5",) and allowed_hosts_for("0.0.0.0") is None
    open_app = create_app(loaded, work, allowed_hosts=None).test_client()
    assert open_app.get("/", headers={"Host": "scanner.lan"}).status_code == 200


def test_every_response_carries_the_security_headers(loaded, work):
    client = create_app(loaded, work, max_upload_mb=0.05).test_client()
    responses = [client.get("/"), client.get("/nowhere"), _post(client, {}),
                 _post(client, {}, (bytes(60_000), "big.png")), _post(client, {}, csrf=False),
                 client.get("/", headers={"Host": "evil.example"})]
    assert [r.status_code for r in responses] == [200, 404, 400, 413, 403, 403]
    for response in responses:
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)
        assert f'<script nonce="{nonce}">' in response.text and f'<style nonce="{nonce}">' in response.text
    cookie = responses[0].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
