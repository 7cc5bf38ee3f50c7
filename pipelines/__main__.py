"""Command line: `python -m pipelines <verb> ...`. Imports nothing heavy until a verb runs."""

from __future__ import annotations

import argparse
import json
import sys

if __name__ == "__main__" and sys.argv[1:] == ["list", "--names"]:
    # Answered before the imports below: the Makefile reads its use cases this way, possibly with
    # a python3 that has nothing installed (before .venv/ exists), so this path imports only the
    # standard library and pipelines.usecases (tests/test_readme.py checks it).
    from pipelines.usecases import names

    print("\n".join(names()))
    sys.exit(0)

from pipelines import pipeline
from pipelines.core.errors import PipelineError, UsageError
from pipelines.core.runtime import configure_environment
from pipelines.data.augmentation import AUGMENTATIONS
from pipelines.evaluation.operating_points import check_point
from pipelines.experiments.compare import run_compare
from pipelines.experiments.rerun import logged_data_sha256, spec_of_run
from pipelines.experiments.sweep import run_sweep
from pipelines.experiments.tune import DEFAULT_HEARTBEAT, PRUNERS, SAMPLERS, run_tune
from pipelines.export.saved_model import read_metadata
from pipelines.modeling.builders import BUILDERS
from pipelines.modeling.test_time_augmentation import TRANSFORMS
from pipelines.serving.device_predict import classify_files
from pipelines.serving.predict import predict_files, print_predictions
from pipelines.serving.predict_table import predict_csv, print_table_predictions
from pipelines.serving.score import run_score
from pipelines.serving.serve import DEFAULT_MAX_BODY_MB, serve
from pipelines.tasks import get_task
from pipelines.tracking.registry import promote, resolve_model_dir
from pipelines.usecases import all_specs, get_spec, name_of
from pipelines.usecases import names as usecase_names
from pipelines.usecases.init import init_images, write_usecase_file
from pipelines.usecases.init_table import table_usecase_text
from pipelines.usecases.settings import apply_overrides

VERBS_HELP = """verbs:
  init       write a use-case file for your own data: --images DIR (photos) or --table FILE.csv --target COLUMN
  list       the use cases, their data and models, the builders and augmentations (--names: the names only)
  show       the resolved spec of a use case (after --set overrides, as its task runs it), as JSON
  train      fit, evaluate, log to MLflow and export a SavedModel
  evaluate   evaluate an exported SavedModel on a use case's test split
  export     the latest checkpoint as a new SavedModel version, or a version as LiteRT int8/float16 or ONNX
  predict    classify image files (or CSV rows, for heart) with an exported SavedModel
  promote    make a registered version the champion (what predict, evaluate and serve use)
  compare    a table of MLflow runs across use cases, best per data set marked (CSV, Markdown, PNG)
  sweep      train every point of a grid once (a grid study on Optuna), ranked on validation data
  tune       search settings with Optuna on validation data (any number of workers share a study)
  serve      serve a registered model over REST with MLflow's scoring server (127.0.0.1:5001)
  score      score a folder of images (or CSV/Parquet rows) on Spark with a registered model, to Parquet

examples:
  python -m pipelines init grapes --images ~/photos/grapes                # then: make train-grapes
  python -m pipelines init patients --table patients.csv --target diagnosis --positive malignant
  python -m pipelines train digits --data sample
  python -m pipelines train digits --set epochs=3 --set batch_size=256
  python -m pipelines predict digits my_digit.png                       # the champion
  python -m pipelines predict digits --model models:/digits/3 my_digit.png
  python -m pipelines export digits --format litert                     # the champion, as .tflite int8 + float16
  python -m pipelines predict digits --model models/digits/1/litert/model_int8.tflite my_digit.png
  python -m pipelines compare digits skin --last 5
  python -m pipelines sweep skin --data sample --grid "class_weights=0,0.5 model.dropout=0.2,0.4"
  python -m pipelines tune digits --data sample --trials 8 --space "learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5)"
  python -m pipelines serve digits --model models:/digits/1 --port 5001
  python -m pipelines score digits --input photos/ --output scores.parquet --master "local[2]"
"""


