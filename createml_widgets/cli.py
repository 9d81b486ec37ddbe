"""The command line: train, evaluate and predict with any of the three tasks.

    python -m createml_widgets train image photos/ --out Classifier.mlmodel
    python -m createml_widgets evaluate image --session Classifier.session test_photos/
    python -m createml_widgets predict image --session Classifier.session a.jpg b.jpg
    python -m createml_widgets predict image --model Classifier.mlmodel a.jpg   # the written file itself

`train TASK -h` lists each task's own options. Training keeps its work in a session folder
(OUT with the suffix .session): running the same command again continues it (add `--iterations N`
to train further); other data or options are refused unless `--restart` discards the session.
Progress goes to stderr (an iteration table while training), results to stdout (`predict`: a table,
or one JSON object per file with `--json`).

Exit status: 0 done; 1 evaluation or some predictions failed; 2 bad input (a one-line `error:`
message on stderr names the file or parameter); 130 interrupted (the session keeps its work).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .cli_train import (  # noqa: F401 - _data_source and _parameters are this module's names too
    CommandLineError,
    _absolute,
    _data_source,
    _feature_text,
    _load_spec,
    _one_line,
    _parameters,
    _positive_int,
    _printable,
    _task,
    add_annotation_options,
    add_train_parser,
)
from .errors import CreateMLError, SessionError
from .tasks import registry

# The command line's TASK names -> the task classes (tasks/registry.py declares them).
TASKS = {d.command: d.class_name for d in registry.TASKS.values()}


def _load(task, session_dir: str):
    from createml_widgets import MLTrainingSessionParameters

    session = task.restore_training_session(MLTrainingSessionParameters(session_directory=_absolute(session_dir)))
    checkpoints = sorted((c for c in session.checkpoints if c.phase.value == "training"), key=lambda c: -c.iteration)
    if not checkpoints:
        raise SessionError(f"{session_dir} has no training checkpoint yet; train or resume it first")
    damaged = []
    for checkpoint in checkpoints:  # a damaged latest checkpoint: the previous good one, with a warning
        try:
            model = task.from_checkpoint(checkpoint)
        except SessionError as err:
            damaged.append(err)
            continue
        if damaged:
            print(f"warning: {_one_line(damaged[0])} — using the checkpoint of iteration {checkpoint.iteration}",
                  file=sys.stderr)
        return model
    raise damaged[0]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`evaluate TASK DATA --session S`: print the session's model's metrics on DATA; 1 when they are invalid."""
    task = _task(args.task)
    model = _load(task, args.session)
    metrics = model.evaluation(on=_data_source(args.task, task, args.data, args))
    if not metrics.is_valid:
        print(f"error: cannot evaluate on {args.data}: {_one_line(metrics.error)}", file=sys.stderr)
        return 1
    print(metrics)
    return 0


def _model_file_predictor(task_name: str, path: str):
    """f(file) -> [(label, probability), ...] from a written .mlmodel/.mlpackage, run by its own spec in
    numpy (export.spec_eval): no session, no training data, no macOS needed."""
    from .export import spec_eval

    model_path = _absolute(path)
    if not model_path.exists():
        raise CommandLineError(f"--model {path}: no such file; give the .mlmodel (or .mlpackage) train wrote")
    if task_name == "handaction":
        raise CommandLineError(f"--model {path}: hand action predictions from a model file are not supported yet; "
                               "use --session with the session folder train wrote")
    try:
        spec = _load_spec(model_path, spec_eval._proto()[0])
        runner = spec_eval.load(model_path)
    except Exception as err:  # noqa: BLE001 - a file that is not a Core ML model
        raise CommandLineError(f"--model {path}: not a Core ML model this can read ({_one_line(err)})") from err
    inp = spec.description.input[0]
    probs_name = spec.description.predictedProbabilitiesName or next(
        (o.name for o in spec.description.output if o.type.WhichOneof("Type") == "dictionaryType"), None)
    if task_name == "image":
        if inp.type.WhichOneof("Type") != "imageType":
            raise CommandLineError(f"--model {path}: its input {inp.name!r} is not an image: is it an image classifier?")
        width, height = inp.type.imageType.width, inp.type.imageType.height

        def predict(f):
            from .features.image_io import load_image

            image = load_image(f).convert("RGB").resize((width, height))
            return runner.predict({inp.name: image})[probs_name]
    else:
        if inp.type.WhichOneof("Type") != "multiArrayType":
            raise CommandLineError(f"--model {path}: its input {inp.name!r} is not hand keypoints: "
                                   "is it a hand pose classifier?")
        from .features.hand_keypoints import HandKeypointDetector

        detector = HandKeypointDetector(video=False)

        def predict(f):
            hand = detector.require(f, name=f)
            return runner.predict({inp.name: hand.keypoints.astype("float32")})[probs_name]

    def ranked(f):
        probs = predict(f)
        return sorted(((str(k), float(v)) for k, v in probs.items()), key=lambda kv: -kv[1])

    return ranked


