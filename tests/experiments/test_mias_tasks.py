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


# a frozen-VGG16 config -> the scratch-CNN config whose items it must read
FROZEN_VGG16_OF = {"patches_2class_vgg16": "patches_2class", "mass_vs_calcification_vgg16": "mass_vs_calcification"}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", sorted(FROZEN_VGG16_OF))
def test_the_frozen_vgg16_config_runs_chougrads_vgg16_head_only_on_the_same_items(name, profile, capsys, monkeypatch):
    monkeypatch.setenv("MAMMO_VGG16_WEIGHTS", "/nonexistent/vgg16.weights.h5")  # named, not read by --plan
    config = load_config(f"mias_tasks/{name}", profile)
    same = load_config(f"mias_tasks/{FROZEN_VGG16_OF[name]}", profile)
    assert (config.task, config.task_options, config.label_map, config.item_part) == (
        same.task, same.task_options, same.label_map, same.item_part)
    assert config.augment is None and config.input_size == same.input_size  # frozen prefix cached per fold
    assert main(["reproduce", f"mias_tasks/{name}", "--plan", "--profile", profile, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    vgg16_rows = [r for r in rows if r["model"] == "chougrad_vgg16"]
    assert [r["label"] for r in vgg16_rows][:2] == ["vgg16_frozen", "vgg16_block4_frozen"]
    for row in vgg16_rows:
        pooled = row["label"].endswith("_gap_frozen")
        assert row["model_summary"]["head_input"] == ("GlobalAveragePooling2D" if pooled else "Flatten")
        assert row["data"]["intensity_scale"] == 255
        (stage,) = [s for s in row["stages"] if s["runs"]]
        assert (stage["trainable"]["n_conv"], stage["trainable"]["n_layers"],
                stage["regularisation"][0]["coefficient"]) == (0, 3, 1e-4)
        # the items are not GCN-centred: the backbone's scaling subtracts the ImageNet means itself
        (scaling,) = [step for step in row["data"]["chain"] if step["step"] == "backbone_scaling"]
        assert (scaling["mode"], scaling["centred"]) == ("caffe", False)
        assert not [step for step in row["data"]["chain"] if step["step"] == "gcn"]


SIMCLR_CONFIGS = {"patches_2class_simclr": None, "benign_vs_malignant_simclr": "shen_s10"}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", sorted(SIMCLR_CONFIGS))
def test_simclr_configs_pair_random_init_with_the_pretrained_row_and_plan_the_pretraining(name, profile, capsys):
    config = load_config(f"mias_tasks/{name}", profile)
    assert [row.label for row in config.models][:2] == ["scratch_cnn", "scratch_cnn_simclr"]
    assert main(["reproduce", f"mias_tasks/{name}", "--plan", "--profile", profile, "--json"]) == 0
    rows = {row["label"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert "pretraining" not in rows["scratch_cnn"]
    pretraining = rows["scratch_cnn_simclr"]["pretraining"]
    row = next(r for r in config.models if r.label == "scratch_cnn_simclr")
    assert pretraining["epochs"] == max(1, round(row.pretrain["epochs"] * config.epoch_scale))
    assert pretraining["epochs"] == {"tiny": 2, "cpu": 10, "paper": 40}[profile]
    assert pretraining["encoder_output"] == "block4_dropout"
    source = SIMCLR_CONFIGS[name]
    assert (f"`{source}` items" in pretraining["unlabelled_items"]) if source else \
        pretraining["unlabelled_items"].startswith("each part's training items")
    same = ("stages", "data")  # the two rows differ only by the pretraining
    assert all(rows["scratch_cnn"][key] == rows["scratch_cnn_simclr"][key] for key in same)


@pytest.mark.usefixtures("isolated_cache")
def test_the_roi_task_pretrains_on_the_patches_of_women_outside_each_folds_validation_and_test(tmp_path, monkeypatch):
    import keras
    import pandas as pd

    from mammo_keras import models

    def tiny_cnn(name, input_shape, **_):
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten(name="flatten")(keras.layers.Conv2D(2, 3, strides=4, name="conv")(inputs))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="predictions")(x))

    monkeypatch.delenv("MAMMO_DATA", raising=False)
    monkeypatch.setattr(models, "get", tiny_cnn)
    results = tmp_path / "results"
    assert main(["reproduce", "mias_tasks/benign_vs_malignant_simclr", "--profile", "tiny", "--results", str(results),
                 "--set", "n_splits=2", "--set", "grad_cam=false", "--set", "n_bootstrap=100"]) == 0
    out = results / "mias_tasks" / "benign_vs_malignant_simclr"
    run = json.loads((out / "run.json").read_text())
    assert any(key.startswith("unlabelled:shen_s10") for key in run["data_fingerprints"])
    patches = pd.read_csv(next((out / "prepared").glob("phantom_shen_s10*")) / "index.csv")
    folds = pd.read_csv(out / "phantom" / "scratch_cnn_simclr" / "folds.csv")
    assert not (out / "phantom" / "scratch_cnn" / "fold_0" / "pretrain_log.csv").exists()
    for fold in (0, 1):
        part = out / "phantom" / "scratch_cnn_simclr" / f"fold_{fold}"
        has_val = (part / "val_predictions.csv").is_file()  # a tiny fold may have no validation patient
        val = pd.read_csv(part / "val_predictions.csv")["patient_id"].astype(str) if has_val else []
        test = folds.loc[folds["fold"] == fold, "patient_id"].astype(str)
        allowed = ~patches["patient_id"].astype(str).isin(set(val) | set(test))
        log = pd.read_csv(part / "pretrain_log.csv")
        assert 0 < allowed.sum() < len(patches) and (log["items"] == allowed.sum()).all()
    table = pd.read_csv(out / "table.csv").set_index("model")
    assert (table.loc[["scratch_cnn", "scratch_cnn_simclr"], "status"] == "ok").all()
    assert table.loc["scratch_cnn", "weights"] == "random"
    assert table.loc["scratch_cnn_simclr", "weights"] == "random, then simclr pretraining per part on unlabelled `shen_s10` items"

    from mammo_keras.plan import card_lines

    lines = card_lines(json.loads((out / "plan.json").read_text()), "scratch_cnn_simclr")
    assert any(line.startswith("self-supervised pretraining (simclr) of the encoder up to `conv`: 2 epochs")
               for line in lines)


def test_a_precise_batchnorm_config_runs_end_to_end_and_scores_apart(tmp_path, monkeypatch):
    """mass_vs_calcification at tiny: the scratch CNN (10 BatchNorm layers) trains a few steps an epoch,
    as on real mini-MIAS; with precise BatchNorm its out-of-fold scores are not constant."""
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    assert main(["reproduce", "mias_tasks/mass_vs_calcification", "--profile", "tiny", "--results", str(results),
                 "--set", "rows=[scratch_cnn]", "--set", "grad_cam=false", "--set", "n_bootstrap=100"]) == 0
    out = results / "mias_tasks" / "mass_vs_calcification"
    plan = json.loads((out / "plan.json").read_text())
    (stage,) = [s for s in plan["rows"][0]["stages"] if s["runs"]]
    assert stage["batchnorm"]["precise"]["layers"] == 10
    collapse = json.loads((out / "phantom" / "scratch_cnn" / "collapse.json").read_text())
    assert collapse["collapsed"] is False and collapse["min_fold_std"] > 0.01, collapse


@pytest.mark.usefixtures("isolated_cache")
def test_the_five_class_table_reports_accuracy_and_the_mean_recall_of_its_classes(tmp_path, monkeypatch):
    """With classes weighted in the loss, accuracy (66% for always answering background on mini-MIAS)
    does not say whether a network learned the four small lesion classes; balanced accuracy (1/5 for
    a constant answer) does. Both are pooled over the out-of-fold predictions."""
    import keras
    import pandas as pd
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from mammo_keras import models

    def tiny_cnn(name, input_shape, num_classes=1, **_):
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten(name="flatten")(keras.layers.Conv2D(2, 3, strides=4, name="conv")(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x))

    monkeypatch.delenv("MAMMO_DATA", raising=False)
    monkeypatch.setattr(models, "get", tiny_cnn)
    results = tmp_path / "results"
    assert main(["reproduce", "mias_tasks/patches_5class", "--profile", "tiny", "--results", str(results),
                 "--set", "n_splits=2", "--set", "n_bootstrap=100"]) == 0
    out = results / "mias_tasks" / "patches_5class"
    predictions = pd.concat(pd.read_csv(p) for p in sorted((out / "phantom" / "scratch_cnn").glob("fold_*/predictions.csv")))
    assert predictions["label"].nunique() > 2 and {"pred", "p_4"} <= set(predictions)
    table = pd.read_csv(out / "table.csv").iloc[0]
    assert table["balanced_accuracy_pooled"] == pytest.approx(
        balanced_accuracy_score(predictions["label"], predictions["pred"]))
    assert table["accuracy_pooled"] == pytest.approx(accuracy_score(predictions["label"], predictions["pred"]))
    assert table["balanced_accuracy_ci_low"] <= table["balanced_accuracy_pooled"] <= table["balanced_accuracy_ci_high"]
    assert "ours balanced_accuracy (%) pooled [95% CI]" in (out / "table.md").read_text()
