"""A mini-MIAS folder in the real format (Info.txt with CRLF and text around the table, 1024 x 1024
images), shared by the reader's tests and the detection tests."""
from __future__ import annotations

import numpy as np
from PIL import Image

INFO = (
    "              MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY\r\n"
    "5th,6th columns: x,y image-coordinates of centre of abnormality.\r\n"
    "=================================================================\r\n"
    "\r\n"
    "mdb001 G CIRC B 535 425 197\r\n"
    "mdb002 G CIRC B 522 280 69\r\n"
    "mdb003 D NORM \r\n"
    "mdb004 F CALC B\r\n"
    "mdb005 F MISC B 233 994 29\r\n"
    "mdb005 F MISC M 313 540 27\r\n"
    "mdb006 D CALC M *NOTE 3* \r\n"
    "\r\n"
    "=================================================================\r\n"
)


def write_folder(root, info=INFO, suffix=".pgm", refnums=range(1, 7)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_bytes(info.encode("latin-1"))
    for number in refnums:
        pixels = np.full((1024, 1024), number, dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"mdb{number:03d}{suffix}")
    return root
