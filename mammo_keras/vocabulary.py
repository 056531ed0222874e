"""The words configs and the engine share, as plain tuples: the config layer checks a config against
them without importing the training machinery (TensorFlow) that acts on them."""
from __future__ import annotations

SELECTIONS = ("last", "best_val_auc", "best_val_accuracy", "best_val_loss")
"""Which epoch's weights are kept: the last one, or the best on the validation part by a metric
(Shen: "#Epochs indicates the epoch when the best validation score has been reached")."""

NORMALISATIONS = ("none", "train_mean_grey", "train_whole_image_mean_grey", "train_mean_image")
"""Statistics of each fold's training part subtracted from the inputs (`data.recipes.Normalisation`)."""

ENSEMBLE_METHODS = ("average", "weighted_average", "stack")
"""How an ensemble row combines earlier rows' saved scores (`training.ensembling.combine`)."""

KINDS = ("cv", "holdout", "transfer", "detection")
"""Experiment kinds (`runner.kinds`)."""

SPLIT_RULES = ("patient", "official")
"""Where a config's test part comes from: "patient" (the kind's own patient-level folds or split) or
"official" (the dataset's own train/test assignment, e.g. CBIS-DDSM's description CSVs; validation
drawn from its training patients; `data.splits.official_split`)."""

OFFICIAL_SPLIT_KINDS = ("cv", "holdout", "detection")
"""The kinds `split: official` applies to (a transfer row's test set is another dataset)."""

BASELINE_CLASSIFIERS = ("logistic_regression", "random_forest")
"""The classical baseline's classifiers (`evaluation.baseline.CLASSIFIERS`)."""

BASELINE_DETECTORS = ("brightest_blobs",)
"""The trivial detectors a detection table's baseline row runs (`evaluation.detection_baseline`)."""

BLOB_OPTIONS = ("sigma", "max_detections", "min_distance", "box_size", "max_box_size")
"""The options of `evaluation.detection_baseline.brightest_blobs` a baseline row may set or search."""

LESION_BOX_TASKS = ("chougrad", "jain_levy", "coccomini")
"""Prepare tasks whose index `box` column is the lesion's box (the baseline's shape features use it);
the Shen tasks record the patch's own box, the whole-image task none."""

WHOLE_IMAGE_TASKS = ("shen",)
"""Prepare tasks whose items are whole images: their results tables add the breast-level AUC (image
scores averaged per patient and side, `evaluation.scoring.breast_auroc`)."""

BREAST_METRIC = "auc_breast"
"""The breast-level AUROC's name among a row's metrics (table.csv columns auc_breast_pooled, ...)."""

BASELINE_LABELS = {"logistic_regression": "baseline_lr", "random_forest": "baseline_rf"}
"""The row label of each baseline classifier a config's `baselines` adds."""

# A row's `pretrain:` keys: the fields of training.contrastive.Pretraining (the config layer checks the
# keys when it loads; the values are checked when the plan or the runner builds the Pretraining).
PRETRAIN_KEYS = ("method", "epochs", "batch_size", "learning_rate", "temperature", "encoder_output", "projection",
                 "crop_area", "aspect", "brightness", "contrast", "noise", "centre", "unlabelled")

METRIC_NAMES = ("accuracy", "auc", "sensitivity", "specificity", "precision", "recall", "f1", "balanced_accuracy")
"""The per-item metrics of a results table (`evaluation.metrics.METRICS`); configs may also list
"a_auc", the AUC of flip-averaged scores. Of a table with more than two classes only accuracy and
balanced_accuracy (the mean recall of the classes) are defined."""

ABNORMALITIES = ("mass", "calcification", "distortion", "asymmetry", "other", "normal")
"""Lesion types of the records table (`data.records`); a config's `abnormality` keeps one of them."""

DATASET_ALIASES = {"mini-mias": "mias", "mini_mias": "mias", "all-mias": "mias", "cbis-ddsm": "cbis_ddsm",
                   "ddsm": "cbis_ddsm", "cocc_npy": "cocc", "coccomini": "cocc", "vindr-mammo": "vindr_mammo",
                   "vindr": "vindr_mammo", "rsna-screening": "rsna_screening", "rsna": "rsna_screening",
                   "rsna-breast-cancer-detection": "rsna_screening"}
"""Other spellings of the datasets' names (lower case), so the config layer can tell that two names are
one dataset (a transfer's test set among its training sets) without importing the readers; held
equal to the reader registry's aliases by tests/data/test_dataset_names.py."""

GENERATED_DATASETS = ("phantom",)
"""Datasets drawn by a generator: another `seed` is other (synthetic) women."""


def dataset_key(name: str) -> str:
    """The registered name of a dataset from any of its spellings (`data.canonical_name` without the
    registry): `mini-MIAS` -> mias, `ddsm` -> cbis_ddsm; an unknown name comes back in lower case."""
    lower = str(name).lower()
    return DATASET_ALIASES.get(lower, lower)


GROUPING_CAVEATS = {
    "cocc": "the course arrays carry no patient ids: items are grouped by lesion pair, so one woman's "
            "lesions can fall in two parts (data/cocc_npy.py)",
    "vindr_mammo": "the release has no patient id beyond the exam: items are grouped by study, so two exams "
                   "of one woman can fall in two parts (data/vindr_mammo.py)",
}
"""Datasets whose readers cannot group items by woman, and what they group by instead."""


def grouping_caveats(datasets) -> dict[str, str]:
    """{dataset: what its items are grouped by instead of the woman} for those of `datasets` in GROUPING_CAVEATS."""
    return {dataset: GROUPING_CAVEATS[dataset_key(dataset)] for dataset in datasets
            if dataset_key(dataset) in GROUPING_CAVEATS}
