"""The web app through Flask's test client: results, bad requests, upload cap, its own folder only,
hostile files (pixel cap, decompression bomb), cross-site requests and security headers."""
from __future__ import annotations

import io
import re

import pytest

from app_fixtures import LESION
from app_fixtures import fixture_png, trained_model  # noqa: F401 - fixtures
from mammo_keras.app.predict import Lesion, load_model_folder, predict_image
from mammo_keras.app.server import create_app


@pytest.fixture(scope="module")
def loaded(trained_model):
    return load_model_folder(trained_model)


@pytest.fixture
def app_and_folder(loaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written outside the upload folder would land here
    work = tmp_path / "uploads"
    work.mkdir()
    app = create_app(loaded, work, max_upload_mb=0.05, keep_uploads=2)
    return app, work


def _probabilities(html: str) -> dict[str, float]:
    return {name: float(value) for name, value in
            re.findall(r'class="probability" data-class="([^"]+)">([0-9.]+)<', html)}


def _csrf(client) -> str:
    """The CSRF token of the client's session, read from the form as a browser would."""
    return re.search(r'name="csrf_token" value="([0-9a-f]{32})"', client.get("/").text).group(1)


def _post(client, data: dict, upload: tuple[bytes, str] | None = None, *, csrf: bool = True, **kwargs):
    if csrf:
        data = {"csrf_token": _csrf(client), **data}
    if upload is not None:
        data = {**data, "image": (io.BytesIO(upload[0]), upload[1])}
    return client.post("/predict", data=data, content_type="multipart/form-data", **kwargs)


def test_upload_with_a_lesion_shows_probabilities_and_heatmap(app_and_folder, loaded, fixture_png):
    app, _ = app_and_folder
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and "chougrad recipe" in page.text and 'id="image-input"' in page.text
    x, y, r = LESION
    answer = _post(client, {"x": str(x), "y": str(y), "r": str(r)}, (fixture_png.read_bytes(), "case.png"))
    assert answer.status_code == 200
    expected = predict_image(loaded, fixture_png, Lesion("circle", LESION)).probabilities
    found = _probabilities(answer.text)
    assert found == pytest.approx(expected, abs=1e-4)
    assert '<span id="predicted">malignant</span>' in answer.text
    assert 'id="heatmap" alt="Grad-CAM heatmap" src="data:image/png;base64,iVBOR' in answer.text
    assert '<span id="roi">88,48,112,72</span>' in answer.text


def test_marking_the_lesion_after_the_upload_reuses_it(app_and_folder, loaded, fixture_png):
    app, work = app_and_folder
    client = app.test_client()
    first = _post(client, {}, (fixture_png.read_bytes(), "case.png"))
    assert first.status_code == 200 and "Click the centre of the lesion" in first.text
    assert 'id="preview"' in first.text and 'data-width="160"' in first.text
    token = re.search(r'name="token" value="([0-9a-f]{32})"', first.text).group(1)
    # MIAS-style coordinates: y counted from the bottom of the 160-row image
    second = _post(client, {"token": token, "x": "100", "y": str(160 - 60), "r": "12", "y_from_bottom": "1"})
    assert second.status_code == 200 and '<span id="roi">88,48,112,72</span>' in second.text
    expected = predict_image(loaded, fixture_png, Lesion("circle", LESION)).probabilities
    assert _probabilities(second.text) == pytest.approx(expected, abs=1e-4)
    assert [p.name for p in work.iterdir() if p.suffix != ".name"] == [token]


def test_bad_requests_get_a_message_and_the_server_goes_on(app_and_folder, fixture_png, tmp_path):
    app, work = app_and_folder
    client = app.test_client()
    good = fixture_png.read_bytes()
    cases = [
        (_post(client, {}, (b"name,age\nx,1\n", "scan.png")), 400, "not an image this tool reads"),
        (_post(client, {"x": "1", "y": "1", "r": "5"}, (good[:300], "cut.png")), 400, "truncated or corrupt"),
        (_post(client, {"x": "100", "y": "60", "r": "12"}, (b"\0" * 128 + b"DICM\x02\x00", "scan.dcm")), 400,
         "DICOM file has no pixel data"),
        (_post(client, {"x": "900", "y": "60", "r": "12"}, (good, "case.png")), 400, "outside the 160x160 image"),
        (_post(client, {"x": "100", "y": "", "r": "12"}, (good, "case.png")), 400, "Give the lesion&#39;s x, y"),
        (_post(client, {"x": "1e", "y": "2", "r": "3"}, (good, "case.png")), 400,
         "The lesion&#39;s x must be a number of pixels. Received: x=&#39;1e&#39;"),
        (_post(client, {}, (b"", "empty.png")), 400, "the uploaded file is empty"),
        (_post(client, {}), 400, "Choose an image file"),
        (_post(client, {"token": "../../etc/passwd"}), 400, "32 hexadecimal characters"),
        (_post(client, {"token": "0" * 32}), 400, "no longer kept"),
        (_post(client, {}, (b"\x89PNG" + bytes(60_000), "huge.png")), 413, "larger than the 0.05 MB limit"),
        (client.get("/nowhere"), 404, "404 Not Found"),
    ]
    for answer, status, message in cases:
        assert answer.status_code == status, answer.text[:300]
        assert '<div id="error" class="error" role="alert">' in answer.text
        assert message in answer.text, message
    # an ROI outside the image keeps the upload on the page, to mark again
    assert 'id="preview"' in cases[3][0].text
    after = _post(client, {"x": "100", "y": "60", "r": "12"}, (good, "case.png"))
    assert after.status_code == 200 and _probabilities(after.text)
    # nothing outside the upload folder; unreadable uploads dropped; at most keep_uploads kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads"]
    kept = [p for p in work.iterdir() if p.suffix != ".name"]
    assert len(kept) == 2 and len(list(work.glob("*.name"))) == 2


def test_the_app_needs_its_folder_and_a_positive_cap(loaded, tmp_path):
    with pytest.raises(ValueError, match="existing folder"):
        create_app(loaded, tmp_path / "absent")
    with pytest.raises(ValueError, match="max_upload_mb must be positive"):
        create_app(loaded, tmp_path, max_upload_mb=0)


def test_uploads_below_the_cap_are_accepted_whatever_their_size(loaded, tmp_path):
    """A mammogram file is hundreds of KB to tens of MB; only MAX_CONTENT_LENGTH may refuse it."""
    import numpy as np
    from PIL import Image

    work = tmp_path / "uploads"
    work.mkdir()
    client = create_app(loaded, work, max_upload_mb=2).test_client()
    noise = np.random.default_rng(0).integers(0, 256, (800, 800), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert 500_000 < len(buffer.getvalue()) < 2 * 1024 * 1024
    answer = _post(client, {"x": "400", "y": "400", "r": "40"}, (buffer.getvalue(), "noise.png"))
    assert answer.status_code == 200 and sum(_probabilities(answer.text).values()) == pytest.approx(1.0, abs=2e-4)


def test_whole_image_models_need_no_lesion(fixture_png, tmp_path):
    """A Shen-style whole-image model: no ROI fields, a result straight after the upload."""
    import keras

    from mammo_keras import io as model_io

    inputs = keras.Input((24, 18, 3), name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model_io.save(keras.Model(inputs, outputs), tmp_path / "model", class_names=["not malignant", "malignant"],
                  preprocessing={"recipe": "shen", "options": {"height": 48, "width": 36}, "input_hw": [24, 18],
                                 "input_channels": 3, "input_scale": 1.0})
    loaded = load_model_folder(tmp_path / "model")
    result = predict_image(loaded, fixture_png)
    assert result.row()["roi"] == "whole" and set(result.row()) >= {"not_malignant", "malignant"}
    assert result.panel.shape == (384, 384, 3)
    work = tmp_path / "uploads"
    work.mkdir()
    client = create_app(loaded, work).test_client()
    assert 'id="x"' not in client.get("/").text
    answer = _post(client, {}, (fixture_png.read_bytes(), "case.png"))
    assert answer.status_code == 200
    assert _probabilities(answer.text) == pytest.approx(result.probabilities, abs=1e-4)
    assert '<span id="roi">whole</span>' in answer.text
