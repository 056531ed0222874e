"""Multi-stage training as data: a list of `Stage`s run by one generic loop (`fit.fit_stages`).

A stage says what is trainable, for how long, with which optimizer, learning rate (and per-layer
multipliers), schedule, L2 penalty, class weighting and early stopping. Presets hold each
paper's protocol; `mammo-keras reproduce <config> --plan` prints what a preset does to a model,
and experiments/<paper>/protocol.yaml holds the paper's stated facts it is checked against.

`trainable` is one of:
    "all"                        every layer
    "0FT" "1FT" "2FT" "3FT" "AllFT" "random"
                                 Chougrad's block-wise fine-tuning (`backbones.set_fine_tuning`)
    "re:<pattern>"               layers whose name matches the regular expression; the rest frozen
    "as_built"                   what the model's builder set from the row's `fine_tune` option
                                 (the fine-tuning depth is stated once, on the model row)

Every selector (a trainable pattern, a learning-rate multiplier pattern, an L2 target) must match
at least one layer with weights: a selector that matches nothing is an error naming the pattern
and the layer-name prefixes the model has, never a silent no-op.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter

import keras

from mammo_keras.models.backbones import STRATEGIES, set_fine_tuning
from mammo_keras.registry import Registry

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("constant", "plateau", "poly", "step")
CLASS_WEIGHTS = ("balanced", "complement", "batch")
"""Class weighting: "balanced" n / (k * n_c) (scikit-learn); "complement" n_other / n for two classes
(Coccomini's weight(x) = freq(Y) / (freq(X) + freq(Y))); "batch" sample weights that balance the
classes within every batch (Shen's patch classifiers)."""
MONITORS = ("val_loss", "val_accuracy", "val_auc")


class SelectorError(ValueError):
    """A trainable / learning-rate / regularisation selector matches no layer with weights."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of training.

    `lr_multipliers` are `(pattern, multiplier)` pairs matched in order against each weight's
    path (`layer_name/kernel`, `layer_name/bias`); the first match scales that weight's learning
    rate (Caffe's `lr_mult`), unmatched weights keep 1. `l2` sets the L2 penalty coefficient
    (Keras: `l2 * sum(w ** 2)` added to the loss) of the kernels of the layers matched by
    `l2_layers` for this stage; None leaves the model's own regularisers as built.
    `skip_for` lists fine-tuning strategies (the row's `fine_tune` option) for which the stage
    does not run, e.g. Chougrad's head warm-up for a randomly initialised network.
    """

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
    step_epochs: int = 10
    step_gamma: float = 0.1
    l2: float | None = None
    l2_layers: str = "all"
    early_stopping_patience: int | None = None
    monitor: str = "val_loss"
    batch_size: int = 32
    class_weight: str | None = None
    lr_multipliers: tuple[tuple[str, float], ...] = ()
    skip_for: tuple[str, ...] = ()
    clipnorm: float | None = None  # clip each gradient to this norm (the detectors: 10)
    shuffle: bool = True  # reshuffle the training set every epoch (False: the order given)
    # after every epoch, set the BatchNorm statistics to those of the training items (training.batchnorm)
    precise_bn: bool = False

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"`epochs` must be >= 0. Received: epochs={self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={self.schedule!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={self.learning_rate}")
        if self.class_weight is not None and self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"`class_weight` must be None or one of {CLASS_WEIGHTS}. "
                             f"Received: class_weight={self.class_weight!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"`monitor` must be one of {MONITORS}. Received: monitor={self.monitor!r}")
        if self.l2 is not None and self.l2 < 0:
            raise ValueError(f"`l2` must be None or >= 0. Received: l2={self.l2!r}")
        for pattern in (self.trainable, self.l2_layers):
            if pattern.startswith("re:"):
                re.compile(pattern[3:])
        if not (self.trainable in ("all", "as_built") or self.trainable in STRATEGIES
                or self.trainable.startswith("re:")):
            raise ValueError(f"`trainable` must be 'all', 'as_built', one of {STRATEGIES} or 're:<pattern>'. "
                             f"Received: trainable={self.trainable!r}")
        if not (self.l2_layers == "all" or self.l2_layers.startswith("re:")):
            raise ValueError(f"`l2_layers` must be 'all' or 're:<pattern>'. Received: l2_layers={self.l2_layers!r}")
        for pattern, multiplier in self.lr_multipliers:
            re.compile(pattern)
            if multiplier <= 0:
                raise ValueError(f"learning-rate multipliers must be > 0. Received: {pattern!r}: {multiplier}")

    def scaled(self, epoch_scale: float, *, min_epochs: int = 1) -> Stage:
        """The same stage with its epochs, patiences and step size scaled (for the tiny/cpu profiles)."""
        def scale(value: int) -> int:
            return max(min_epochs, round(value * epoch_scale))
        patience = self.early_stopping_patience
        return dataclasses.replace(
            self, epochs=scale(self.epochs) if self.epochs else 0,
            plateau_patience=scale(self.plateau_patience), step_epochs=scale(self.step_epochs),
            early_stopping_patience=None if patience is None else scale(patience))


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` that own weights, in order."""
    return [layer for layer in model.layers if layer.weights]


def layer_prefixes(model: keras.Model) -> str:
    """'conv1 (2), block5 (3), predictions (1)': the name prefixes of the layers with weights."""
    counts = Counter(re.split(r"[_/]", layer.name)[0] for layer in weighted_layers(model))
    return ", ".join(f"{prefix} ({count})" for prefix, count in counts.items())


def selected_layers(model: keras.Model, pattern: str, *, what: str) -> list[keras.layers.Layer]:
    """The layers with weights whose name matches `pattern` ("re:<regex>" or "all").

    Raises:
        SelectorError: the pattern matches no layer with weights.
    """
    layers = weighted_layers(model)
    if pattern == "all":
        chosen = layers
    else:
        regex = re.compile(pattern[3:] if pattern.startswith("re:") else pattern)
        chosen = [layer for layer in layers if regex.search(layer.name)]
    if not chosen:
        raise SelectorError(f"{what} {pattern!r} matches no layer with weights in model {model.name!r}. "
                            f"Its layers with weights have the name prefixes: {layer_prefixes(model)}. "
                            f"Received: {what}={pattern!r}")
    return chosen


def trainable_flags(model: keras.Model) -> list[tuple[keras.layers.Layer, bool]]:
    """Every layer's `trainable` flag, nested models' layers included, parents first, as the builder
    left them (what "as_built" restores)."""
    return [(layer, bool(layer.trainable)) for layer in model._flatten_layers(include_self=False, recursive=True)]


def apply_trainable(model: keras.Model, trainable: str,
                    built: list[tuple[keras.layers.Layer, bool]] | None = None) -> keras.Model:
    """Set which layers train for a stage, selecting by name (never by position).

    "as_built" restores `built`, the flags the model's builder set (`trainable_flags` taken right
    after building), so a stage after Chougrad's frozen-backbone warm-up trains the blocks the row's
    `fine_tune` names, not what the warm-up left.
    """
    if trainable == "as_built":
        if built is None:
            raise ValueError("trainable='as_built' needs the flags the builder set (`trainable_flags` "
                             "taken right after building). Received: built=None")
        model.trainable = True
        for layer, flag in built:  # parents before their layers: a nested model's own flags win
            layer.trainable = flag
        return model
    if trainable == "all":
        model.trainable = True
        for layer in model.layers:
            layer.trainable = True
    elif trainable in STRATEGIES:
        set_fine_tuning(model, trainable)
    else:
        chosen = {layer.name for layer in selected_layers(model, trainable, what="trainable")}
        model.trainable = True
        for layer in model.layers:
            layer.trainable = layer.name in chosen
    return model


def kernel_layers(model: keras.Model, pattern: str) -> list[keras.layers.Layer]:
    """Layers with a `kernel` (Dense, Conv) among those `pattern` selects; an L2 target."""
    chosen = [layer for layer in selected_layers(model, pattern, what="l2_layers")
              if getattr(layer, "kernel", None) is not None]
    if not chosen:
        raise SelectorError(f"l2_layers {pattern!r} selects no layer with a kernel in model {model.name!r}. "
                            f"Its layers with weights have the name prefixes: {layer_prefixes(model)}")
    return chosen


def apply_l2(model: keras.Model, stage: Stage) -> list[str]:
    """Give the kernels `stage.l2_layers` selects the L2 coefficient `stage.l2`; returns their names.

    Keras 3 reads a weight's penalty from `variable.regularizer` each step, so a fresh compile
    after this picks it up (Shen's weight decay 0.001 in stage 1, 0.01 in stage 2, as the L2
    penalty of the authors' Keras code, not decoupled AdamW decay).
    """
    if stage.l2 is None:
        return []
    regularizer = keras.regularizers.L2(stage.l2) if stage.l2 else None
    names = []
    for layer in kernel_layers(model, stage.l2_layers):
        layer.kernel_regularizer = regularizer
        layer.kernel.regularizer = regularizer
        names.append(layer.name)
    return names


def check_multipliers(model: keras.Model, multipliers) -> None:
    """Every multiplier pattern must match the path of at least one weight of `model`."""
    paths = [variable.path for variable in model.weights]
    for pattern, _ in multipliers:
        regex = re.compile(pattern)
        if not any(regex.search(path) for path in paths):
            raise SelectorError(f"lr_multipliers pattern {pattern!r} matches no weight of model {model.name!r} "
                                f"(weights are named '<layer>/kernel', '<layer>/bias'). Its layers with weights "
                                f"have the name prefixes: {layer_prefixes(model)}. Received: pattern={pattern!r}")


def multiplier_of(path: str, multipliers) -> float:
    """The multiplier of the first pattern matching `path` (1 when none does)."""
    for pattern, value in multipliers:
        if re.search(pattern, path):
            return float(value)
    return 1.0


class _LayerRates:
    """Per-weight learning rates: the stage's rate times the first multiplier whose pattern matches.

    Scaling the rate handed to each weight's update is Caffe's `lr_mult` for every optimizer
    (for SGD with momentum it equals scaling the gradient; for Adam it scales the step, which
    gradient scaling would not, Adam being invariant to it).

    Reference: Jain & Levy, DeepMammo §4.3 (earlier layers x0.1, the new classifier x10/x20).
    """

    def _setup_rates(self, multipliers) -> None:
        self.multipliers = [[str(p), float(m)] for p, m in multipliers]

    def update_step(self, gradient, variable, learning_rate):
        path = self._trainable_variables[self._get_variable_index(variable)].path
        factor = multiplier_of(path, self.multipliers)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers}


@keras.saving.register_keras_serializable(package="mammo_keras")
class LayerRateSGD(_LayerRates, keras.optimizers.SGD):
    """SGD with per-layer learning-rate multipliers (see `_LayerRates`)."""

    def __init__(self, learning_rate=0.01, *, multipliers=(), **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._setup_rates(multipliers)


@keras.saving.register_keras_serializable(package="mammo_keras")
class LayerRateAdam(_LayerRates, keras.optimizers.Adam):
    """Adam with per-layer learning-rate multipliers (see `_LayerRates`)."""

    def __init__(self, learning_rate=0.001, *, multipliers=(), **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._setup_rates(multipliers)


@keras.saving.register_keras_serializable(package="mammo_keras")
class LayerRateRMSprop(_LayerRates, keras.optimizers.RMSprop):
    """RMSprop with per-layer learning-rate multipliers (see `_LayerRates`)."""

    def __init__(self, learning_rate=0.001, *, multipliers=(), **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._setup_rates(multipliers)


def learning_rate_schedule(stage: Stage, steps_per_epoch: int):
    """The stage's base learning rate: a float, or a Keras schedule for "poly" and "step"."""
    if stage.schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(
            stage.learning_rate, decay_steps=max(1, stage.epochs * steps_per_epoch),
            end_learning_rate=0.0, power=stage.poly_power)
    if stage.schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            stage.learning_rate, decay_steps=max(1, stage.step_epochs * steps_per_epoch),
            decay_rate=stage.step_gamma, staircase=True)
    return stage.learning_rate


_OPTIMIZER_CLASSES = {
    "sgd": (keras.optimizers.SGD, LayerRateSGD),
    "adam": (keras.optimizers.Adam, LayerRateAdam),
    "rmsprop": (keras.optimizers.RMSprop, LayerRateRMSprop),
}


def make_optimizer(stage: Stage, steps_per_epoch: int, model: keras.Model | None = None
                   ) -> keras.optimizers.Optimizer:
    """The stage's optimizer with its schedule; per-layer rates when `lr_multipliers` are set.

    With `model`, every multiplier pattern is checked to match one of its weights first.
    """
    rate = learning_rate_schedule(stage, steps_per_epoch)
    plain, layered = _OPTIMIZER_CLASSES[stage.optimizer]
    options = {"momentum": stage.momentum} if stage.optimizer == "sgd" else {}
    if stage.clipnorm is not None:
        options["clipnorm"] = stage.clipnorm
    if stage.lr_multipliers:
        if model is not None:
            check_multipliers(model, stage.lr_multipliers)
        return layered(rate, multipliers=[list(pair) for pair in stage.lr_multipliers], **options)
    return plain(rate, **options)


def optimizer_settings(optimizer: keras.optimizers.Optimizer) -> dict:
    """Every hyperparameter of a built optimizer, for the plan (no variables, no schedule objects)."""
    config = optimizer.get_config()
    keep = {}
    for key, value in config.items():
        if key in ("name", "multipliers") or value is None:
            continue
        if isinstance(value, dict):  # a learning-rate schedule
            value = {"schedule": value.get("class_name"), **(value.get("config") or {})}
        keep[key] = value
    return keep


# Caffe's own multipliers: weights 1, biases 2 (BVLC prototxts); the paper scales both.
def _caffe_rates(full: str, classifier: str, rest: float = 0.1, head: float = 10.0) -> tuple:
    return ((f"^{classifier}/bias", 2 * head), (f"^{classifier}/", head),
            (f"^({full}).*/bias", 2.0), (f"^({full})", 1.0), ("/bias$", 2 * rest), (".", rest))


PRESETS: Registry[tuple[Stage, ...]] = Registry("stage preset", listing="training.stages.PRESETS.names()")
# Shen's ResNet50 patch stage 2 (decision top_layer_numbers): Keras 2's layers[46:], res3a's closing
# BatchNorms and conv3_block2 onward; one selector for the S10 and S1 presets.
_SHEN_RESNET50_TOP = "re:^(conv3_block1_[03]_bn|conv3_block1_(add|out)|conv3_block[2-4]_|conv4_|conv5_|predictions$)"
for _name, _stages in {
    # Chougrad 2018 §2.2.4: head warm-up with Adam for 30 epochs (backbone frozen), then SGD 1e-4 on
    # the blocks the row's `fine_tune` names, /10 on a plateau, early stopping (patience 20) up to
    # 90 epochs, batch 128. A randomly initialised network (Fig. 5) skips the warm-up.
    "chougrad2018": (
        Stage("head", 30, optimizer="adam", learning_rate=1e-3, trainable="0FT", batch_size=128,
              skip_for=("random",)),
        Stage("fine_tune", 90, optimizer="sgd", learning_rate=1e-4, momentum=0.9, trainable="as_built",
              schedule="plateau", plateau_patience=10, early_stopping_patience=20, batch_size=128)),
    # Shen 2017 §3.1.2, pretrained patch classifiers on S10: Adam, batch 32, classes balanced within
    # each batch; the last layer (3 epochs, 1e-3), the top layers (10 epochs, 1e-4), all (37, 1e-5).
    # "The top layer number is set to 46 for Resnet50 and 11 for VGG16": the authors' code unfreezes
    # `org_model.layers[top_layer_nb:]`, an index counted from the input. VGG16's layers[11:] is
    # block4 onward; Keras 2's ResNet50 layers[46:] begins at the end of res3a, after its
    # convolutions (Keras 3 has one more layer before it, pool1_pad): res3a's closing BatchNorms,
    # then conv3_block2 onward (decision top_layer_numbers).
    "shen2017_patch_resnet50": (
        Stage("last_layer", 3, optimizer="adam", learning_rate=1e-3, trainable="re:^predictions$",
              class_weight="batch"),
        Stage("top_layers", 10, optimizer="adam", learning_rate=1e-4,
              trainable=_SHEN_RESNET50_TOP, class_weight="batch"),
        Stage("all", 37, optimizer="adam", learning_rate=1e-5, trainable="all", class_weight="batch")),
    "shen2017_patch_vgg16": (
        Stage("last_layer", 3, optimizer="adam", learning_rate=1e-3, trainable="re:^predictions$",
              class_weight="batch"),
        Stage("top_layers", 10, optimizer="adam", learning_rate=1e-4,
              trainable="re:^(block4_|block5_|predictions$)", class_weight="batch"),
        Stage("all", 37, optimizer="adam", learning_rate=1e-5, trainable="all", class_weight="batch")),
    # S1 (§3.1.2): "the total number of epochs was increased to 200"; the stage split is not given,
    # so stages 1-2 keep their length and stage 3 takes the rest (3 + 10 + 187).
    "shen2017_patch_s1_resnet50": (
        Stage("last_layer", 3, optimizer="adam", learning_rate=1e-3, trainable="re:^predictions$",
              class_weight="batch"),
        Stage("top_layers", 10, optimizer="adam", learning_rate=1e-4,
              trainable=_SHEN_RESNET50_TOP, class_weight="batch"),
        Stage("all", 187, optimizer="adam", learning_rate=1e-5, trainable="all", class_weight="batch")),
    # Randomly initialised patch classifiers: "a constant learning rate of 1e-3", all layers,
    # 50 epochs on S10 and 200 on S1.
    "shen2017_patch_random": (
        Stage("all", 50, optimizer="adam", learning_rate=1e-3, trainable="all", class_weight="batch"),),
    "shen2017_patch_random_s1": (
        Stage("all", 200, optimizer="adam", learning_rate=1e-3, trainable="all", class_weight="batch"),),
    # Shen 2017 §3.1.2, whole image: the new top layers (30 epochs, 1e-4, weight decay 0.001), then
    # all layers (20 epochs, 1e-5, weight decay 0.01); batch 2; Adam (as for patches and INbreast).
    # Weight decay is the L2 penalty of the authors' Keras code, on the new layers' kernels.
    # "If the above 50 epochs did not lead to convergence, the training was resumed with up to 200
    # additional epochs" (Table 3's best epochs reach 165): stage 2's settings for up to 200 more
    # epochs, stopped once the validation loss has not improved for 10 (convergence is not defined;
    # the authors' code, lishen/end2end-all-conv, early-stops on val_loss with patience 10).
    "shen2017_whole": (
        Stage("top", 30, optimizer="adam", learning_rate=1e-4, trainable=r"re:^(top\d*_|predictions$)",
              l2=0.001, l2_layers=r"re:^(top\d*_|predictions$)", batch_size=2),
        Stage("all", 20, optimizer="adam", learning_rate=1e-5, trainable="all",
              l2=0.01, l2_layers=r"re:^(top\d*_|predictions$)", batch_size=2),
        Stage("resume", 200, optimizer="adam", learning_rate=1e-5, trainable="all",
              l2=0.01, l2_layers=r"re:^(top\d*_|predictions$)", batch_size=2,
              early_stopping_patience=10)),
    # Shen 2017 §3.2.2: the DDSM whole-image models fine-tuned on INbreast: all layers, Adam 1e-5,
    # 200 epochs, weight decay 0.01; batch 2 as on DDSM (not restated).
    "shen2017_inbreast": (
        Stage("all", 200, optimizer="adam", learning_rate=1e-5, trainable="all",
              l2=0.01, l2_layers=r"re:^(top\d*_|predictions$)", batch_size=2),),
    # Jain & Levy §4.3, GoogLeNet "deeper": SGD 1e-2 with Caffe's poly policy (power 0.5) over the
    # 40-epoch run whose 30-epoch snapshot is the final model; inception_5a/5b at Caffe's own rates
    # (weights 1, biases 2), earlier layers x0.1, the new classifier x10 (biases x20); batch 32.
    # The L2 penalty (1e-3) and dropout (0.2) are options of the model row (Caffe weight decay).
    "jain_levy_deeper": (
        Stage("fine_tune", 40, optimizer="sgd", learning_rate=1e-2, momentum=0.9, schedule="poly",
              poly_power=0.5, batch_size=32,
              lr_multipliers=_caffe_rates("inception_5a|inception_5b", "loss3_classifier")),),
    # GoogLeNet "shallow": only inception_5b at the full rate; 20 epochs.
    "jain_levy_shallow": (
        Stage("fine_tune", 20, optimizer="sgd", learning_rate=1e-2, momentum=0.9, schedule="poly",
              poly_power=0.5, batch_size=32,
              lr_multipliers=_caffe_rates("inception_5b", "loss3_classifier")),),
    # AlexNet: Adam 1e-3, every pretrained layer at 0.1x, the new fc8 at 1x; batch 128; 30 epochs.
    "jain_levy_alexnet": (
        Stage("fine_tune", 30, optimizer="adam", learning_rate=1e-3, batch_size=128,
              lr_multipliers=(("^fc8/bias", 2.0), ("^fc8/", 1.0), ("/bias$", 0.2), (".", 0.1))),),
    # LevyNet from scratch: Adam 1e-3 with Caffe's "step" policy (gamma 0.1; the step size is not
    # given: every 10 epochs), batch 64, 35 epochs.
    "jain_levy_scratch": (
        Stage("train", 35, optimizer="adam", learning_rate=1e-3, schedule="step", step_epochs=10,
              step_gamma=0.1, batch_size=64),),
    # Coccomini 2021 Ch. 4 (B.4): scratch CNN, 80 epochs, early stopping patience 4, class weights
    # freq(other) / n, batch 16 (Adam 1e-3: the rate is not stated).
    "coccomini2021": (
        Stage("train", 80, optimizer="adam", learning_rate=1e-3, early_stopping_patience=4,
              class_weight="complement", batch_size=16),),
    # Coccomini 2021 Ch. 5: pretrained backbones with a dense-256 sigmoid head, batch 16; per backbone
    # "after multiple trials": VGG16 RMSprop 2e-6, ResNet50 Adam 1e-3, InceptionV3 RMSprop 2e-5 (mass
    # vs calcification) / 2e-6 (benign vs malignant); 40 epochs per fold (ResNet50 50). What trains
    # (frozen, or the last block) is the row's `fine_tune` option.
    "coccomini2021_vgg16": (
        Stage("train", 40, optimizer="rmsprop", learning_rate=2e-6, trainable="as_built", batch_size=16),),
    "coccomini2021_resnet50": (
        Stage("train", 50, optimizer="adam", learning_rate=1e-3, trainable="as_built", batch_size=16),),
    "coccomini2021_inceptionv3_mass_vs_calc": (
        Stage("train", 40, optimizer="rmsprop", learning_rate=2e-5, trainable="as_built", batch_size=16),),
    "coccomini2021_inceptionv3_benign_vs_malignant": (
        Stage("train", 40, optimizer="rmsprop", learning_rate=2e-6, trainable="as_built", batch_size=16),),
    # Coccomini 2021 Ch. 6: siamese networks, Adam 1e-3; the encoder's trainable part is what its
    # `fine_tune` option built. Epochs and batch are unstated: those of Ch. 5 (40, 16).
    "coccomini2021_siamese": (
        Stage("siamese", 40, optimizer="adam", learning_rate=1e-3, trainable="as_built", batch_size=16),),
    # The mini-MIAS tasks of experiments/mias_tasks (no paper): a scratch CNN, Adam 1e-3, batch 32,
    # classes weighted n / (k * n_c) (the 5-class and whole-image sets are unbalanced), up to 40
    # epochs, stopped when the validation loss has not improved for 10 (best weights restored).
    "mias_scratch": (
        Stage("train", 40, optimizer="adam", learning_rate=1e-3, class_weight="balanced",
              early_stopping_patience=10, batch_size=32),),
    # The same with precise BatchNorm (training.batchnorm): after every epoch, before validation and
    # early stopping read the network, its BatchNorm statistics are set to those of the fold's
    # training items. A fold of a few dozen items takes two steps an epoch, too few for Keras' moving
    # averages (momentum 0.99) to leave their initial values, and the network then scores every item
    # alike at inference (mass_vs_calcification's first run: 3 of 5 folds collapsed).
    "mias_scratch_precise_bn": (
        Stage("train", 40, optimizer="adam", learning_rate=1e-3, class_weight="balanced",
              early_stopping_patience=10, batch_size=32, precise_bn=True),),
    # The same on a frozen pretrained backbone (experiments/mias_tasks/patches_2class_vgg16): only
    # the layers the row's `fine_tune` leaves trainable learn (0FT: the head on frozen conv features),
    # with L2 1e-4 on the head's kernels (Chougrad's 0.1 makes the loss almost all penalty).
    "mias_frozen_features": (
        Stage("head", 40, optimizer="adam", learning_rate=1e-3, trainable="as_built", class_weight="balanced",
              early_stopping_patience=10, batch_size=32, l2=1e-4, l2_layers="re:^(head|predictions)"),),
}.items():
    PRESETS.register(_name, _stages)
del _name, _stages

def preset(name: str) -> tuple[Stage, ...]:
    """A paper's stage list by name."""
    return PRESETS.get(name)
