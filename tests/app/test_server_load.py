"""A bounded load test of `serve`: the app in a threaded Werkzeug server on 127.0.0.1, 20 uploads at
once (good, large, over the pixel cap, decompression bombs, truncated, over the upload cap, chunked,
without the CSRF token, from a foreign origin): every status as expected, peak RSS under a stated
bound, and memory back near its level before the load once it is over.

The server runs in a process of its own, as `mammo-keras serve` does, and its memory is read from
/proc/<pid>/status: the test worker's memory (other tests' models, the client threads) is not the
server's."""
from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from app_fixtures import fixture_png, trained_model  # noqa: F401 - fixtures
from hostile_files import bomb_png, large_png
from mammo_keras.app.predict import load_model_folder
from mammo_keras.app.server import create_app

STATUS = Path("/proc/self/status")  # Linux: where a process's RSS and peak RSS are read
MAX_PIXELS = 4_000_000
LARGE = (1900, 1900)  # 3.6 MP, under the cap: decoded as 16-bit, then float32 (about 14 MB a copy)
DECODE_SLOTS = 2
# A decoded upload costs at most about 5 copies of its float32 array at once (decode, scaling, preview
# and panel resizing): 5 x 14.4 MB per slot; the bound allows that for every slot, plus 150 MB for
# TensorFlow's per-thread buffers, twenty request threads and their upload buffers (288 MB in all;
# measured here: 110-170 MB).
PEAK_BOUND_MB = DECODE_SLOTS * 5 * LARGE[0] * LARGE[1] * 4 / 2**20 + 150
# What may stay once the server process is idle after the measured round (`_settled_kb`): glibc keeps
# finished threads' stacks (up to 40 MB) for new threads and per-thread arenas keep some freed pages
# (measured here, with a CPU-bound process beside it: 26-31 MB). The server kept 2 GB after three
# large uploads. A further round may move it either way by arena noise (measured: -48 to +25 MB), but
# not by much: memory that grows round after round is a leak.
SETTLED_BOUND_MB = 128
GROWTH_PER_ROUND_MB = 96


def _settled_kb(status: Path, seconds: float = 3.0) -> int:
    """VmRSS once the server is idle: the last requests' teardown (the heap trim) runs after their answers
    are sent, later on a loaded machine, so the lowest RSS over a few seconds after the load."""
    lowest, ends = _kb(status, "VmRSS"), time.perf_counter() + seconds
    while time.perf_counter() < ends:
        time.sleep(0.1)
        lowest = min(lowest, _kb(status, "VmRSS"))
    return lowest


