"""Fetching public datasets: the real download for mini-MIAS, instructions for the others.

The MIAS archive has no published checksum, so the download is verified by content:
the sha256 of every image's decoded pixels is compared with `mias_pixels.sha256.json`
(computed from a verified copy; PGM and lossless PNG decode to the same pixels).
"""
from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from mammo_keras.data import reader_module

MIAS_URL = "http://peipa.essex.ac.uk/pix/mias/all-mias.tar.gz"
PIXEL_SUMS = Path(__file__).with_name("mias_pixels.sha256.json")


class DownloadError(RuntimeError):
    """The download failed; the message says how to place the files by hand."""


def expected_pixel_sums() -> dict[str, str]:
    """{'mdb001': sha256 of its 1024x1024 uint8 pixels, ...} for the 322 images."""
    return json.loads(PIXEL_SUMS.read_text())


def pixel_sha256(path: str | Path) -> str:
    """sha256 of an image file's decoded pixel bytes."""
    with Image.open(path) as image:
        return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def verify_mias(folder: str | Path) -> list[str]:
    """Problems found in a MIAS folder (missing images, pixel mismatches); empty when valid."""
    folder = Path(folder)
    problems = [] if (folder / "Info.txt").is_file() else [f"{folder / 'Info.txt'}: missing"]
    mias = reader_module("mias")
    for refnum, expected in expected_pixel_sums().items():
        image = mias.find_image(folder, refnum)
        if image is None:
            problems.append(f"{folder / refnum}.pgm: missing")
        elif pixel_sha256(image) != expected:
            problems.append(f"{image}: pixels differ from the published image")
    return problems


def download_mias(out: str | Path, *, url: str = MIAS_URL, timeout: float = 30.0) -> Path:
    """Download and unpack all-mias.tar.gz into `out`, then verify every image.

    Raises:
        DownloadError: unreachable server (e.g. offline) or a failed verification;
            the message says how to place the files by hand.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manual = reader_module("mias").HOW_TO_GET
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        archive = Path(scratch) / "all-mias.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as stream:
                while block := response.read(1 << 20):
                    stream.write(block)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise DownloadError(f"Could not download {url} ({error}). Are you offline?\n"
                                f"Place the files by hand instead:\n{manual}") from None
        try:
            with tarfile.open(archive, "r:gz") as bundle:
                bundle.extractall(out, filter="data")
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DownloadError(f"{archive.name} from {url} is not a valid archive ({error}).\n{manual}") from None
    problems = verify_mias(out)
    if problems:
        listed = "\n  ".join(problems[:10])
        raise DownloadError(f"Downloaded MIAS in {out} failed verification ({len(problems)} problems):\n"
                            f"  {listed}")
    return out


def instructions(dataset: str) -> str:
    """How to obtain `dataset` by hand, and the layout the reader expects."""
    module = reader_module(dataset)
    return f"{module.HOW_TO_GET}\nExpected layout:\n{module.LAYOUT}"