# pipelines.export.edge.FORMATS after the SavedModel, spelled out so --help does not import NumPy.
EXPORT_FORMATS = ("savedmodel", "litert", "onnx")
DEVICE_SUFFIXES = (".tflite", ".onnx")

MODEL_HELP = ("models:/<usecase>@<alias>, models:/<usecase>/<version> or a models/<usecase>/<version> folder "
              "(default: the champion)")
PREDICT_MODEL_HELP = MODEL_HELP + "; or a .tflite / .onnx file (run without TensorFlow)"


# pipelines.evaluation.operating_points.POINTS, spelled out so --help does not import NumPy.
OPERATING_POINTS = ("accuracy", "balanced")
OPERATING_POINT_HELP = ("the decision rule: accuracy (argmax of the probabilities) or balanced (logit-adjusted for "
                        "balanced accuracy, tau from the model's metadata); default: the model's own")


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """Where an Optuna study lives and how its workers behave: `tune` and `sweep` (a grid study)."""
    parser.add_argument("--study", metavar="NAME", help="the study's name (default: <usecase>-<hash of settings and space>)")
    parser.add_argument("--storage", metavar="URL", help="Optuna RDB storage shared by the workers (default: "
                        "sqlite:///models/optuna.db; postgresql+psycopg://user:password@host:port/db for several hosts)")
    parser.add_argument("--timeout", type=float, metavar="S", help="this worker takes no new trial after S seconds")
    parser.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT, metavar="S",
                        help=f"seconds between a trial's heartbeats; a trial silent for 2*S is failed and queued again "
                        f"(default {DEFAULT_HEARTBEAT})")


