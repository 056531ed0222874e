"""Why `mias_cv`'s vgg16_random diverges: the activations and logits of the row's initial network
(Chougrad's VGG16, N(0, 0.05) kernels, seed 0) on 16 of the run's GCN ROIs at 96 px, at the 0-255
scale the row runs at and in [0, 1].

    python experiments/chougrad2018/vgg16_random_scale.py [results/chougrad2018/mias_cv]

Reads the prepared ROIs a `mammo-keras reproduce chougrad2018/mias_cv --profile cpu` run left.
"""
from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

from mammo_keras.models import get


def main(results: str = "results/chougrad2018/mias_cv") -> None:
    files = sorted(Path(results, "prepared", "mias_chougrad", "items").glob("*.npz"))[:16]
    if not files:
        raise SystemExit(f"no prepared ROIs under {results}/prepared/mias_chougrad/items: run the mias_cv config first")
    rois = []
    for path in files:
        with np.load(path) as stored:
            roi = stored[stored.files[0]].astype(np.float32).reshape(-1, 224, 224)[0]
        rois.append(keras.ops.convert_to_numpy(keras.ops.image.resize(roi[..., None], (96, 96))))
    x = np.stack(rois)
    keras.utils.set_random_seed(0)
    model = get("chougrad_vgg16", input_shape=(96, 96, 1), num_classes=2, fine_tune="random")
    names = ("block1_conv1", "block3_conv3", "block5_conv3")
    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names] + [model.layers[-1].input])
    kernel, bias = model.layers[-1].get_weights()
    for scale in (255.0, 1.0):
        *features, last = (keras.ops.convert_to_numpy(t) for t in probe(x * scale))
        logits = last @ kernel + bias
        stds = ", ".join(f"{n} {float(np.std(f)):.3g}" for n, f in zip(names, features))
        print(f"inputs x{scale:g}: activation std {stds}; largest |logit| {float(np.abs(logits).max()):.3g}")


if __name__ == "__main__":
    main(*sys.argv[1:])
