"""experiments/mias_tasks (issue 14): the mini-MIAS tasks load at every profile, compile their plans with
the prepare options that define them, and a saved model's recipe carries those options."""
from __future__ import annotations

import json

import pytest

from mammo_keras.cli import main
from mammo_keras.config import PROFILES, load_config
from mammo_keras.data.prepare import TASKS
from mammo_keras.data.recipes import InputRecipe

# config -> (task, its options over the defaults, label map, output units, class names of the recipe)
TASKS_OF = {
    "patches_2class": ("shen_s10", {"normal_images": 4}, {"0": 0, "1": 1, "2": 1, "3": 1, "4": 1}, 1,
                       ("class_0", "class_1")),
    "patches_5class": ("shen_s10", {"normal_images": 4}, {}, 5,
                       ("background", "benign_calcification", "malignant_calcification", "benign_mass",
                        "malignant_mass")),
    "mass_vs_calcification": ("coccomini", {}, {"1": 0, "2": 0, "3": 1, "4": 1}, 1, ("class_0", "class_1")),
    "abnormal_vs_normal": ("shen", {"label": "abnormal", "height": 256, "width": 256}, {}, 1, ("normal", "abnormal")),
}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", sorted(TASKS_OF))
def test_config_loads_and_compiles_its_plan(name, profile, capsys):
    task, options, label_map, units, classes = TASKS_OF[name]
    config = load_config(f"mias_tasks/{name}", profile)
    tiny = profile == "tiny"
    assert config.datasets == (("phantom",) if tiny else ("mias",)) and config.kind == "cv"
    assert config.n_splits == (3 if tiny else 5)
    assert [row.label for row in config.models] == ["scratch_cnn"] + ([] if tiny else ["baseline_lr", "baseline_rf"])
    assert main(["reproduce", f"mias_tasks/{name}", "--plan", "--profile", profile, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["split"]["group"] == "patient_id" and plan["split"]["n_splits"] == config.n_splits
    row = plan["rows"][0]
    assert row["model"] == "coccomini_scratch_cnn" and row["model_summary"]["output_units"] == units
    assert row["data"]["task"] == task and row["data"]["label_map"] == label_map
    assert row["data"]["task_options"] == {**TASKS[task].defaults, **options}
    assert any(stage["runs"] for stage in row["stages"])
    recipe = InputRecipe.of(config)
    assert recipe.class_names == classes and recipe.to_manifest()["options"] == {**TASKS[task].defaults, **options}


def test_the_default_recipes_of_the_papers_record_no_new_option():
    """Configs without task_options record the options of before (plans, manifests, prepared folders)."""
    assert InputRecipe.of(load_config("shen2017/table2", "tiny")).to_manifest()["options"] == {"height": 1152,
                                                                                               "width": 896}
    assert "normal_images" not in InputRecipe.of(load_config("shen2017/table1", "tiny")).to_manifest()["options"]
    with pytest.raises(ValueError, match=r"takes options .*Received: \['normal_image'\]"):
        InputRecipe.of(load_config("mias_tasks/patches_2class", "tiny",
                                   overrides={"task_options": {"normal_image": 4}}))


@pytest.mark.parametrize("profile", PROFILES)
def test_the_frozen_vgg16_config_runs_chougrads_vgg16_head_only_on_the_same_patches(profile, capsys, monkeypatch):
    monkeypatch.setenv("MAMMO_VGG16_WEIGHTS", "/nonexistent/vgg16.weights.h5")  # named, not read by --plan
    config = load_config("mias_tasks/patches_2class_vgg16", profile)
    same = load_config("mias_tasks/patches_2class", profile)
    assert (config.task, config.task_options, config.label_map) == (same.task, same.task_options, same.label_map)
    assert config.augment is None and config.input_size == same.input_size  # frozen prefix cached per fold
    assert main(["reproduce", "mias_tasks/patches_2class_vgg16", "--plan", "--profile", profile, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["model"] == "chougrad_vgg16" and row["data"]["intensity_scale"] == 255
    (stage,) = [s for s in row["stages"] if s["runs"]]
    assert (stage["trainable"]["n_conv"], stage["trainable"]["n_layers"], stage["regularisation"][0]["coefficient"]) == (0, 3, 1e-4)
