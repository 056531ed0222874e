"""`mammo-keras` console entry point. It only parses arguments and dispatches.

Every failure is one line on stderr, `error: <what>: <why>`, and a non-zero exit; `--verbose`
shows the traceback of an unexpected one. Output piped into a reader that stops early (`| head`)
ends the command quietly with exit status 141, as a shell tool killed by SIGPIPE.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path

from mammo_keras import __version__
from mammo_keras.errors import DataError, DatasetNotFoundError

DESCRIPTION = """\
Re-run the tables of deep-learning mammography papers (Chougrad 2018, Shen 2017, Jain & Levy,
Coccomini 2021, Hamed 2020) with Keras, prepare the public datasets, score predictions, and
classify new images with a saved model. Research use only: not a medical device.

Without data the experiments run on a synthetic phantom dataset (and say so); point them at real
data with --data DIR or $MAMMO_DATA: a folder holding mias/ (or mini-mias/), cbis-ddsm/,
inbreast/, bcdr/, vindr-mammo/, cmmd/, rsna-screening/."""

DATA_HELP = ("a folder holding the dataset folders: mias/ (or mini-mias/), cbis-ddsm/, inbreast/, bcdr/, "
             "vindr-mammo/, cmmd/, rsna-screening/ (default: $MAMMO_DATA); one holding none of them is an error")

EPILOG = """\
examples:
  mammo-keras reproduce --list                         the experiment configs
  mammo-keras reproduce chougrad2018/table2 --plan     the protocol it runs, without training
  mammo-keras reproduce chougrad2018/table2            tiny profile on phantom data (minutes)
  mammo-keras reproduce shen2017/table3 --profile cpu --data DIR --set split=official
  mammo-keras reproduce --help-config                  every key --set can change
  mammo-keras data info cbis-ddsm --root DIR           counts, and the files found and missing
  mammo-keras data prepare mias --task chougrad --root DIR
  mammo-keras predict scan.dcm --model MODEL_DIR --roi X,Y,R
  mammo-keras score predictions.csv --index index.csv --level breast
  mammo-keras models pack MODEL_DIR model.zip

`mammo-keras COMMAND --help` shows a command's options."""



# TensorFlow's C++ start-up lines (absl-formatted INFO/WARNING logs such as the oneDNN and CPU-feature notices,
# written before its logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not reach them) and the line that
# announces them; `--verbose` keeps them.
TF_STARTUP_NOISE = re.compile(r"^(?:[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
                              r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                              r"|To enable the following instructions: .*rebuild TensorFlow)")
TF_COMMANDS = ("reproduce", "predict", "serve", "models")  # the commands that load TensorFlow


class RetracingFilter(logging.Filter):
    """Drops tf.function's retracing warnings ("... triggered tf.function retracing ..."): Keras retraces its
    predict function per fold and input size by design, and the warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _stderr_without(pattern: re.Pattern):
    """Capture what is written to file descriptor 2 (C++ included) and write it back without the lines
    matching `pattern`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            sys.stderr.write("".join(line for line in text.splitlines(keepends=True) if not pattern.match(line)))
            sys.stderr.flush()


