"""`data download`: offline failure, a broken archive, and a real archive served from disk."""
from __future__ import annotations

import tarfile

import pytest

from mammo_keras.cli import main
from mammo_keras.data.download import DownloadError, download_mias, expected_pixel_sums, verify_mias

CLOSED_PORT = "http://127.0.0.1:9/all-mias.tar.gz"  # discard port: nothing listens, fails at once


def test_offline_download_says_how_to_place_files(tmp_path, capsys):
    with pytest.raises(DownloadError, match="Are you offline") as caught:
        download_mias(tmp_path / "m", url=CLOSED_PORT, timeout=5)
    assert "all-mias.tar.gz" in str(caught.value) and "--root DIR" in str(caught.value)
    assert main(["data", "download", "mias", "--out", str(tmp_path / "m"), "--url", CLOSED_PORT]) == 1
    assert "Place the files by hand" in capsys.readouterr().err


def test_other_datasets_print_instructions(capsys):
    assert main(["data", "download", "inbreast"]) == 2
    err = capsys.readouterr().err
    assert "cannot be downloaded automatically" in err and "AllDICOMs" in err


def test_corrupt_archive_is_reported(tmp_path):
    bad = tmp_path / "all-mias.tar.gz"
    bad.write_bytes(b"not a tar file")
    with pytest.raises(DownloadError, match="not a valid archive"):
        download_mias(tmp_path / "m", url=bad.as_uri())


def test_checksums_cover_all_images():
    sums = expected_pixel_sums()
    assert len(sums) == 322 and sorted(sums)[0] == "mdb001" and sorted(sums)[-1] == "mdb322"


def test_real_archive_downloads_and_verifies(mini_mias, tmp_path):
    archive = tmp_path / "all-mias.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as bundle:
        for path in sorted(mini_mias.iterdir()):
            bundle.add(path, arcname=path.name)
    folder = download_mias(tmp_path / "mias", url=archive.as_uri())
    assert verify_mias(folder) == []
    (folder / "mdb010.png").unlink()
    assert verify_mias(folder) == [f"{folder / 'mdb010'}.pgm: missing"]
