"""Make the README screenshot of `mammo-keras serve`: headless Chromium uploads an image, marks the
lesion, classifies it and captures the page.

    python docs/make_screenshot.py --model results/.../test/model --image mdb184.png \
        --roi 352,624,114 --y-origin bottom-left --out docs/serve_screenshot.png

Needs Debian's chromium + chromium-driver and selenium (as the browser test does).
"""
from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import threading
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--roi", required=True, metavar="X,Y,R")
    parser.add_argument("--y-origin", default="top-left", choices=("top-left", "bottom-left"))
    parser.add_argument("--out", default="docs/serve_screenshot.png")
    parser.add_argument("--width", type=int, default=1000, help="browser window width in pixels")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    from mammo_keras.app.predict import load_model_folder
    from mammo_keras.app.server import create_app

    work = Path(tempfile.mkdtemp(prefix="mammo_keras_screenshot_"))
    httpd = make_server("127.0.0.1", 0, create_app(load_model_folder(args.model), work), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={args.width},1400", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{httpd.port}/")
        driver.find_element(By.ID, "image-input").send_keys(str(Path(args.image).resolve()))
        for name, value in zip(("x", "y", "r"), args.roi.split(",")):
            driver.find_element(By.ID, name).send_keys(value.strip())
        if args.y_origin == "bottom-left":
            driver.find_element(By.ID, "y-from-bottom").click()
        driver.find_element(By.ID, "classify").click()
        WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.ID, "probabilities")))
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "var i = document.getElementById('heatmap'); return i.complete && i.naturalWidth > 0"))
        height = driver.execute_script("return document.getElementById('result').getBoundingClientRect().bottom")
        page = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
        page = page.crop((0, 0, page.width, min(page.height, int(height) + 20)))
        page.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            args.out, optimize=True)
        print(f"{args.out}: {page.width}x{page.height}, {Path(args.out).stat().st_size // 1024} KB")
    finally:
        driver.quit()
        httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
