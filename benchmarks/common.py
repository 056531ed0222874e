"""Shared helpers for the benchmarks: side-by-side timing, machine facts, result records.

Every benchmark measures both sides in one process run, alternating them over `rounds` and
taking medians, so a busy machine slows both alike; the ratio is the figure, not the times.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ("tiny", "full")


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}. Received: size={size!r}")
    return size


def interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each side once per round, in turn (A B A B ...); each call returns its own measure."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(float(run()))
    return results


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float], digits: int = 3) -> dict:
    """min / median / max of a side's per-round figures (the spread of one run)."""
    return {"min": round(float(min(values)), digits), "median": round(median(values), digits),
            "max": round(float(max(values)), digits), "rounds": len(values)}


def peak_rss_mb() -> dict:
    """Peak resident memory (MB) of this process (VmHWM) and of its largest waited-for child (ru_maxrss).

    VmHWM is the peak of this process's own memory map; ru_maxrss of a process also counts what its
    parent had resident when it forked (Linux keeps that across exec), so for forked workers the
    `children` figure includes the pages they share with this process.
    """
    import resource

    peak = float("nan")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"self": round(peak, 1), "children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def timed(function: Callable[[], object]) -> float:
    """Seconds `function()` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU count and model, GPUs, library versions, date, load and git commit of this run."""
    import keras
    import tensorflow as tf

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        commit = ""
    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "gpus": details,
            "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "git_commit": commit,
            "load_average_at_start": load_average()}


def result(name: str, title: str, *, ratio: float | None, ratio_label: str, goal: float | None,
           figures: dict, note: str = "", skipped: str | None = None) -> dict:
    """One benchmark's record; `met` says whether the ratio reached the goal (higher is better)."""
    met = None if ratio is None or goal is None else bool(ratio >= goal)
    return {"name": name, "title": title, "ratio": None if ratio is None else round(float(ratio), 3),
            "ratio_label": ratio_label, "goal": goal, "met": met, "figures": figures, "note": note,
            "skipped": skipped}
