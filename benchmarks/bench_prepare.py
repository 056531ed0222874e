"""Benchmark 4: `prepare` speed and peak memory on full-size CBIS-DDSM-like DICOMs, 1 and 2 workers.

N = 50, 100 and 200 synthetic cases (`cbis_phantom`: a 4500 x 3000 16-bit RLE mammogram, its
full-size 8-bit RLE ROI mask and its crop, in the TCIA download layout with the description CSV)
go through what `mammo-keras data prepare cbis_ddsm --task chougrad` runs: the reader (CSV,
DICOM headers to resolve the files, the masks' boxes) and `prepare` (decode each full image, cut
Chougrad's 224 px ROI, stack images.npy), each (N, workers) in its own process, so that its peak
resident memory is its own: the main process and the largest worker (ru_maxrss). The files are
in the page cache (just written): this is the CPU cost, not the disk's. Figures: images/s and
peak RSS per (N, workers); the seconds per case (the slope from N = 100 to 200) projected to the
10,239 DICOM files of CBIS-DDSM (3 files a case here: about 3,413 cases; the real set has 3,103
full images and 3,568 lesions, so this is an estimate). The ratio is 2 workers / 1 worker at
N = 200 (no goal: on a shared 2-core machine the second worker can only take the other core).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, check_size, result

SIZES = {"tiny": dict(counts=(4, 8), shape=(300, 200), workers=(1, 2)),
         "full": dict(counts=(50, 100, 200), shape=(4500, 3000), workers=(1, 2))}
CBIS_FILES = 10239
FILES_PER_CASE = 3


def child(root: str, out: str, workers: int) -> dict:
    """Read and prepare one tree in this process; timings and peak memory as a dict."""
    from benchmarks.common import peak_rss_mb
    from mammo_keras import data
    from mammo_keras.data import prepare

    started = time.perf_counter()
    table = data.read_dataset("cbis-ddsm", root)
    read_seconds = time.perf_counter() - started
    report = prepare.prepare("cbis_ddsm", table, out, "chougrad", root=root, workers=workers, progress=False,
                             contact_sheet=False)
    seconds = time.perf_counter() - started
    images = len(table["image_id"].unique())
    return {"images": images, "items": report.items, "seconds": round(seconds, 2), "read_seconds": round(read_seconds, 2),
            "images_per_s": round(images / seconds, 3), "peak_rss_mb": peak_rss_mb()}


def _link_tree(source: Path, target: Path, n: int) -> Path:
    """`target` holding the first `n` cases of `source` (hard links) and a CSV of their rows."""
    with open(source / "mass_case_description_train_set.csv") as handle:
        lines = handle.read().splitlines()
    rows = lines[1:n + 1]
    subjects = {row.split(",")[11].split("/")[0] for row in rows}
    for folder in (source / "CBIS-DDSM").iterdir():
        if folder.name in subjects or folder.name.rsplit("_", 1)[0] in subjects:
            shutil.copytree(folder, target / "CBIS-DDSM" / folder.name, copy_function=os.link)
    (target / "mass_case_description_train_set.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    return target


def run(size: str = "full") -> dict:
    from benchmarks import cbis_phantom

    settings = SIZES[check_size(size)]
    counts, runs = settings["counts"], {}
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        cbis_phantom.write_cases(tmp / "all", max(counts), cbis_phantom.templates(settings["shape"]))
        generate_seconds = time.perf_counter() - started
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        for n in counts:
            root = _link_tree(tmp / "all", tmp / f"n{n}", n)
            for workers in settings["workers"]:
                out = tmp / f"out_n{n}_w{workers}"
                done = subprocess.run([sys.executable, "-m", "benchmarks.bench_prepare", "--child", str(root), str(out),
                                       str(workers)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"prepare child (N={n}, workers={workers}) failed: {done.stderr[-2000:]}")
                runs[f"n{n}_w{workers}"] = json.loads(done.stdout.strip().splitlines()[-1])
                shutil.rmtree(out)
    projections = {}
    low, high = counts[-2], counts[-1]
    for workers in settings["workers"]:
        a, b = runs[f"n{low}_w{workers}"], runs[f"n{high}_w{workers}"]
        per_case = (b["seconds"] - a["seconds"]) / (high - low)
        fixed = b["seconds"] - per_case * high
        projections[f"w{workers}"] = {"seconds_per_case": round(per_case, 3), "fixed_seconds": round(fixed, 1),
                                      "cbis_hours": round((fixed + per_case * CBIS_FILES / FILES_PER_CASE) / 3600, 2)}
    top = counts[-1]
    speedup = runs[f"n{top}_w2"]["images_per_s"] / runs[f"n{top}_w1"]["images_per_s"] if 2 in settings["workers"] else None
    return result("prepare", f"prepare (chougrad ROIs) on {settings['shape'][0]}x{settings['shape'][1]} 16-bit RLE "
                             f"DICOMs with masks, N = {', '.join(map(str, counts))}",
                  ratio=speedup, ratio_label=f"2 workers / 1 worker (images/s, N = {top})", goal=None,
                  figures={"runs": runs, "projection_to_cbis_ddsm": projections, "cbis_files": CBIS_FILES,
                           "files_per_case": FILES_PER_CASE, "generate_seconds": round(generate_seconds, 1)},
                  note="each run in its own process; peak RSS of the main process and of the largest worker; "
                       "projection linear from the N slope")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
