"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

Without Chromium the test is skipped, saying why, unless MAMMO_REQUIRE_BROWSER=1 (set by
.ci/run), which turns the skip into a failure so that CI cannot pass without the browser.
"""
from __future__ import annotations

import os
import shutil
import threading

import pytest

from app_fixtures import LESION
from app_fixtures import fixture_png, trained_model  # noqa: F401 - fixtures
from mammo_keras.app.predict import Lesion, load_model_folder, predict_image
from mammo_keras.app.server import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def _missing(reason: str):
    if os.environ.get("MAMMO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MAMMO_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"{reason} (apt-get install chromium chromium-driver; pip install selenium)")


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    if not (CHROMIUM and CHROMEDRIVER):
        _missing("chromium or chromedriver is not on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    """The app on 127.0.0.1 at a free port, in a thread; shut down cleanly afterwards."""
    from werkzeug.serving import make_server

    loaded = load_model_folder(trained_model)
    app = create_app(loaded, tmp_path_factory.mktemp("uploads"), max_upload_mb=1)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.port}", loaded
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.server_close()


def _probabilities(driver) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    return {cell.get_attribute("data-class"): float(cell.text)
            for cell in driver.find_elements(By.CSS_SELECTOR, "#probabilities td.probability")}


def test_upload_click_the_lesion_and_read_the_result(browser, server, fixture_png, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, loaded = server
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    assert "Breast lesion classification" in browser.find_element(By.TAG_NAME, "h1").text

    # upload without a lesion: the page shows the image and asks for a click on the lesion
    browser.find_element(By.ID, "image-input").send_keys(str(fixture_png))
    browser.find_element(By.ID, "classify").click()
    preview = wait.until(ec.visibility_of_element_located((By.ID, "preview")))
    assert "Click the centre of the lesion" in browser.find_element(By.ID, "notice").text
    assert preview.size["width"] == 160  # the 160-pixel image is shown 1:1
    x, y, r = LESION
    # Selenium 4 offsets are from the element's centre; offsetX/offsetY then give the pixel
    ActionChains(browser).move_to_element_with_offset(preview, x - 80, y - 80).click().perform()
    clicked = (float(browser.find_element(By.ID, "x").get_attribute("value")),
               float(browser.find_element(By.ID, "y").get_attribute("value")))
    assert abs(clicked[0] - x) <= 1 and abs(clicked[1] - y) <= 1
    assert browser.find_element(By.ID, "marker").is_displayed()
    radius = browser.find_element(By.ID, "r")
    radius.clear()
    radius.send_keys(str(r))
    browser.find_element(By.ID, "classify").click()
    wait.until(ec.presence_of_element_located((By.ID, "probabilities")))

    expected = predict_image(loaded, fixture_png, Lesion("circle", (*clicked, r))).probabilities
    assert _probabilities(browser) == pytest.approx(expected, abs=1e-4)
    assert browser.find_element(By.ID, "predicted").text == max(expected, key=expected.get)
    heatmap = browser.find_element(By.ID, "heatmap")
    assert browser.execute_script("return arguments[0].naturalWidth", heatmap) == 384 + 8 + 384

    # a file that is not an image: an error on the page, and the next upload still works
    text = tmp_path / "notes.png"
    text.write_text("not a mammogram")
    browser.get(url)
    browser.find_element(By.ID, "image-input").send_keys(str(text))
    browser.find_element(By.ID, "classify").click()
    error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
    assert "not an image this tool reads" in error.text
    browser.get(url)
    browser.find_element(By.ID, "image-input").send_keys(str(fixture_png))
    for name, value in zip(("x", "y", "r"), LESION):
        browser.find_element(By.ID, name).send_keys(str(value))
    browser.find_element(By.ID, "classify").click()
    wait.until(ec.presence_of_element_located((By.ID, "probabilities")))
    exact = predict_image(loaded, fixture_png, Lesion("circle", LESION)).probabilities
    assert _probabilities(browser) == pytest.approx(exact, abs=1e-4)
