"""Multi-stage training as data: a list of `Stage`s run by one generic loop (`fit.fit_stages`).

A stage says what is trainable, for how long, with which optimizer, learning rate,
schedule, weight decay and early stopping. Presets reproduce each paper's protocol.

`trainable` is one of:
    "all"                        every layer
    "0FT" "1FT" "2FT" "3FT" "AllFT" "random"
                                 Chougrad's block-wise fine-tuning (`backbones.set_fine_tuning`)
    "re:<pattern>"               layers whose name matches the regular expression; the rest frozen
                                 (e.g. "re:^(inception_5|predictions)" for GoogLeNet "deeper")
    "as_built"                   what the model's builder set (the siamese encoder's `fine_tune`)
"""
from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import keras

from mammo_keras.models.backbones import STRATEGIES, set_fine_tuning

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "plateau", "poly")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of training."""

    name: str
    epochs: int
    optimizer: str = "sgd"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    trainable: str = "all"
    schedule: str = "constant"
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    poly_power: float = 0.5
    weight_decay: float = 0.0
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    batch_size: int = 32
    class_weight: bool = False
    lr_multipliers: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"`epochs` must be >= 0. Received: epochs={self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={self.schedule!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate}")
        if self.lr_multipliers and self.optimizer != "sgd":
            raise ValueError("`lr_multipliers` need optimizer 'sgd' (for plain or momentum SGD a scaled "
                             f"gradient is a scaled learning rate). Received: optimizer={self.optimizer!r}")
        if not (self.trainable in ("all", "as_built") or self.trainable in STRATEGIES
                or self.trainable.startswith("re:")):
            raise ValueError(f"`trainable` must be 'all', 'as_built', one of {STRATEGIES} or 're:<pattern>'. "
                             f"Received: trainable={self.trainable!r}")

    def scaled(self, epoch_scale: float, *, min_epochs: int = 1) -> Stage:
        """The same stage with its epochs and patience scaled (for the tiny/cpu profiles)."""
        def scale(value: int) -> int:
            return max(min_epochs, round(value * epoch_scale))
        patience = self.early_stopping_patience
        return dataclasses.replace(
            self, epochs=scale(self.epochs) if self.epochs else 0,
            plateau_patience=scale(self.plateau_patience),
            early_stopping_patience=None if patience is None else scale(patience))


def apply_trainable(model: keras.Model, trainable: str) -> keras.Model:
    """Set which layers train for a stage, selecting by name (never by position)."""
    if trainable == "as_built":
        return model
    if trainable == "all":
        model.trainable = True
        for layer in model.layers:
            layer.trainable = True
    elif trainable in STRATEGIES:
        set_fine_tuning(model, trainable)
    else:
        pattern = re.compile(trainable[3:])
        model.trainable = True
        matched = 0
        for layer in model.layers:
            layer.trainable = bool(pattern.search(layer.name))
            matched += layer.trainable
        if not matched:
            raise ValueError(f"No layer name matches {trainable!r}. Received: model={model.name!r}")
    return model


@keras.saving.register_keras_serializable(package="mammo_keras")
class LayerRateSGD(keras.optimizers.SGD):
    """SGD with a learning-rate multiplier per layer (Caffe's `lr_mult`), chosen by name pattern.

    The first `(pattern, multiplier)` whose regular expression matches a variable's path
    (`layer_name/kernel`) scales its gradient; for SGD with (non-Nesterov) momentum that is
    exactly a scaled learning rate. Variables no pattern matches keep multiplier 1.

    Reference: Jain & Levy, DeepMammo §4.3 (earlier layers x0.1, last FC x10).
    """

    def __init__(self, learning_rate=0.01, *, multipliers=(), **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.multipliers = [[str(p), float(m)] for p, m in multipliers]
        self._compiled = [(re.compile(p), m) for p, m in self.multipliers]

    def multiplier(self, path: str) -> float:
        for pattern, value in self._compiled:
            if pattern.search(path):
                return value
        return 1.0

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        scaled = [g if g is None or self.multiplier(v.path) == 1.0 else g * self.multiplier(v.path)
                  for g, v in zip(grads, variables)]
        return super().apply(scaled, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers}


def make_optimizer(stage: Stage, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The stage's optimizer, with its polynomial decay when `schedule == "poly"`."""
    rate = stage.learning_rate
    if stage.schedule == "poly":
        rate = keras.optimizers.schedules.PolynomialDecay(
            stage.learning_rate, decay_steps=max(1, stage.epochs * steps_per_epoch),
            end_learning_rate=0.0, power=stage.poly_power)
    decay = stage.weight_decay or None
    if stage.optimizer == "sgd" and stage.lr_multipliers:
        return LayerRateSGD(rate, momentum=stage.momentum, weight_decay=decay,
                            multipliers=[list(pair) for pair in stage.lr_multipliers])
    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=stage.momentum, weight_decay=decay)
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    return keras.optimizers.RMSprop(rate, weight_decay=decay)


