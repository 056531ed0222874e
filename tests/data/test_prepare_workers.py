"""`prepare(workers=...)`: 0 means one worker per core; the choice and the throughput are reported."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mammo_keras.data import prepare as prep


def test_workers_validation():
    with pytest.raises(ValueError, match="Received: workers=-1"):
        prep.prepare("phantom", pd.DataFrame(), "unused", "chougrad", workers=-1)


def test_workers_zero_uses_every_core(tmp_path, monkeypatch):
    seen = {}

    def fake_run(task, pending, options, out, workers, skip_bad, progress, report):
        seen["workers"] = workers
        for image_id, _ in pending:
            prep._item_file(out, image_id).parent.mkdir(parents=True, exist_ok=True)
            meta = [{"item_id": image_id, "label": 0, "class_name": "benign"}]
            np.savez(prep._item_file(out, image_id), arrays=np.zeros((1, 4, 4), np.float32),
                     metadata=np.array(__import__("json").dumps(meta)))

    monkeypatch.setattr(prep, "_run", fake_run)
    table = pd.DataFrame({"image_id": ["a"], "patient_id": ["p"], "lesion_id": ["a1"], "abnormality": ["mass"],
                          "pathology": ["benign"], "x0": [1.0], "y0": [1.0], "x1": [3.0], "y1": [3.0],
                          "path": ["a.png"], "source": ["phantom"], "laterality": ["L"], "view": ["CC"]})
    monkeypatch.setattr(prep.rec, "lesions", lambda t, with_geometry: t)
    report = prep.prepare("phantom", table, tmp_path, "chougrad", workers=0, progress=False, contact_sheet=False)
    assert seen["workers"] == report.workers == (os.cpu_count() or 1)
    assert report.items == 1 and report.items_per_second > 0