def _kb(status: Path, field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", status.read_text(), flags=re.M).group(1))


def _multipart(fields: dict[str, str], upload: tuple[bytes, str] | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if upload is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{upload[1]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + upload[0] + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _request(port: int, body: bytes, content_type: str, headers: dict, *, chunked: bool = False) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        sent = {"Content-Type": content_type, **headers}
        try:
            if chunked:
                pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
                connection.request("POST", "/predict", body=pieces, headers=sent, encode_chunked=True)
            else:
                connection.request("POST", "/predict", body=body, headers=sent)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before the whole body was sent; its answer is still there
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


SERVE = """
import sys
from werkzeug.serving import make_server
from mammo_keras.app.predict import load_model_folder
from mammo_keras.app.server import create_app
folder, work, max_pixels, slots = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = create_app(load_model_folder(folder), work, max_upload_mb=2, max_pixels=max_pixels, decode_slots=slots,
                 keep_uploads=40)
httpd = make_server("127.0.0.1", 0, app, threaded=True)
print(httpd.port, flush=True)
httpd.serve_forever()
"""


@pytest.fixture
def server(trained_model, tmp_path):
    """(port, upload folder, /proc/<pid>/status of the server process)."""
    work = tmp_path / "uploads"
    work.mkdir()
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                                os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(trained_model), str(work), str(MAX_PIXELS),
                                str(DECODE_SLOTS)], stdout=subprocess.PIPE, text=True, env=environment)
    try:
        port = int(process.stdout.readline())
        yield port, work, Path(f"/proc/{process.pid}/status")
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.skipif(not STATUS.is_file(), reason="needs /proc/self/status (Linux) to read the peak RSS")
def test_twenty_concurrent_uploads_of_every_kind(server, fixture_png):
    port, work, server_status = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/")
    page = connection.getresponse()
    cookie = page.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf_token" value="([0-9a-f]{32})"', page.read().decode()).group(1)
    connection.close()
    good, lesion = fixture_png.read_bytes(), {"x": "100", "y": "60", "r": "12"}
    large, centre = large_png(*LARGE), {"x": "950", "y": "950", "r": "60"}
    cases = (  # (expected status, what the page must say, fields, upload, extra headers, chunked)
        [(200, 'id="probabilities"', lesion, (good, "case.png"), {}, False)] * 4
        + [(200, 'id="probabilities"', centre, (large, "large.png"), {}, False)] * 6
        + [(400, "images may have at most 4,000,000 pixels", lesion, (large_png(2100, 2100), "over.png"), {},
            False)] * 2
        + [(400, "decompression-bomb limit", {}, (bomb_png(), "bomb.png"), {}, False)] * 2
        + [(400, "truncated or corrupt", lesion, (good[:400], "cut.png"), {}, False)] * 2
        + [(413, "Received: 3,", {}, (bytes(3 * 2**20), "huge.png"), {}, False),
           (413, "a chunked upload, stopped at the limit", {}, (bytes(3 * 2**20), "huge.png"), {}, True),
           (403, "session&#39;s token", {"csrf_token": ""}, (good, "case.png"), {}, False),
           (403, "Origin=&#39;http://evil.example&#39;", {}, (good, "case.png"), {"Origin": "http://evil.example"},
            False)])
    assert len(cases) == 20
    requests = []
    for status, message, fields, upload, headers, chunked in cases:
        body, content_type = _multipart({"csrf_token": token, **fields}, upload)
        requests.append((body, content_type, {"Cookie": cookie, **headers}, chunked))
    del large  # only the request bodies hold the uploads now

    def load() -> list:
        results: list = [None] * len(cases)

        def send(index):
            body, content_type, headers, chunked = requests[index]
            status, text = _request(port, body, content_type, headers, chunked=chunked)
            alert = re.search(r'role="alert">([^<]*)', text)
            results[index] = (status, cases[index][1] in text, alert.group(1)[:300] if alert else "")  # not the page

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        return results

    first = load()  # a first round: first-use costs (TensorFlow's kernels, allocator pools) are not measured
    time.sleep(1.0)  # the first round's teardown
    baseline = _settled_kb(server_status)
    try:
        server_status.with_name("clear_refs").write_text("5")  # reset VmHWM, the peak RSS, to the current RSS
        sampled = None
    except OSError:  # not allowed here: sample VmRSS every few milliseconds instead
        sampled, stop = [baseline], threading.Event()

        def sample():
            while not stop.wait(0.002):
                sampled.append(_kb(server_status, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    started = time.perf_counter()
    results = load()
    seconds = time.perf_counter() - started
    if sampled is None:
        peak_mb = (_kb(server_status, "VmHWM") - baseline) / 1024
    else:
        stop.set()
        sampler.join()
        peak_mb = (max(sampled) - baseline) / 1024
    settled_mb = (_settled_kb(server_status) - baseline) / 1024
    again = load()
    growth_mb = (_settled_kb(server_status) - baseline) / 1024 - settled_mb

    for round_results in (first, results, again):
        for (status, message, *_), result in zip(cases, round_results):
            assert result is not None and result[:2] == (status, True), (status, message, result)
    assert peak_mb < PEAK_BOUND_MB, f"peak RSS grew {peak_mb:.0f} MB (bound {PEAK_BOUND_MB:.0f} MB) in {seconds:.1f} s"
    assert settled_mb < SETTLED_BOUND_MB, f"RSS stayed {settled_mb:.0f} MB above its level before the load"
    print(f"server load: peak {peak_mb:.0f} MB, settled {settled_mb:.0f} MB, a further round {growth_mb:+.0f} MB")
    assert growth_mb < GROWTH_PER_ROUND_MB, f"RSS grew {growth_mb:.0f} MB more in a further round of the load"
    # the refused uploads were removed; the 3 x 10 classified ones are kept for marking again
    assert len([p for p in work.iterdir() if p.suffix != ".name"]) == 30
