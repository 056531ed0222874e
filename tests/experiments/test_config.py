"""Experiment configs: composition, profiles, overrides, errors."""
from __future__ import annotations

import pytest

from mammo_keras.config import list_configs, load_config


def test_chougrad_table2_profiles():
    paper = load_config("chougrad2018/table2", "paper")
    assert paper.datasets == ("cbis_ddsm", "bcdr", "inbreast", "merged")
    assert [m.label for m in paper.models] == ["vgg16", "resnet50", "inceptionv3", "baseline_lr", "baseline_rf"]
    assert [m.baseline["classifier"] for m in paper.models[3:]] == ["logistic_regression", "random_forest"]
    assert paper.models[0].options == {"fine_tune": "2FT", "weights": "imagenet"}
    assert (paper.n_splits, paper.epoch_scale, paper.input_size, paper.n_bootstrap) == (5, 1.0, 224, 2000)
    tiny = load_config("chougrad2018/table2", "tiny")
    assert tiny.datasets == ("phantom",) and tiny.input_size == 75 and tiny.n_splits == 3
    assert tiny.models[2].options["weights"] is None and tiny.abnormality is None
    cpu = load_config("chougrad2018/table2", "cpu", overrides={"n_splits": 4})
    assert cpu.epoch_scale == 0.25 and cpu.n_splits == 4