def _add_spec_arguments(parser: argparse.ArgumentParser, data: bool = True, usecase_optional: bool = False) -> None:
    parser.add_argument("usecase", nargs="?" if usecase_optional else None, help="a use case name (see `list`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec value, e.g. --set epochs=3 --set model.dropout=0.2 (repeatable)")
    if data:
        parser.add_argument("--data", choices=("full", "sample"), help="full data set (default) or the sample bundled in data/samples/")
        parser.add_argument("--data-dir", metavar="DIR", help="a local folder holding the data set (no download)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description="Keras pipelines for digits, clothing, skin lesions, heart disease and cucumber grading.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=VERBS_HELP,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    init = verbs.add_parser("init", help="write a use-case file from your data (photos or a CSV)",
                            description="Look at the data and write a commented use-case file (classes, counts, sizes, "
                            "defaults) into the use-case folder; it never overwrites a file. Then: make train-NAME.")
    init.add_argument("name", help="the new use case's name: lower-case letters, digits, - and _ (e.g. grapes)")
    data = init.add_mutually_exclusive_group(required=True)
    data.add_argument("--images", metavar="DIR", help="a folder with one folder of photos per class (or train/, val/, test/ of them)")
    data.add_argument("--table", metavar="FILE.csv", help="a CSV with one row per example (with --target COLUMN)")
    init.add_argument("--target", metavar="COLUMN", help="with --table: the column to predict")
    init.add_argument("--positive", metavar="VALUE", default="",
                      help="with --table, a binary target: the positive class (column 1 of the answer)")
    init.add_argument("--folder", metavar="DIR", help="where to write NAME.toml (default: usecases/, or $PIPELINES_USECASES_DIR)")

    listing = verbs.add_parser("list", help="list use cases, builders and augmentations")
    listing.add_argument("--names", action="store_true", help="only the use case names, one a line (what the Makefile reads)")

    show = verbs.add_parser("show", help="print the resolved spec as JSON")
    _add_spec_arguments(show)

    train = verbs.add_parser("train", help="train, evaluate, track and export")
    _add_spec_arguments(train, usecase_optional=True)  # with --from-run, the run names it
    train.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    train.add_argument("--run-name", help="MLflow run name")
    train.add_argument("--from-run", metavar="RUN_ID",
                       help="re-run exactly the spec logged on this MLflow run (its spec.json), on the same data")
    train.add_argument("--allow-other-data", action="store_true", help="with --from-run: accept data whose sha256 differs from the run's")

    evaluate = verbs.add_parser("evaluate", help="evaluate an exported model on the test split")
    _add_spec_arguments(evaluate)
    evaluate.add_argument("--model", metavar="REF", help=MODEL_HELP)
    evaluate.add_argument("--out", metavar="DIR", help="where to write the report")
    evaluate.add_argument("--operating-point", choices=OPERATING_POINTS, help=OPERATING_POINT_HELP)

    export = verbs.add_parser("export", help="export a checkpoint as a SavedModel, or a version as LiteRT / ONNX",
                              description="--format savedmodel (default): the latest trained checkpoint as a new version. "
                              "--format litert|onnx: files beside a published version (models/<usecase>/<version>/litert/, "
                              ".../onnx/), each verified by its own runtime on the test split before it is published.")
    _add_spec_arguments(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, default="savedmodel",
                        help="savedmodel (default), litert (int8 and float16 .tflite) or onnx")
    export.add_argument("--checkpoint", metavar="FILE",
                        help="savedmodel: a .keras file (default: models/<usecase>/checkpoints/latest.keras)")
    export.add_argument("--model", metavar="REF", help="litert/onnx: the version to convert, " + MODEL_HELP)

    predict = verbs.add_parser("predict", help="classify image files")
    predict.add_argument("usecase", help="a use case name (see `list`)")
    predict.add_argument("files", nargs="+", metavar="FILE",
                         help="images (PNG/JPEG, any size) or, for tabular use cases, CSV files of raw columns")
    predict.add_argument("--model", metavar="REF", help=PREDICT_MODEL_HELP)
    predict.add_argument("--json", action="store_true", help="print one JSON object per file")
    predict.add_argument("--operating-point", choices=OPERATING_POINTS, help=OPERATING_POINT_HELP)

    promote = verbs.add_parser("promote", help="move the registry alias 'champion' to a version")
    promote.add_argument("usecase", help="a use case name (see `list`)")
    promote.add_argument("version", help="the registered version (see `make compare`)")
    promote.add_argument("--reason", help="why, recorded on the version")
    compare = verbs.add_parser("compare", help="compare MLflow runs across use cases")
    compare.add_argument("usecases", nargs="*", metavar="USECASE", help="use cases to compare (default: all with runs)")
    compare.add_argument("--metric", help="rank by this MLflow metric, higher is better (default: each use case's ranking metric)")
    compare.add_argument("--last", type=int, metavar="N", help="only the N most recent runs of each use case")
    compare.add_argument("--out", metavar="DIR", help="where to write comparison.{csv,md,png} (default: reports/compare/)")
    compare.add_argument("--log", action="store_true", help="also log those files to a run of the MLflow experiment 'comparisons'")

    sweep = verbs.add_parser("sweep", help="train a grid of settings as nested MLflow runs (a grid study on Optuna)",
                             description="Train every point of a grid once, as a trial of an Optuna study on its grid sampler: "
                             "each point a child run of one MLflow parent run, ranked on validation data; the best point is "
                             "then trained once more and scored on the test split. Running the same sweep again continues it "
                             "and never reruns a finished point; the same command elsewhere (with a shared --storage) adds workers.")
    _add_spec_arguments(sweep)
    sweep.add_argument("--grid", required=True, metavar="GRID",
                       help='space-separated KEY=V1,V2,... e.g. "class_weights=0,0.5 model.dropout=0.2,0.4"; '
                            'a tuple value in brackets: "model.stages=[32,64],[48,96]"')
    _add_study_arguments(sweep)
    sweep.add_argument("--out", metavar="DIR",
                       help="where to write the points' comparison and plots (default: reports/sweeps/<study>/)")

    tune = verbs.add_parser("tune", help="search settings with Optuna, trials as nested MLflow runs",
                            description="Search settings with Optuna on validation data, each trial a child run of one MLflow "
                            "parent run; the best trial is then trained once more and scored on the test split. Start the "
                            "same command in other processes or on other hosts (with a shared --storage) to add workers.")
    _add_spec_arguments(tune)
    tune.add_argument("--space", required=True, metavar="SPACE",
                      help='space-separated KEY=KIND(...): float(a,b), log(a,b), int(a,b), choice(v1,v2,...), e.g. '
                           '"learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5) batch_size=choice(64,128,256)"')
    tune.add_argument("--trials", type=int, required=True, metavar="N", help="the study's budget: N trials in all, over every worker")
    _add_study_arguments(tune)
    tune.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="default tpe")
    tune.add_argument("--pruner", choices=PRUNERS, default="median",
                      help="stops poor trials on the per-epoch validation metric (default median)")
    tune.add_argument("--seed", type=int, help="sampler seed; trial n samples with seed+n (default: the spec's train.seed)")
    tune.add_argument("--out", metavar="DIR", help="where to write the trials' comparison and plots (default: reports/tunes/<study>/)")

    serve = verbs.add_parser("serve", help="serve a model over REST (MLflow scoring server)")
    serve.add_argument("usecase", help="a use case name (see `list`)")
    serve.add_argument("--model", metavar="REF", help="models:/<usecase>@<alias>, models:/<usecase>/<version>, runs:/<run>/model "
                       "or a models/<usecase>/<version> folder (default: models:/<usecase>@champion)")
    serve.add_argument("--operating-point", choices=OPERATING_POINTS, help=OPERATING_POINT_HELP)
    serve.add_argument("--port", type=int, default=5001, help="default 5001")
    serve.add_argument("--host", default="127.0.0.1",
                       help="default 127.0.0.1 (loopback only); anything else is reachable from other machines")
    serve.add_argument("--workers", type=int, help="server processes, each with its own copy of the model (default: one per core, up to 4)")
    serve.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB, metavar="MB",
                       help=f"answer a request body over MB megabytes with 413, unread (default {DEFAULT_MAX_BODY_MB:g})")
    serve.add_argument("--format", choices=EXPORT_FORMATS, default="savedmodel",
                       help="savedmodel (default), or the version's verified litert (int8) or onnx file, made by `export --format`")

    score = verbs.add_parser("score", help="score a backlog on Spark with a registered model (Parquet out)",
                             description="Score every image file under a folder (Spark's binaryFile source), or every row "
                             "of a CSV/Parquet table, with a registered model through mlflow.pyfunc.spark_udf; write "
                             "Parquet (path or row, probabilities, label, model_version, error).")
    score.add_argument("usecase", help="a use case name (see `list`)")
    score.add_argument("--input", required=True, metavar="DIR|FILE",
                       help="a folder of images, or a .csv/.parquet table (any path Spark reads)")
    score.add_argument("--output", required=True, metavar="OUT.parquet", help="where to write the scores (a Parquet folder, replaced)")
    score.add_argument("--model", metavar="REF", help="models:/<usecase>@<alias>, models:/<usecase>/<version> or runs:/<run>/model "
                       "(default: models:/<usecase>@champion)")
    score.add_argument("--master", default="local[2]", help="Spark master (default local[2]; spark://host:7077, yarn, k8s://...)")
    return parser


