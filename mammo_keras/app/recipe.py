"""How a saved model wants its input, recorded in the model folder's manifest.

Training writes it (`model_info`, called by the reproduce runner when it saves a model) and
prediction reads it (`from_manifest`), so one module owns the contract:

    "preprocessing": {"recipe": "chougrad", "options": {"r": 300, "size": 224, "grow_to_fit": true},
                      "input_hw": [224, 224], "input_channels": 1, "input_scale": 1.0,
                      "intensity": "format_range"}

`recipe` is the `data prepare` task that cut the training items; `options` its options;
`intensity` "format_range" means pixels were scaled to [0, 1] by the file format's value range
(`imageio.read_normalised`); the items were then resized to `input_hw` and multiplied by
`input_scale`, as `reproduce.load_inputs` does.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mammo_keras.errors import DataError

RECIPES = ("chougrad", "jain_levy", "shen")  # tasks whose item is one 2-D array cut from one image
ROI_RECIPES = ("chougrad", "jain_levy")
INTENSITIES = ("format_range",)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The input pipeline of a saved model, as training ran it."""

    recipe: str
    options: dict
    input_hw: tuple[int, int]
    input_channels: int
    input_scale: float
    class_names: tuple[str, ...]
    intensity: str = "format_range"

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"the screening framework takes models trained on one of the recipes "
                             f"{RECIPES}. Received: recipe={self.recipe!r}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}. Received: intensity={self.intensity!r}")

    @property
    def needs_roi(self) -> bool:
        """Lesion-ROI models need a lesion position; whole-image models (Shen) do not."""
        return self.recipe in ROI_RECIPES

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "options": dict(self.options), "input_hw": list(self.input_hw),
                "input_channels": self.input_channels, "input_scale": self.input_scale,
                "intensity": self.intensity}


def model_info(config, row) -> dict:
    """Keyword arguments for `io.save` describing how `row` of `config` was trained.

    Args:
        config: the `ExperimentConfig` of the run; row: its `ModelRow`.

    Returns:
        {"architecture", "class_names", "preprocessing"}: the manifest sections `predict` reads.
    """
    from mammo_keras.data.prepare import TASKS

    task = TASKS[config.task]
    scale = row.input_scale if row.input_scale is not None else config.input_scale
    preprocessing = {"recipe": config.task, "options": dict(task.defaults), "input_hw": list(config.input_hw),
                     "input_channels": config.input_channels, "input_scale": float(scale),
                     "intensity": "format_range"}
    if config.item_part is not None:
        preprocessing["item_part"] = config.item_part
    class_names = list(task.class_names)
    if config.label_map:  # relabelled tasks (Coccomini): the prepared class names no longer apply
        preprocessing["label_map"] = {str(k): v for k, v in config.label_map.items()}
        class_names = [f"class_{i}" for i in sorted(set(config.label_map.values()))]
    return {"architecture": row.name, "class_names": class_names, "preprocessing": preprocessing}


def from_manifest(manifest: Mapping, *, origin: str = "<model>", recipe: str | None = None) -> Preprocessing:
    """The `Preprocessing` a manifest records.

    Folders saved before the manifest recorded preprocessing need `recipe` (chougrad, jain_levy
    or shen) from the user; the input size then comes from the model's input shape, the scale is
    1 and the options are the recipe's defaults.

    Raises:
        DataError: no recorded preprocessing and no `recipe`, or a recipe this framework cannot run.
    """
    from mammo_keras.data.prepare import TASKS

    recorded = dict(manifest.get("preprocessing") or {})
    shape = manifest.get("input_shape") or []
    if isinstance(shape, list) and shape and isinstance(shape[0], list):
        raise DataError(origin, f"the screening framework takes models with one image input. "
                                f"Received: input_shape={shape}")
    if "recipe" not in recorded:
        if recipe is None:
            raise DataError(origin, "the manifest records no preprocessing (the folder was saved before "
                                    "mammo_keras recorded it, or by hand): say how the model was trained "
                                    f"with --recipe {'|'.join(RECIPES)}")
        if recipe not in RECIPES:
            raise DataError(origin, f"--recipe must be one of {RECIPES}. Received: recipe={recipe!r}")
        if len(shape) != 3:
            raise DataError(origin, f"the manifest's input_shape must be (height, width, channels). "
                                    f"Received: input_shape={shape}")
        recorded = {"recipe": recipe, "options": dict(TASKS[recipe].defaults), "input_hw": shape[:2],
                    "input_channels": shape[2], "input_scale": 1.0}
    name = recorded["recipe"]
    if name not in RECIPES:
        raise DataError(origin, f"this model was trained on {name!r} items; the screening framework "
                                f"runs models trained on one of {RECIPES}. Received: recipe={name!r}")
    if recorded.get("item_part") is not None or recorded.get("label_map"):
        raise DataError(origin, "models trained on paired or relabelled items are not supported. "
                                f"Received: preprocessing={recorded}")
    class_names = manifest.get("class_names") or list(TASKS[name].class_names)
    options = {**TASKS[name].defaults, **dict(recorded.get("options") or {})}
    height, width = (int(v) for v in recorded["input_hw"])
    return Preprocessing(name, options, (height, width), int(recorded.get("input_channels", 1)),
                         float(recorded.get("input_scale", 1.0)), tuple(str(c) for c in class_names),
                         recorded.get("intensity", "format_range"))