def _print_prediction_row(line: dict, width: int) -> None:
    if "error" in line:
        print(f"{line['file']:<{width}}  error: {line['error']}")
        return
    if line["prediction"] and isinstance(line["prediction"][0], dict):  # hand action: its windows
        first = line["prediction"]
        print(f"{line['file']:<{width}}  {line['label']}  ({len(first)} window{'s' if len(first) != 1 else ''}: "
              + ", ".join(f"{w['frames'][0]}–{w['frames'][1]} {w['results'][0][0]} {w['results'][0][1]:.0%}"
                          for w in first[:6]) + (" …" if len(first) > 6 else "") + ")")
        return
    ranked = line["prediction"]
    rest = "   ".join(f"{label} {p:.1%}" for label, p in ranked[1:])
    print(f"{line['file']:<{width}}  {ranked[0][0]:<12} {ranked[0][1]:>6.1%}   {rest}")


def cmd_predict(args: argparse.Namespace) -> int:
    """`predict TASK FILE... (--session S | --model M)`: print each file's top labels; 1 when any file failed."""
    task = _task(args.task)
    if bool(args.session) == bool(args.model):
        raise CommandLineError("give the trained model: --session SESSION_FOLDER or --model FILE.mlmodel (one of them)")
    from_file = _model_file_predictor(args.task, args.model) if args.model else None
    model = _load(task, args.session) if args.session else None
    failed = 0
    width = max(len(_printable(f)) for f in args.files)
    if not args.json:
        print(f"{'file':<{width}}  {'label':<12} {'conf.':>6}   others")
    for f in args.files:
        name = _printable(f)  # a file name that is not UTF-8 still prints (and names the file)
        try:
            if from_file is not None:
                ranked = from_file(f)
                line = {"file": name, "label": ranked[0][0], "prediction": ranked[: args.top]}
            elif args.task == "image":
                probs = model.prediction_probabilities(f)
                ranked = sorted(probs.items(), key=lambda kv: -kv[1])
                line = {"file": name, "label": ranked[0][0], "prediction": ranked[: args.top]}
            elif args.task == "handpose":
                ranked = model.prediction(f)
                line = {"file": name, "label": ranked[0][0], "prediction": ranked[: args.top]}
            else:
                windows = model.prediction(f)
                line = {"file": name, "label": model.clip_prediction(windows)[0][0],
                        "prediction": [{"frames": [w.frame_range.start, w.frame_range.stop],
                                        "results": w.results[: args.top]} for w in windows]}
        except (CreateMLError, OSError, ValueError) as err:
            failed += 1
            print(f"error: {name}: {_one_line(err)}", file=sys.stderr)
            line = {"file": name, "error": _one_line(err)}
        if args.json:
            print(json.dumps(line, ensure_ascii=False), flush=True)
        else:
            _print_prediction_row(line, width)
    return 1 if failed else 0


# -- the parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: `train`, `evaluate` and `predict`, each with a sub-command per task."""
    parser = argparse.ArgumentParser(prog="python -m createml_widgets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model and write it as Core ML",
                           description="Train a model and write it as Core ML; `train TASK -h` lists its options.")
    train_tasks = train.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for task in TASKS:
        add_train_parser(train_tasks, task)

    evaluate = sub.add_parser("evaluate", help="metrics of a trained session on labelled data")
    evaluate_tasks = evaluate.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for task in TASKS:
        e = evaluate_tasks.add_parser(task, help=registry.declaration(task).summary)
        e.add_argument("data", metavar="DATA", help="labelled data, laid out as for train")
        e.add_argument("--session", required=True, help="the session folder train wrote")
        if task != "image":
            add_annotation_options(e, task)
        e.set_defaults(func=cmd_evaluate, task=task)

    predict = sub.add_parser("predict", help="predict files with a trained session or a written model file")
    predict_tasks = predict.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for task in TASKS:
        p = predict_tasks.add_parser(task, help=registry.declaration(task).summary)
        p.add_argument("files", nargs="+", metavar="FILE")
        p.add_argument("--session", help="the session folder train wrote")
        p.add_argument("--model", help="the .mlmodel (or .mlpackage) train wrote: run by its own spec, no session "
                                       "or training data needed (image and handpose)")
        p.add_argument("--top", type=_positive_int, default=3, help="labels to list per prediction (default: 3)")
        p.add_argument("--json", action="store_true", help="one JSON object per file, for machines")
        p.set_defaults(func=cmd_predict, task=task)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (`argv`: the arguments, default sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: the session keeps its work; run the same command again to continue", file=sys.stderr)
        return 130
    except (CreateMLError, OSError, ValueError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
