"""Benchmark 3: Chougrad 0FT head training, cached backbone features vs recomputing the backbone.

Same model (Chougrad's InceptionV3 with its dense head, 0FT: backbone frozen; VGG16 at 32 px for
the tiny CI size), same images,
same stage (Adam 1e-3, the head stage of Chougrad 2018 §2.2.4), run through `fit_stages` with
`cache_features=False` (every epoch runs the frozen backbone forward) and `cache_features=True`
(the backbone runs once; the head trains on its output). Figures: seconds per epoch (median over
epochs after the first, which traces), the one-time feature pass, and the paper's 30 head epochs
projected from those, cache pass included. Parity: the trained full model on the images equals
the trained head on the cached features. Goal: >= 10x per epoch.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks.common import check_size, median, result

SIZES = {"tiny": dict(family="vgg16", n=16, side=32, epochs=2, batch=8),
         "full": dict(family="inceptionv3", n=128, side=224, epochs=3, batch=32)}
PAPER_HEAD_EPOCHS = 30


def run(size: str = "full") -> dict:
    import keras

    from mammo_keras.models.chougrad import build_chougrad
    from mammo_keras.training.feature_cache import compute_features, frozen_cut, split_at
    from mammo_keras.training.fit import as_model_input, fit_stages
    from mammo_keras.training.stages import Stage

    settings = SIZES[check_size(size)]
    n, side, epochs = settings["n"], settings["side"], settings["epochs"]
    rng = np.random.default_rng(0)
    images = rng.normal(0.0, 1.0, (n, side, side)).astype(np.float32)
    labels = np.arange(n) % 2
    stage = Stage("head", epochs, optimizer="adam", learning_rate=1e-3, trainable="0FT", batch_size=settings["batch"])
    figures: dict = {"images": n, "input": f"{side}x{side}x1", "epochs": epochs}
    per_epoch = {}
    models = {}
    for cache in (False, True):
        keras.utils.set_random_seed(0)
        model = build_chougrad(settings["family"], (side, side, 1), weights=None, fine_tune="0FT")
        started = time.perf_counter()
        log = fit_stages(model, [stage], (images, labels), None, augment=None, seed=0, cache_features=cache)
        total = time.perf_counter() - started
        key = "cached" if cache else "recomputed"
        per_epoch[key] = median(list(log["seconds"][1:]) or list(log["seconds"]))
        figures[f"{key}_seconds_total"] = round(total, 2)
        figures[f"{key}_seconds_per_epoch"] = round(per_epoch[key], 4)
        figures[f"{key}_first_epoch_seconds"] = round(float(log["seconds"].iloc[0]), 3)
        if cache:
            figures["feature_pass_seconds"] = round(total - float(log["seconds"].sum()), 2)
        models[key] = model
    model = models["cached"]
    cut = frozen_cut(model)
    x = as_model_input(images, model)
    prefix, head = split_at(model, cut)
    parity = np.abs(model.predict(x, verbose=0) - head.predict(compute_features(prefix, x), verbose=0)).max()
    figures["cut_layer"] = cut
    figures["parity_max_abs_diff"] = float(parity)
    # Whole head stage: one-time costs (graph tracing, the feature pass) + 29 more epochs.
    projected_recomputed = figures["recomputed_first_epoch_seconds"] + (PAPER_HEAD_EPOCHS - 1) * per_epoch["recomputed"]
    projected_cached = (figures["feature_pass_seconds"] + figures["cached_first_epoch_seconds"]
                        + (PAPER_HEAD_EPOCHS - 1) * per_epoch["cached"])
    figures["projected_30_epochs_ratio"] = round(projected_recomputed / projected_cached, 2)
    return result("feature_cache", f"Chougrad {settings['family']} 0FT head epoch, {n} ROIs {side}px",
                  ratio=per_epoch["recomputed"] / per_epoch["cached"],
                  ratio_label="epoch recomputing the backbone / epoch on cached features",
                  goal=10.0, figures=figures,
                  note="fit_stages with cache_features False vs True; the 30-epoch projection includes "
                       "the one-time feature pass")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