def quiet_tensorflow(args) -> None:
    """Keep TensorFlow's start-up lines, absl warnings and retracing warnings out of the progress output.

    Only the CLI does this (a library must not silence its user's logging); `mammo-keras --verbose` skips
    it. TF_CPP_MIN_LOG_LEVEL=2 (unless set) hides TensorFlow's later C++ INFO and WARNING lines; the lines
    it prints while it loads are filtered from stderr as it is imported, for the commands that need it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow|keras|absl|google)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(tensorflow|keras)(\.|$)")
    needed = args.command in TF_COMMANDS and not (
        args.command == "reproduce" and (args.list or args.help_config or not args.experiment))
    if needed and "tensorflow" not in sys.modules:
        with _stderr_without(TF_STARTUP_NOISE):
            import tensorflow  # noqa: F401
    if "tensorflow" in sys.modules:
        import tensorflow as tf
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        logger = tf.get_logger()
        if not any(isinstance(f, RetracingFilter) for f in logger.filters):
            logger.addFilter(RetracingFilter())


def _dataset(text: str) -> str:
    """A dataset name or any of its spellings (`cbis-ddsm`, the folder name, is `cbis_ddsm`)."""
    from mammo_keras.data import canonical_name

    try:
        return canonical_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _dataset_help(exclude: tuple[str, ...] = ()) -> str:
    from mammo_keras.data import READERS

    return "one of " + ", ".join(f"{name} ({'/'.join(READERS.aliases_of(name))})" if READERS.aliases_of(name) else name
                                 for name in READERS if name not in exclude)


def _parse_option(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE. Received: {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _pixel_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-pixels takes a whole number >= 0 (0: no cap). Received: {text!r}")
    return value


def _read(args, *, keep_missing: bool = False, cache: Path | None = None) -> tuple[object, Path | None]:
    """The dataset's table; `keep_missing` keeps rows of absent files where the reader can, and `cache`
    (a JSON file) keeps what the reader read from the files (headers, mask boxes) where it takes one."""
    from mammo_keras.data import canonical_name, check_data_dir, dataset_root, read_dataset, reader_module

    name = canonical_name(args.dataset)
    if args.root is None:
        check_data_dir(args.data)
    root = dataset_root(name, args.data, explicit=args.root)
    module = reader_module(name)
    options = {"missing": "keep"} if keep_missing and "keep" in getattr(module, "MISSING_POLICIES", ()) else {}
    return read_dataset(name, root, cache=cache, **options), root


def cmd_data_info(args) -> int:
    from mammo_keras.data.inventory import file_inventory
    from mammo_keras.data.records import summary
    from mammo_keras.data.splits import official_summary

    table, root = _read(args, keep_missing=not args.strict)
    facts = summary(table)
    files = file_inventory(table, root=root)
    if args.strict and files["image_files_missing"]:
        raise DataError(root, f"{files['image_files_missing']} of {files['images_listed']} image files "
                              f"listed are missing (--strict), e.g. {files['missing_examples'][0]}")
    facts["files"] = files
    official = official_summary(table)
    if official:
        facts["official_split"] = official
    for key in ("csv_files", "csv_missing"):
        if key in table.attrs:
            facts[key] = table.attrs[key]
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    print(f"{args.dataset} ({root or 'generated'})")
    print(f"  images {facts['images']}   patients {facts['patients']}   label rows {facts['rows']}")
    for title, key in (("images by class", "images_by_pathology"), ("lesions by type", "lesions_by_abnormality"),
                       ("images by view", "images_by_view"), ("images by side", "images_by_laterality")):
        print(f"  {title:16s} " + "   ".join(f"{k} {v}" for k, v in facts[key].items()))
    print(f"  lesions with coordinates {facts['lesions_with_geometry']}")
    if "csv_files" in facts:
        print(f"  label files read ({len(facts['csv_files'])}): "
              + ", ".join(Path(path).name for path in facts["csv_files"]))
        if facts.get("csv_missing"):
            print(f"  label files not found: {', '.join(facts['csv_missing'])}")
    print("  lesions by type and pathology  "
          + "   ".join(f"{kind}: " + ", ".join(f"{p} {n}" for p, n in counts.items())
                       for kind, counts in files["lesions_by_type_and_pathology"].items()))
    print(f"  image files      found {files['image_files_found']} of {files['images_listed']} listed   "
          f"missing {files['image_files_missing']}")
    for path in files["missing_examples"]:
        print(f"    missing: {path}")
    if official:
        print("  official split   " + "   ".join(f"{side} {official['images'].get(side, 0)} images of "
                                                 f"{official['patients'].get(side, 0)} patients"
                                                 for side in ("train", "test")))
        both = official["patients_on_both_sides"]
        if both:
            print(f"  patients on both sides of the official split: {len(both)} ({', '.join(both[:10])}"
                  f"{', ...' if len(both) > 10 else ''}); CBIS-DDSM's mass and calc files merged do not keep "
                  "patients apart, so `split: official` needs one abnormality (or use the patient-level split)")
    if len(table.attrs.get("missing_files", [])) > files["image_files_missing"]:
        print(f"  files named in the label files but not found, masks and crops included: "
              f"{len(table.attrs['missing_files'])}")
    if table.attrs.get("problems"):
        print(f"  problems ({len(table.attrs['problems'])}):")
        for problem in table.attrs["problems"][:20]:
            print(f"    {problem}")
    return 0


def cmd_data_prepare(args) -> int:
    from mammo_keras.data.prepare import prepare

    out = Path(args.out) if args.out else Path("prepared") / f"{args.dataset}_{args.task}"
    table, root = _read(args, keep_missing=args.skip_missing, cache=out / "reader_cache.json")
    report = prepare(args.dataset, table, out, args.task, root=root, options=dict(args.option),
                     workers=args.workers, skip_bad=args.skip_bad, skip_missing=args.skip_missing,
                     progress=not args.no_progress)
    print(f"{report.items} items from {report.images} images -> {out} "
          f"({report.seconds:.1f} s, {report.images_per_second} images/s, {report.items_per_second} items/s "
          f"with {report.workers} workers; "
          f"{report.resumed_images} images reused from an earlier run"
          + (f", {report.changed_images} cut again as their records or image file changed"
             if report.changed_images else "") + ")")
    print(f"  classes: {report.counts_by_label}   item shape: {report.item_shape}")
    print(f"  data fingerprint: {report.data_fingerprint}")
    if report.skipped:
        missing = sum(entry.get("reason") == "missing" for entry in report.skipped)
        print(f"  skipped {len(report.skipped)} images ({missing} missing, {len(report.skipped) - missing} "
              f"bad; listed in {out / 'prepare.json'}):")
        for entry in report.skipped[:10]:
            print(f"    {entry['error']}")
    return 0


def cmd_data_download(args) -> int:
    from mammo_keras.data import canonical_name
    from mammo_keras.data.download import DownloadError, download_mias, instructions

    name = canonical_name(args.dataset)
    if name != "mias":
        print(f"{name} cannot be downloaded automatically (it needs a registration, a request or a "
              f"download client).\n"
              f"{instructions(name)}", file=sys.stderr)
        return 2
    try:
        folder = download_mias(args.out, url=args.url)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"mini-MIAS downloaded and verified in {folder}")
    return 0


def _check_experiment(name: str, known: list[str]) -> None:
    """Raise ValueError naming the close matches when `name` is not a config (nor a YAML file)."""
    if name in known or (Path(name).suffix in (".yaml", ".yml") and Path(name).is_file()):
        return
    papers = sorted({config.split("/")[0] for config in known})
    paper, _, table = name.partition("/")
    if paper in papers:
        tables = [config.split("/", 1)[1] for config in known if config.startswith(f"{paper}/")]
        close = [f"{paper}/{t}" for t in difflib.get_close_matches(table, tables, n=5, cutoff=0.0)]
    else:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        close += [p for p in difflib.get_close_matches(paper, papers, n=3, cutoff=0.5) if p not in close]
    hint = f"close matches: {', '.join(close)}" if close else f"the experiment folders are {', '.join(papers)}"
    raise ValueError(f"{name}: no such experiment config ({hint}; `mammo-keras reproduce --list` lists "
                     f"all {len(known)})")


def _experiment_config(args):
    """The experiment's config at its profile, its name and `--set` overrides checked.

    `main` calls it before TensorFlow loads, so that a misspelt name or a badly typed override is
    answered at once rather than after TensorFlow's start-up (seconds) or any work.
    """
    from mammo_keras.config import list_configs, load_config

    _check_experiment(args.experiment, list_configs())
    return load_config(args.experiment, args.profile, overrides=dict(args.set))


def cmd_reproduce(args) -> int:
    from mammo_keras.config import list_configs

    if args.help_config:
        from mammo_keras.config import config_help

        print(config_help())
        return 0
    if args.list or not args.experiment:
        print("\n".join(list_configs()))
        return 0
    config = getattr(args, "config", None) or _experiment_config(args)
    if args.plan:
        from mammo_keras.data import check_data_dir
        from mammo_keras.plan import compile_plan, render_markdown

        check_data_dir(args.data)  # the plan reads no data, but a wrong --data is a mistake all the same
        plan = compile_plan(config)
        print(json.dumps(plan, indent=1, default=str) if args.json else render_markdown(plan))
        return 0
    from mammo_keras.reproduce import reproduce
    from mammo_keras.training.distribute import training_scope

    with training_scope(args.strategy, args.precision):
        out = reproduce(config, data_dir=args.data, results_dir=args.results)
    print((out / "table.md").read_text())
    print(f"results written to {out}/ (table.md, table.csv, run.json, per-fold logs and ROC plots)")

    if json.loads((out / "run.json").read_text()).get("synthetic"):
        print(f"This was the {config.profile} profile on synthetic phantom data. For real data: "
              "--data DIR (a folder holding mias/ or mini-mias/, cbis-ddsm/, inbreast/, ...) --profile cpu|paper.")
    elif config.profile == "tiny":
        print("This was the tiny profile (small inputs, a few epochs): a pipeline check, not a result. "
              "For results: --profile cpu|paper.")
    return 0


def _lesions(args) -> list:
    """One Lesion per image (or none): --roi/--bbox given once apply to every image."""
    from mammo_keras.app.predict import Lesion

    specs = ([Lesion.parse(t, "circle", args.y_origin) for t in args.roi]
             + [Lesion.parse(t, "box", args.y_origin) for t in args.bbox])
    if args.roi and args.bbox:
        raise ValueError("give the lesions either as --roi or as --bbox, not both")
    if not specs:
        return [None] * len(args.images)
    if len(specs) == 1:
        return specs * len(args.images)
    if len(specs) != len(args.images):
        raise ValueError(f"give one --roi/--bbox for every image, or one for all. "
                         f"Received: {len(specs)} lesions for {len(args.images)} images")
    return specs


def cmd_predict(args) -> int:
    import csv

    from mammo_keras.app.predict import column_name, heatmap_name, load_model_folder, predict_image, write_png

    lesions = _lesions(args)
    loaded = load_model_folder(args.model, recipe=args.recipe)
    out = Path(args.out)
    rows, failed, used = [], 0, set()
    for path, lesion in zip(args.images, lesions):
        try:
            result = predict_image(loaded, path, lesion, max_pixels=args.max_pixels or None)
        except DataError as error:  # names the file already
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        except (ValueError, OSError, MemoryError) as error:  # one bad image must not stop the batch
            print(f"error: {path}: {error or type(error).__name__}", file=sys.stderr)
            failed += 1
            continue
        name = heatmap_name(path)  # <stem>_<8 hex of the sha256 of its absolute path>_gradcam.png
        number = 1
        while name in used:  # the same file twice in one command (another lesion)
            number += 1
            name = heatmap_name(path).replace("_gradcam.png", f"_{number}_gradcam.png")
        used.add(name)
        heatmap = write_png(out / name, result.panel)
        rows.append(result.row(heatmap))
    if rows and args.json:
        print(json.dumps(rows, indent=2))
    elif rows and args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif rows:
        classes = [column_name(name) for name in loaded.class_names]
        widths = {"image": max(5, *(len(r["image"]) for r in rows)), "roi": max(3, *(len(r["roi"]) for r in rows))}
        print(f"{'image':{widths['image']}}  {'roi':{widths['roi']}}  "
              + "  ".join(f"{c:>10}" for c in classes) + "  predicted   heatmap")
        for r in rows:
            print(f"{r['image']:{widths['image']}}  {r['roi']:{widths['roi']}}  "
                  + "  ".join(f"{r[c]:10.4f}" for c in classes) + f"  {r['predicted']:10}  {r['heatmap']}")
        print(f"model {loaded.directory} ({loaded.preprocessing.task} recipe, input "
              f"{loaded.preprocessing.input_hw[0]}x{loaded.preprocessing.input_hw[1]}); Grad-CAM explains "
              f"'{loaded.class_names[-1]}'; heatmaps in {out}/ as <image stem>_<8 hex of the sha256 of the image's "
              "path>_gradcam.png. Not a medical device: research use only.", file=sys.stderr)
    return 1 if failed else 0


def cmd_score(args) -> int:
    from mammo_keras.evaluation.scoring import LEVELS, format_report, score_file, to_json

    report = score_file(args.predictions, val_path=args.val, index=args.index,
                        levels=[args.level] if args.level else LEVELS, calibration_png=args.calibration,
                        exam_rule=args.exam_rule, n_replicates=args.replicates, seed=args.seed)
    print(to_json(report) if args.json else format_report(report))
    return 0


def cmd_models_pack(args) -> int:
    from mammo_keras import io as model_io

    archive = model_io.pack(args.directory, args.archive)
    print(f"packed {args.directory} -> {archive} ({archive.stat().st_size:,} bytes; sha256 "
          f"{model_io.sha256(archive)}); {model_io.CHECKSUMS_FILE} inside lists every file")
    return 0


def cmd_models_unpack(args) -> int:
    from mammo_keras import io as model_io

    folder = model_io.unpack(args.archive, args.directory)
    print(f"unpacked {args.archive} -> {folder}: every file matches {model_io.CHECKSUMS_FILE} and the manifest")
    return 0


def cmd_serve(args) -> int:
    from mammo_keras.app.predict import load_model_folder
    from mammo_keras.app.server import serve

    loaded = load_model_folder(args.model, recipe=args.recipe)
    try:
        serve(loaded, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
              max_pixels=args.max_pixels or None)
    except OSError as error:  # e.g. the port is taken
        print(f"error: cannot serve on {args.host}:{args.port} ({error.strerror or error})", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mammo_keras.data.prepare import TASKS
    from mammo_keras.training.distribute import STRATEGIES

    from mammo_keras.data.imageio import DEFAULT_MAX_PIXELS

    text = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="mammo-keras", description=DESCRIPTION, epilog=EPILOG, formatter_class=text)
    parser.add_argument("--version", action="version", version=f"mammo_keras {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and retracing messages and the full traceback of an "
                             "unexpected error (give it before the command)")
    max_pixels = {"type": _pixel_count, "default": DEFAULT_MAX_PIXELS, "metavar": "N",
                  "help": f"refuse images with more pixels, judged from the file header before decoding "
                          f"(default {DEFAULT_MAX_PIXELS:,}: mammograms are at most about 40 MP; 0: no cap "
                          f"but Pillow's decompression-bomb limit)"}
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="read, inspect, download and prepare datasets",
                               description="Read a dataset as it was downloaded, count what it holds, download "
                                           "mini-MIAS, and cut a paper's inputs into arrays.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    info = data_commands.add_parser("info", help="counts by class, patients, views",
                                    description="Count what a dataset's label files list (images, patients, "
                                                "lesions by type and pathology, views, sides, the official split "
                                                "if it has one) and how many of the files they name are there.")
    info.add_argument("dataset", type=_dataset, help=_dataset_help())
    info_root = info.add_mutually_exclusive_group()
    info_root.add_argument("--root", help="the dataset's own folder (default: its folder under --data or $MAMMO_DATA)")
    info_root.add_argument("--data", metavar="DIR", help=DATA_HELP)
    info.add_argument("--json", action="store_true", help="print the counts as JSON")
    info.add_argument("--strict", action="store_true",
                      help="fail on the first file the label files name but the folder lacks "
                           "(default: count found and missing files)")
    info.set_defaults(handler=cmd_data_info)

    prep = data_commands.add_parser("prepare", help="cut a paper's inputs into arrays + index.csv",
                                    description="Cut one paper's inputs (lesion ROIs, patches or whole images) from a "
                                                "dataset into images.npy + index.csv, in worker processes; a killed "
                                                "run resumes where it stopped.")
    prep.add_argument("dataset", type=_dataset, help=_dataset_help())
    prep_root = prep.add_mutually_exclusive_group()
    prep_root.add_argument("--root", help="the dataset's own folder (default: its folder under --data or $MAMMO_DATA)")
    prep_root.add_argument("--data", metavar="DIR", help=DATA_HELP)
    prep.add_argument("--task", required=True, choices=sorted(TASKS),
                      help="; ".join(f"{t.name}: {t.description}" for t in TASKS.values()))
    prep.add_argument("--out", help="output folder (default: prepared/<dataset>_<task>)")
    prep.add_argument("--option", action="append", default=[], type=_parse_option, metavar="KEY=VALUE",
                      help="override a task option, e.g. r=300 or context=fixed (repeatable)")
    prep.add_argument("--workers", type=int, default=0,
                      help="worker processes (default 0: one per CPU core; 1: no extra process)")
    prep.add_argument("--skip-bad", action="store_true",
                      help="record unreadable images in prepare.json and go on instead of stopping")
    prep.add_argument("--skip-missing", action="store_true",
                      help="prepare the images that are there; record those the label files name but "
                           "the folder lacks (a partial download) in prepare.json")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.set_defaults(handler=cmd_data_prepare)

    download = data_commands.add_parser("download", help="download mini-MIAS; print how to get the others",
                                        description="Download and verify mini-MIAS; for the other datasets print "
                                                    "where and how to get them (they need a registration, a request "
                                                    "or a download client).")
    download.add_argument("dataset", type=_dataset, help=_dataset_help(exclude=("cocc", "phantom")))
    download.add_argument("--out", default="data/mias", help="destination folder (default data/mias)")
    from mammo_keras.data.download import MIAS_URL

    download.add_argument("--url", default=MIAS_URL, help=f"archive address (default {MIAS_URL})")
    download.set_defaults(handler=cmd_data_download)

    repro = commands.add_parser("reproduce", help="run a paper's table from its config (see --list)",
                                description="Run a paper's table or figure from its config file "
                                            "(experiments/<paper>/<table>.yaml) and write results/<paper>/<table>/: "
                                            "table.md and table.csv (the paper's numbers beside ours, 95% CIs), "
                                            "plan.md, run.json, plots.",
                                epilog="Profiles: tiny = phantom data, minutes; cpu = real data on a small machine, "
                                       "reduced epochs; paper = the published protocol (a GPU). `--help-config` lists "
                                       "every key --set can change.")
    repro.add_argument("experiment", nargs="?", help="<paper>/<table>, e.g. chougrad2018/table2")
    repro.add_argument("--profile", default="tiny", choices=("tiny", "cpu", "paper"),
                       help="tiny: phantom data, minutes (default); cpu: real data, reduced epochs; "
                            "paper: the published protocol")
    repro.add_argument("--data", metavar="DIR", help=DATA_HELP)
    repro.add_argument("--results", default="results", help="results root (default results/)")
    repro.add_argument("--set", action="append", default=[], type=_parse_option, metavar="KEY=VALUE",
                       help="override a config value, e.g. n_splits=3 or epoch_scale=0.1 (repeatable)")
    repro.add_argument("--list", action="store_true", help="list the available experiment configs")
    repro.add_argument("--help-config", action="store_true",
                       help="print every config key (--set KEY=VALUE) with its type, default and meaning, and exit")
    repro.add_argument("--plan", action="store_true",
                       help="print the protocol every row would run (data chain, split, per stage the optimizer, "
                            "trainable layers, learning rates, L2, epochs; selection; evaluation) and exit "
                            "without training or reading data")
    repro.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    repro.add_argument("--strategy", default="default", choices=STRATEGIES,
                       help="tf.distribute strategy: mirrored = every local GPU; multi_worker = several "
                            "machines, cluster from TF_CONFIG (see README, 'Speed and scale')")
    repro.add_argument("--precision", default="float32",
                       choices=("float32", "mixed", "mixed_float16", "mixed_bfloat16"),
                       help="dtype policy; mixed = float16 on a GPU, bfloat16 on a CPU (outputs stay float32)")
    repro.set_defaults(handler=cmd_reproduce)

    predict = commands.add_parser("predict", help="classify new mammograms with a saved model; "
                                                  "probabilities and Grad-CAM heatmap PNGs",
                                  description="Classify images with a model folder saved by the package: the image "
                                              "is prepared as its training images were (the manifest's recipe); "
                                              "prints the class probabilities and writes a Grad-CAM heatmap PNG per "
                                              "image. Research use only: not a medical device.")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM, PNG, PGM, JPEG or TIFF files")
    predict.add_argument("--model", required=True, help="a model folder saved by mammo_keras "
                                                        "(manifest.json, model.keras, model.json + model.weights.h5)")
    predict.add_argument("--roi", action="append", default=[], metavar="X,Y,R",
                         help="lesion centre and radius in pixels (MIAS style); once for all images "
                              "or once per image")
    predict.add_argument("--bbox", action="append", default=[], metavar="X0,Y0,X1,Y1",
                         help="lesion box in pixels, instead of --roi")
    predict.add_argument("--y-origin", default="top-left", choices=("top-left", "bottom-left"),
                         help="where y is counted from (MIAS Info.txt: bottom-left; default top-left)")
    predict.add_argument("--out", default="predictions",
                         help="folder for the heatmap PNGs, named <image stem>_<8 hex digits of the sha256 of the "
                              "image's absolute path>_gradcam.png so that files of one name in different folders "
                              "keep their own (default predictions/)")
    predict.add_argument("--recipe", choices=("chougrad", "jain_levy", "shen"),
                         help="for model folders that do not record their preprocessing")
    predict.add_argument("--max-pixels", **max_pixels)
    formats = predict.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print the rows as JSON")
    formats.add_argument("--csv", action="store_true", help="print the rows as CSV (image, roi, one column "
                                                            "per class, predicted, heatmap)")
    predict.set_defaults(handler=cmd_predict)

    # evaluation.scoring's LEVELS, EXAM_RULES and N_REPLICATES, spelled out: importing it loads
    # scikit-learn, a second of start-up for every command
    score = commands.add_parser("score", help="AUROC, AUPRC with 95%% CIs at image, breast and exam level, "
                                              "sensitivity/specificity, RSNA pF1, calibration",
                                description="Score a predictions CSV at image, breast (image scores averaged per "
                                            "patient and side) and exam level: AUROC and AUPRC with 95% bootstrap "
                                            "CIs over patients, sensitivity/specificity, RSNA's pF1, calibration.")
    score.add_argument("predictions", metavar="PREDICTIONS.csv",
                       help="the package's predictions.csv, or a CSV with image_id, patient_id, laterality, "
                            "label, score (exam_id optional)")
    score.add_argument("--level", choices=("image", "breast", "exam"), help="score one level (default: every level the file allows)")
    score.add_argument("--val", metavar="VAL.csv", help="validation predictions (same format): the threshold "
                                                        "is their Youden optimum (default: 0.5, said so)")
    score.add_argument("--index", metavar="INDEX.csv", help="data prepare's index.csv: the side of each item "
                                                            "of a package predictions.csv (for breast level)")
    score.add_argument("--exam-rule", choices=("mean", "max"), default="mean",
                       help="exam score from its breasts' scores: their mean (default) or the highest")
    score.add_argument("--calibration", metavar="OUT.png", help="also write a reliability diagram")
    score.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates (default 2000)")
    score.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    score.add_argument("--json", action="store_true", help="print the report as JSON")
    score.set_defaults(handler=cmd_score)

    models = commands.add_parser("models", help="move a saved model folder between machines, checksummed",
                                 description="Zip a saved model folder (weights, manifest, MODEL_CARD.md) with the "
                                             "sha256 of every file, and unpack it on another machine, verified.")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    pack = model_commands.add_parser("pack", help="zip a saved model folder with the sha256 of every file",
                                     description="Zip a saved model folder with a SHA256SUMS of every file "
                                                 "(its checksums are verified first; the same folder packs to the "
                                                 "same bytes).")
    pack.add_argument("directory", metavar="DIR", help="a model folder written by mammo_keras (manifest.json)")
    pack.add_argument("archive", metavar="OUT.zip", help="the archive to write")
    pack.set_defaults(handler=cmd_models_pack)
    unpack = model_commands.add_parser("unpack", help="extract and verify an archive written by `models pack`",
                                       description="Extract an archive written by `models pack` into a new or empty "
                                                   "folder; unsafe paths, links, unlisted files and checksum "
                                                   "mismatches are refused before anything is written.")
    unpack.add_argument("archive", metavar="ZIP", help="an archive written by `mammo-keras models pack`")
    unpack.add_argument("directory", metavar="DIR", help="destination folder (new or empty)")
    unpack.set_defaults(handler=cmd_models_unpack)

    serve = commands.add_parser("serve", help="a local web page: upload a mammogram, mark the lesion, "
                                              "see the probabilities and the Grad-CAM heatmap",
                                description="Serve a local web page (127.0.0.1 by default) to classify uploaded "
                                            "images with a saved model, as `predict` does. Research use only: not "
                                            "a medical device.")
    serve.add_argument("--model", required=True, help="a model folder saved by mammo_keras")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this "
                                                           "machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--max-upload-mb", type=float, default=100.0,
                       help="largest upload accepted, in MB (default 100)")
    serve.add_argument("--recipe", choices=("chougrad", "jain_levy", "shen"),
                       help="for model folders that do not record their preprocessing")
    serve.add_argument("--max-pixels", **max_pixels)
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            if args.command == "reproduce" and args.experiment and not (args.list or args.help_config):
                args.config = _experiment_config(args)  # before TensorFlow loads: a typo is answered at once
            if not args.verbose:
                quiet_tensorflow(args)  # before TensorFlow loads
            # Pillow warns of images over 89 MP before its own 179 MP refusal; --max-pixels is the rule here and
            # its refusal is one line, which the warning's two would break (only the CLI silences it: see above)
            warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit", module=r"PIL\.")
            code = args.handler(args)
        except BrokenPipeError:
            raise
        except (DataError, DatasetNotFoundError, ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            code = 1
        except Exception as error:  # a bug or an unforeseen failure: one line, the traceback on request
            if args.verbose:
                raise
            print(f"error: {args.command}: {type(error).__name__}: {error} (run `mammo-keras --verbose "
                  f"{args.command} ...` for the traceback)", file=sys.stderr)
            code = 1
        sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        return code
    except BrokenPipeError:  # the reader (`| head`) stopped early: stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit must not fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