def test_listing_and_errors(tmp_path):
    assert "chougrad2018/table2" in list_configs()
    with pytest.raises(FileNotFoundError, match="Available: .*chougrad2018/table2"):
        load_config("chougrad2018/table9")
    with pytest.raises(ValueError, match="Received: profile='huge'"):
        load_config("chougrad2018/table2", "huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("paper: x\ntable: y\ntitle: t\ntask: chougrad\ndatasets: [phantom]\n"
                   "models: [{name: m}]\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match=r"unknown config keys \['learning_rate'\]"):
        load_config(str(bad))
    transfer = "paper: x\ntable: y\ntitle: t\ntask: chougrad\ndatasets: [mias]\nmodels: [{name: m}]\nkind: transfer\n"
    bad.write_text(transfer)
    with pytest.raises(ValueError, match="needs `test_dataset`"):
        load_config(str(bad))
    bad.write_text(transfer + "test_dataset: mias\n")
    with pytest.raises(ValueError, match="also a training dataset"):
        load_config(str(bad))
    bad.write_text(transfer + "test_dataset: inbreast\n")
    assert load_config(str(bad)).test_dataset == "inbreast"


@pytest.mark.parametrize("overrides", [
    {"datasets": ["mias"], "test_dataset": "mini-mias"},  # another spelling of the training set
    {"test_dataset": "ddsm", "test_abnormality": "calcification"},  # CBIS-DDSM's other lesions, the same women
    {"test_dataset": "cbis_ddsm", "test_dataset_options": {"subset": "x"}},  # reader options: the same women
    {"datasets": ["phantom"], "test_dataset": "phantom", "test_dataset_options": {"seed": 0}},  # the same draw
    {"datasets": ["phantom"], "dataset_options": {"phantom": {"seed": 7}}, "test_dataset": "phantom",
     "test_dataset_options": {"seed": 7, "n_patients": 6}},
])
def test_a_transfer_test_set_is_other_women_under_any_name(overrides):
    with pytest.raises(ValueError, match="is also a training dataset .*the same women"):
        load_config("chougrad2018/mias_test", "paper", overrides=overrides)


def test_a_phantom_drawn_with_another_seed_is_an_independent_test_set():
    assert load_config("chougrad2018/mias_test", "tiny").test_dataset_options["seed"] == 7
    load_config("chougrad2018/mias_test", "paper", overrides={"datasets": ["phantom"], "test_dataset": "phantom",
                                                              "test_dataset_options": {"seed": 1}})


@pytest.mark.parametrize("profile", ["tiny", "cpu", "paper"])
@pytest.mark.parametrize("experiment", list_configs())
def test_every_config_resolves_to_registered_parts(experiment, profile):
    """Names in configs are data: check each one resolves before a long run needs it."""
    from mammo_keras import models
    from mammo_keras.data.pipeline import preset as augment_preset
    from mammo_keras.data.prepare import TASKS
    from mammo_keras.training.stages import preset as stage_preset

    config = load_config(experiment, profile)
    assert config.task in TASKS or config.kind == "detection"  # detection reads boxes, prepares nothing
    if config.augment:
        augment_preset(config.augment)
    labels = [row.label for row in config.models]
    assert len(labels) == len(set(labels)), "row labels name result folders: they must be unique"
    for row in config.models:
        assert row.ensemble or row.baseline or row.name in models.list(), row.name  # baseline: no network
        assert stage_preset(row.stages or config.stages)
    if profile == "tiny":
        assert config.datasets == ("phantom",)


def test_a_reduced_profiles_title_says_what_it_runs_beside_the_papers_protocol():
    """Before: a tiny run's title said "5-fold" and "2FT fine-tuning" for a 3-fold, 75 px, random-init run."""
    from mammo_keras.runner.report import profile_title

    tiny = profile_title(load_config("chougrad2018/table2", "tiny"))
    assert tiny.startswith("Chougrad 2018 Table 2: 2FT fine-tuning, 5-fold CV")  # the paper's protocol, as titled
    assert ("[tiny profile: 3-fold CV (paper profile: 5), 75x75 px (paper profile: 224x224), epochs x0.05, "
            "random init for vgg16, resnet50, inceptionv3 (paper profile: imagenet)]") in tiny
    assert "(paper profile: 0.8/0.1/0.1)" in profile_title(load_config("jain_levy/table2", "tiny"))
    # a run overridden to another kind is compared with the paper profile's kind, not its unused fractions
    held_out = profile_title(load_config("chougrad2018/table2", "tiny", overrides={"kind": "holdout"}))
    assert "[tiny profile: 0.8/0.1/0.1 split (paper profile: 5-fold CV)," in held_out
    paper = load_config("chougrad2018/table2", "paper")
    assert profile_title(paper) == paper.title


def test_rows_override_takes_one_label_or_a_list_and_refuses_anything_else():
    """`--set rows=levynet` is one row (it was read as the letters l, e, v, ...)."""
    one = load_config("jain_levy/table2", "tiny", overrides={"rows": "levynet"})
    assert [m.label for m in one.models] == ["levynet"]
    two = load_config("jain_levy/table2", "tiny", overrides={"rows": ["levynet", "alexnet"]})
    assert [m.label for m in two.models] == ["levynet", "alexnet"]
    with pytest.raises(ValueError, match="`rows` takes a list of row labels.*Received: rows=3"):
        load_config("jain_levy/table2", "tiny", overrides={"rows": 3})
    with pytest.raises(ValueError, match="names rows the config does not have: \\['lenet'\\]"):
        load_config("jain_levy/table2", "tiny", overrides={"rows": "lenet"})


def test_rows_may_name_the_baseline_rows_and_naming_only_models_keeps_them():
    def labels(rows):
        return [m.label for m in load_config("chougrad2018/table2", "cpu", overrides={"rows": rows}).models]

    assert labels(["vgg16"]) == ["vgg16", "baseline_lr", "baseline_rf"]  # the profile's floor stays
    assert labels(["baseline_lr"]) == ["baseline_lr"]
    assert labels("baseline_rf") == ["baseline_rf"]
    assert labels(["resnet50", "baseline_rf"]) == ["resnet50", "baseline_rf"]
    with pytest.raises(ValueError, match=r"`rows` names rows the config does not have: \['baseline_x'\]\. "
                                         r"Rows: \['vgg16', 'resnet50', 'inceptionv3', 'baseline_lr', 'baseline_rf'\]"):
        labels(["baseline_x"])
    curve = load_config("mias_tasks/learning_curve", "cpu", overrides={"rows": ["baseline_lr"]})
    assert [m.label for m in curve.models] == ["baseline_lr@25%", "baseline_lr@50%", "baseline_lr@75%",
                                               "baseline_lr@100%"]
    # options merged into every row go to the networks, not to the baseline rows
    mixed = load_config("chougrad2018/table2", "cpu", overrides={"row_options": {"weights": None}})
    assert all("weights" not in m.options for m in mixed.models if m.baseline)


def test_a_rows_pretraining_is_checked_merged_by_row_overrides_scaled_and_planned():
    from mammo_keras.plan import compile_plan, render_markdown
    from mammo_keras.runner.rows import train_spec

    config = load_config("mias_tasks/patches_2class_simclr", "tiny",
                         overrides={"row_overrides": {"scratch_cnn_simclr": {"pretrain": {"temperature": 0.5}}}})
    row = next(m for m in config.models if m.label == "scratch_cnn_simclr")
    assert row.pretrain == {"method": "simclr", "epochs": 40, "batch_size": 128, "learning_rate": 1e-3,
                            "temperature": 0.5}  # merged key by key, the rest kept
    assert train_spec(config, row, {}).pretrain.epochs == 2  # 40 x the tiny profile's 0.05
    assert train_spec(config, config.models[0], {}).pretrain is None
    plan = compile_plan(config)
    planned = {r["label"]: r for r in plan["rows"]}
    assert "pretraining" not in planned["scratch_cnn"]
    assert planned["scratch_cnn_simclr"]["pretraining"]["epochs"] == 2
    assert planned["scratch_cnn_simclr"]["pretraining"]["temperature"] == 0.5
    assert planned["scratch_cnn_simclr"]["pretraining"]["encoder_output"] == "block4_dropout"
    assert "self-supervised pretraining (simclr) before the stages: 2 epochs" in render_markdown(plan)
    with pytest.raises(ValueError, match=r"row 'scratch_cnn_simclr': pretrain: unknown keys \['temp'\]"):
        load_config("mias_tasks/patches_2class_simclr", "tiny",
                    overrides={"row_overrides": {"scratch_cnn_simclr": {"pretrain": {"temp": 0.5}}}})


def test_pretraining_is_refused_on_baseline_and_detection_rows(tmp_path):
    from mammo_keras.config import ModelRow

    with pytest.raises(ValueError, match="`pretrain` is for a trained model's row, not a baseline row"):
        ModelRow("baseline", "baseline_lr", baseline={"classifier": "logistic_regression"},
                 pretrain={"method": "simclr"})
    with pytest.raises(ValueError, match="`pretrain` .* is for classification rows"):
        load_config("hamed2020/table3", "tiny", overrides={"row_overrides": {"retinanet": {"pretrain": {"epochs": 2}}}})


def test_pretraining_on_another_tasks_items_is_refused_outside_cross_validation():
    with pytest.raises(ValueError, match=r"`pretrain.unlabelled` is supported by cross-validation \(kind cv\) only. "
                                         r"Received: kind='holdout'"):
        load_config("mias_tasks/benign_vs_malignant_simclr", "tiny", overrides={"kind": "holdout"})


@pytest.mark.parametrize("override, message", [
    ({"n_splits": 1}, r"`n_splits` must be an integer >= 2"),
    ({"val_fraction": 1.5}, r"`val_fraction` must be a share in \[0, 1\)"),
    ({"fractions": [0.5, 0.5, 0.5]}, r"`fractions` must be three train/val/test shares .* sum to 1"),
    ({"batch_size": 0}, r"`batch_size` must be an integer >= 1"),
    ({"max_items": -1}, r"`max_items` must be an integer >= 1"),
    ({"n_bootstrap": 0}, r"`n_bootstrap` must be an integer >= 1"),
    ({"datasets": []}, r"`datasets` must be a non-empty list"),
    ({"metrics": ["foo"]}, r"`metrics` must list some of .*Received: metrics=\['foo'\]"),
    ({"abnormality": "masss"}, r"`abnormality` must be one of .*Received: abnormality='masss'"),
    ({"input_scale": 0}, r"`input_scale` must be a number > 0"),
    ({"epoch_scale": -1}, r"`epoch_scale` must be a number > 0"),
])
def test_out_of_range_values_are_refused_when_the_config_loads(override, message):
    """Before: `--plan` accepted each of these; a run met some only after preparing the data, others never."""
    with pytest.raises(ValueError, match=r"mias_cv\.yaml: " + message):
        load_config("chougrad2018/mias_cv", "tiny", overrides=override)