def _stages(*stages: Stage) -> tuple[Stage, ...]:
    return tuple(stages)


PRESETS = MappingProxyType({
    # Chougrad 2018 §2.2.4: head warm-up with Adam for 30 epochs, then SGD 1e-4 on the chosen
    # blocks, divided by 10 on a plateau, early stopping (patience 20) up to 90 epochs, batch 128.
    "chougrad2018": _stages(
        Stage("head", 30, optimizer="adam", learning_rate=1e-3, trainable="0FT", batch_size=128),
        Stage("fine_tune", 90, optimizer="sgd", learning_rate=1e-4, momentum=0.9, trainable="2FT",
              schedule="plateau", plateau_patience=10, early_stopping_patience=20, batch_size=128)),
    # Random initialisation (Fig. 5): every layer trains with the fine-tuning schedule.
    "chougrad2018_random": _stages(
        Stage("all", 90, optimizer="sgd", learning_rate=1e-4, momentum=0.9, trainable="all",
              schedule="plateau", plateau_patience=10, early_stopping_patience=20, batch_size=128)),
    # Shen 2017 §3.1.2: patch classifier, Adam, batch 32, 3 stages on S10: the last layer (3
    # epochs, 1e-3), the top layers (10 epochs, 1e-4; the paper's "top 46 layers of ResNet50 /
    # 11 of VGG16" is taken as the last conv stage: conv5_* / block5_*), then all (37, 1e-5).
    "shen2017_patch": _stages(
        Stage("last_layer", 3, optimizer="adam", learning_rate=1e-3, trainable="re:^predictions"),
        Stage("top_layers", 10, optimizer="adam", learning_rate=1e-4,
              trainable="re:^(conv5_|block5_|head_|predictions)"),
        Stage("all", 37, optimizer="adam", learning_rate=1e-5, trainable="all")),
    # Shen 2017 §3.1.2: whole image, 2 stages: new top layers (30 epochs, 1e-4, weight decay
    # 0.001), then all layers (20 epochs, 1e-5, weight decay 0.01); batch 2; Adam (presumed).
    "shen2017_whole": _stages(
        Stage("top", 30, optimizer="adam", learning_rate=1e-4, weight_decay=0.001,
              trainable="re:^(top_|predictions)", batch_size=2),
        Stage("all", 20, optimizer="adam", learning_rate=1e-5, weight_decay=0.01, trainable="all",
              batch_size=2)),
    # Shen 2017 §3.2.2: the DDSM whole-image models fine-tuned on INbreast: all layers, Adam 1e-5,
    # 200 epochs, weight decay 0.01, batch 2 (as the whole-image stages).
    "shen2017_inbreast": _stages(
        Stage("all", 200, optimizer="adam", learning_rate=1e-5, weight_decay=0.01, trainable="all",
              batch_size=2)),
    # Jain & Levy §4.1-4.3, GoogLeNet "deeper": SGD 1e-2 with Caffe's poly policy (power 0.5),
    # inception_5a/5b at the full rate, earlier layers x0.1, the new classifier x10; L2 1e-3
    # (as decoupled weight decay), batch 32, 30 epochs; momentum 0.9 from the BVLC solver.
    "jain_levy_deeper": _stages(
        Stage("fine_tune", 30, optimizer="sgd", learning_rate=1e-2, momentum=0.9, schedule="poly",
              poly_power=0.5, weight_decay=1e-3, batch_size=32,
              lr_multipliers=(("^inception_5", 1.0), ("^predictions", 10.0), (".", 0.1)))),
    # GoogLeNet "shallow": only inception_5b at the full rate; L2 5e-4; 20 epochs.
    "jain_levy_shallow": _stages(
        Stage("fine_tune", 20, optimizer="sgd", learning_rate=1e-2, momentum=0.9, schedule="poly",
              poly_power=0.5, weight_decay=5e-4, batch_size=32,
              lr_multipliers=(("^inception_5b", 1.0), ("^predictions", 10.0), (".", 0.1)))),
    # AlexNet: Adam 1e-3 x0.1 for the pretrained layers (Adam ignores gradient scale, so the
    # whole net uses 1e-4; the paper's new last layer at 1e-3 is the difference); L2 5e-3;
    # batch 128; 30 epochs.
    "jain_levy_alexnet": _stages(
        Stage("fine_tune", 30, optimizer="adam", learning_rate=1e-4, weight_decay=5e-3, batch_size=128)),
    # Jain & Levy LevyNet: Adam 1e-3 from scratch, batch 64, 35 epochs.
    "jain_levy_scratch": _stages(
        Stage("train", 35, optimizer="adam", learning_rate=1e-3, batch_size=64)),
    # Coccomini 2021 Ch. 4 (B.4): scratch CNN, batch 16, early stopping patience 4, class weights.
    "coccomini2021": _stages(
        Stage("train", 80, optimizer="adam", learning_rate=1e-3, early_stopping_patience=4,
              class_weight=True, batch_size=16)),
    # Coccomini 2021 Ch. 6: siamese networks, Adam 1e-3, binary cross-entropy; the encoder's
    # trainable part is what its `fine_tune` option built (frozen, or the last block trainable).
    # Epochs and batch are unstated: those of the Ch. 5 models (40, 16) with early stopping 4.
    "coccomini2021_siamese": _stages(
        Stage("siamese", 40, optimizer="adam", learning_rate=1e-3, trainable="as_built", batch_size=16,
              early_stopping_patience=4)),
    # Coccomini 2021 Ch. 5: pretrained backbones with a dense-256 sigmoid head, batch 16, 40 epochs.
    "coccomini2021_pretrained": _stages(
        Stage("head", 40, optimizer="adam", learning_rate=1e-4, trainable="0FT", batch_size=16,
              early_stopping_patience=4)),
    # Coccomini 2021 Ch. 5 "fine-tuned": the same, with the backbone's last block trainable.
    "coccomini2021_fine_tuned": _stages(
        Stage("last_block", 40, optimizer="adam", learning_rate=1e-4, trainable="1FT", batch_size=16,
              early_stopping_patience=4)),
})
# Chougrad 2018 Fig. 6: the same schedule with each fine-tuning depth (chougrad2018_0FT ... _AllFT).
PRESETS = MappingProxyType({
    **PRESETS,
    **{f"chougrad2018_{depth}": tuple(
        dataclasses.replace(stage, trainable=depth) if stage.name == "fine_tune" else stage
        for stage in PRESETS["chougrad2018"]) for depth in ("0FT", "1FT", "2FT", "3FT", "AllFT")},
})


def preset(name: str) -> tuple[Stage, ...]:
    """A paper's stage list by name."""
    if name not in PRESETS:
        raise ValueError(f"Unknown stage preset. Valid presets: {sorted(PRESETS)}. Received: name={name!r}")
    return PRESETS[name]