def resolve_spec(args):
    if getattr(args, "from_run", None):
        if args.overrides or args.data or args.data_dir:
            raise UsageError("--from-run re-runs the logged spec exactly: drop --set, --data and --data-dir")
        return spec_of_run(args.from_run, args.usecase)
    if not args.usecase:
        raise UsageError("name a use case (see `python -m pipelines list`), or --from-run RUN_ID")
    spec = get_spec(args.usecase)
    overrides = {}
    if getattr(args, "data", None):
        overrides["data.source"] = args.data
    if getattr(args, "data_dir", None):
        overrides["data.data_dir"] = args.data_dir
    spec = apply_overrides(spec, overrides)
    spec = apply_overrides(spec, args.overrides)
    if getattr(args, "no_export", False):
        spec = apply_overrides(spec, {"export.enabled": False})
    return spec


def cmd_list(names_only: bool = False) -> int:
    if names_only:
        print("\n".join(usecase_names()))
        return 0
    print("use cases (make train-<name>):")
    for spec in all_specs():
        shape = "x".join(str(s) for s in spec.input_shape)
        params = ", ".join(f"{k}={v}" for k, v in spec.model.params.items())
        print(f"  {spec.name:<10} {spec.title}")
        augmentation = ", ".join(spec.model.augmentation) or "none"
        views = ", ".join(spec.model.test_time_augmentation) or "none"
        print(f"  {'':<10} data: {spec.data.loader}, input {shape}, {spec.num_classes} classes; model: {spec.model.builder}({params})")
        print(f"  {'':<10} augmentation: {augmentation}; test-time views: {views}; "
              f"{spec.train.epochs} epochs, batch {spec.train.batch_size}")
    by_task: dict[str, list[str]] = {}
    for spec in all_specs():
        by_task.setdefault(spec.task, []).append(spec.name)
    for task in sorted({entry.task for entry in BUILDERS.values()}):
        usecases = ", ".join(by_task.get(task, ())) or "no use case yet"
        print(f"\nmodel builders for {usecases} (--set model.builder=NAME):")
        for name, entry in sorted(BUILDERS.items()):
            if entry.task == task:
                print(f"  {name:<12} {entry.summary}")
    print("\naugmentations (--set model.augmentation=a,b:strength):")
    print("  " + ", ".join(sorted(AUGMENTATIONS)))
    print("\ntest-time augmentation (--set model.test_time_augmentation=a,b; serving averages over 2**n views):")
    for name, summary in TRANSFORMS.items():
        print(f"  {name:<16} {summary}")
    return 0


