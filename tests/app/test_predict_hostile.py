"""`mammo-keras predict` over a batch holding hostile files: each bad one is one line
`error: <file>: <why>`, the others are still classified, the exit status says some failed."""
from __future__ import annotations

import csv
import io

from app_fixtures import fixture_png, trained_model  # noqa: F401 - fixtures
from hostile_files import bomb_png, large_png
from mammo_keras.cli import main


def test_a_bomb_and_a_broken_file_do_not_stop_the_batch(trained_model, fixture_png, tmp_path, capsys):
    bomb, cut, wide = tmp_path / "bomb.png", tmp_path / "cut.png", tmp_path / "wide.png"
    bomb.write_bytes(bomb_png())
    cut.write_bytes(fixture_png.read_bytes()[:300])
    wide.write_bytes(large_png(300, 100))
    code = main(["predict", str(fixture_png), str(bomb), str(cut), str(wide), str(fixture_png),
                 "--model", str(trained_model), "--roi", "100,60,12", "--csv", "--out", str(tmp_path / "out"),
                 "--max-pixels", "26000"])  # the 160 x 160 fixture is 25,600 pixels
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {bomb}: images may have at most 26,000 pixels (--max-pixels), checked before decoding; this one "
        "is over Pillow's decompression-bomb limit too. Received: Image size (900000000 pixels) exceeds limit "
        "of 178956970 pixels, could be decompression bomb DOS attack.",
        f"error: {cut}: image data is truncated or corrupt (image file is truncated)",
        f"error: {wide}: images may have at most 26,000 pixels (0.026 megapixels, --max-pixels), checked before "
        "decoding. Received: 300x100 = 30,000 pixels",
    ], captured.err
    assert "Traceback" not in captured.err
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [row["image"] for row in rows] == [str(fixture_png)] * 2
    assert [row["predicted"] for row in rows] == ["malignant"] * 2


def test_max_pixels_zero_lifts_the_cap_but_not_the_bomb_limit(trained_model, fixture_png, tmp_path, capsys):
    wide = tmp_path / "wide.png"
    wide.write_bytes(large_png(200, 100))
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    code = main(["predict", str(wide), str(tmp_path / "bomb.png"), "--model", str(trained_model), "--roi",
                 "100,60,12", "--csv", "--out", str(tmp_path / "out"), "--max-pixels", "0"])
    captured = capsys.readouterr()
    assert code == 1 and [row["image"] for row in csv.DictReader(io.StringIO(captured.out))] == [str(wide)]
    assert f"error: {tmp_path / 'bomb.png'}: images over Pillow's decompression-bomb limit" in captured.err


def test_every_file_of_the_bad_input_corpus_is_one_error_line_and_the_batch_goes_on(trained_model, fixture_png,
                                                                                     tmp_path, capsys):
    """tests/data/bad_inputs/ through `predict` itself, between two good images."""
    from pathlib import Path

    corpus = sorted(p for p in (Path(__file__).resolve().parents[1] / "data" / "bad_inputs").iterdir()
                    if p.suffix not in (".py", ".md"))
    code = main(["predict", str(fixture_png), *map(str, corpus), str(fixture_png), "--model", str(trained_model),
                 "--roi", "100,60,12", "--csv", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert [line.split(": ")[1] for line in errors] == [str(p) for p in corpus], captured.err
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [row["image"] for row in rows] == [str(fixture_png)] * 2


def test_an_image_between_pillows_two_bomb_limits_is_one_error_line(trained_model, fixture_png, tmp_path, capsys,
                                                                      recwarn):
    """Before: a 100 MP header (over Pillow's 89 MP warning limit, under its 179 MP error) added Pillow's
    two-line DecompressionBombWarning to the one-line error."""
    big = tmp_path / "big.png"
    big.write_bytes(bomb_png(10000, 10000, rows=1))
    code = main(["predict", str(big), str(fixture_png), "--model", str(trained_model), "--roi", "100,60,12",
                 "--csv", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and captured.err.splitlines() == [
        f"error: {big}: images may have at most 40,000,000 pixels (40 megapixels, --max-pixels), checked before "
        "decoding. Received: 10000x10000 = 100,000,000 pixels"], captured.err
    assert not [w for w in recwarn if "could be decompression bomb" in str(w.message)]