def cmd_init(args) -> int:
    from pathlib import Path

    folder = Path(args.folder) if args.folder else None
    if args.images:
        if args.target or args.positive:
            raise UsageError("--target and --positive go with --table FILE.csv, not --images")
        init_images(args.name, args.images, folder)
        return 0
    if not args.target:
        raise UsageError("init --table FILE.csv needs --target COLUMN: the column to predict")
    write_usecase_file(args.name, table_usecase_text(args.name, args.table, args.target, args.positive), folder)
    return 0


def run(args) -> int:
    if args.verb == "init":
        return cmd_init(args)
    if getattr(args, "usecase", None):
        args.usecase = name_of(args.usecase)  # a use-case file's path works wherever a name does
    if args.verb == "list":
        return cmd_list(args.names)
    if args.verb == "serve":
        serve(args.usecase, args.model, port=args.port, host=args.host, operating_point=args.operating_point, fmt=args.format,
              max_body_mb=args.max_body_mb, **({"workers": args.workers} if args.workers else {}))
        return 0  # not reached: serve() replaces this process with the server
    if args.verb == "promote":
        folder = promote(get_spec(args.usecase), args.version, args.reason)
        print(f"[{args.usecase}] champion: registered version {args.version} ({folder})")
        return 0
    if args.verb == "predict" and args.model and args.model.endswith(DEVICE_SUFFIXES):
        get_spec(args.usecase)
        # No TensorFlow on this path: what a device runs (pipelines.serving.device_predict).

        predictions = classify_files(args.model, args.files, operating_point=args.operating_point, usecase=args.usecase)
        return 1 if print_predictions(predictions, as_json=args.json, model_dir=args.model) else 0
    if args.verb == "predict":
        spec = get_spec(args.usecase)  # validates the name
        model_dir = resolve_model_dir(args.usecase, args.model)
        if not args.model:
            print(f"[{args.usecase}] model: {model_dir} (the champion)", file=sys.stderr)
        metadata = read_metadata(model_dir)
        if "columns" in metadata:  # the model takes named table columns, not images

            check_point(args.operating_point, metadata, str(model_dir))
            failed = sum(print_table_predictions(predict_csv(model_dir, name), metadata, args.json) for name in args.files)
        else:
            failed = print_predictions(predict_files(model_dir, args.files, operating_point=args.operating_point),
                                       as_json=args.json, model_dir=model_dir)
        return 1 if failed else 0

    if args.verb == "score":
        get_spec(args.usecase)  # validates the name
        configure_environment()
        result = run_score(args.usecase, args.input, args.output, model=args.model, master=args.master)
        return 1 if result["refused"] and not result["scored"] else 0

    if args.verb == "compare":
        run_compare(args.usecases, metric=args.metric, last=args.last, out_dir=args.out, log=args.log)
        return 0

    spec = resolve_spec(args)
    if args.verb == "show":
        # As the task runs it: e.g. skin's input_shape follows data.image_size, views=3 serves
        # (32, 32, 9), cv_folds ranks by the CV mean.
        print(json.dumps(get_task(spec.task).prepare(spec).to_dict(), indent=2, default=str))
        return 0

    configure_environment()

    if args.verb == "train" and args.from_run:
        pipeline.run_train(spec, run_name=args.run_name, tags={"rerun_of": args.from_run},
                           expected_data_sha256=None if args.allow_other_data else logged_data_sha256(args.from_run))
    elif args.verb == "train":
        pipeline.run_train(spec, run_name=args.run_name)
    elif args.verb == "evaluate":
        pipeline.run_evaluate(spec, model_dir=args.model, out_dir=args.out, operating_point=args.operating_point)
    elif args.verb == "export" and args.format == "savedmodel":
        if args.model or args.data or args.data_dir:
            raise UsageError("--model, --data and --data-dir go with --format litert or onnx; --format savedmodel exports a --checkpoint")
        pipeline.run_export(spec, checkpoint=args.checkpoint)
    elif args.verb == "export":
        if args.checkpoint:
            raise UsageError(f"--format {args.format} converts a published version (--model REF), not a --checkpoint")
        pipeline.run_export_formats(spec, (args.format,), model=args.model, data_given=bool(args.data or args.data_dir))
    elif args.verb == "sweep":
        run_sweep(spec, args.grid, out_dir=args.out, study_name=args.study, storage_url=args.storage, heartbeat=args.heartbeat,
                  timeout=args.timeout)
    elif args.verb == "tune":
        run_tune(spec, args.space, args.trials, study_name=args.study, storage_url=args.storage, sampler=args.sampler,
                 pruner=args.pruner, seed=args.seed, timeout=args.timeout, heartbeat=args.heartbeat, out_dir=args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    try:
        return run(args)
    except PipelineError as exc:
        # One line, whatever the user typed into a key or value.
        print("error: " + str(exc).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr)
        if getattr(exc, "leave_immediately", False):  # see pipelines.training.strategy.PeerLost
            import os

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last completed epoch", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`show digits | head`): nothing is wrong, and nothing more can be said.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush stays quiet too
        return 141  # what a shell reports for a process ended by SIGPIPE
    except OSError as exc:
        # The machine's fault, not the code's: a full disk, a folder that cannot be written.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc} (check free space and permissions, or point PIPELINES_MODELS_ROOT / "
              "PIPELINES_DATA_ROOT elsewhere)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
