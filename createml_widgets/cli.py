"""The command line: train, evaluate and predict with any of the three tasks.

    python -m createml_widgets train image photos/ --out Classifier.mlmodel
    python -m createml_widgets evaluate image --session Classifier.session test_photos/
    python -m createml_widgets predict image --session Classifier.session a.jpg b.jpg
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

TASKS = {"image": "MLImageClassifier", "handpose": "MLHandPoseClassifier", "handaction": "MLHandActionClassifier"}


def _task(name: str):
    import createml_widgets

    return getattr(createml_widgets, TASKS[name])


def _data_source(task, path: str, annotation: str | None = None):
    p = Path(path)
    if annotation:
        if task.__name__ == "MLHandActionClassifier":
            return task.DataSource.directory_with_videos_and_annotation(p, annotation)
        if task.__name__ == "MLHandPoseClassifier":
            return task.DataSource.directory_with_images_and_annotation(p, annotation)
        raise SystemExit("--annotation is for the hand tasks")
    if p.is_dir() and any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir()):
        return task.DataSource.labeled_directories(p)
    return task.DataSource.labeled_files(p)


def _parameters(task, args):
    from createml_widgets import MLSplitStrategy, ValidationData

    kw = {}
    if args.validation == "none":
        kw["validation"] = ValidationData.none()
    elif args.validation not in (None, "auto", "automatic"):
        kw["validation"] = ValidationData.split(MLSplitStrategy.fixed(float(args.validation), seed=args.seed))
    if args.augment:
        flags = task.ImageAugmentationOptions if hasattr(task, "ImageAugmentationOptions") else task.VideoAugmentationOptions
        value = flags(0)
        for name in args.augment.split(","):
            try:
                value |= flags[name.strip().upper()]
            except KeyError:
                raise SystemExit(f"unknown augmentation {name!r}; choose from "
                                 f"{', '.join(f.name.lower() for f in flags)}") from None
        kw["augmentation" if task.__name__ == "MLImageClassifier" else "augmentation_options"] = value
    if task.__name__ == "MLImageClassifier":
        if args.iterations:
            kw["max_iterations"] = args.iterations
        fe = task.FeatureExtractorType.scene_print(args.revision)
        clf = task.ClassifierType.logistic_regressor()
        if args.mlp:
            clf = task.ClassifierType.multilayer_perceptron([int(x) for x in args.mlp.split(",")])
        kw["algorithm"] = task.ModelAlgorithmType.transfer_learning(fe, clf)
    else:
        if args.iterations:
            kw["maximum_iterations"] = args.iterations
        if args.batch_size:
            kw["batch_size"] = args.batch_size
        if task.__name__ == "MLHandActionClassifier":
            if args.window:
                kw["prediction_window_size"] = args.window
            if args.frame_rate:
                kw["target_frame_rate"] = args.frame_rate
    return task.ModelParameters(**kw)


def _load(task, session_dir: str):
    from createml_widgets import MLTrainingSessionParameters, SessionError

    session = task.restore_training_session(MLTrainingSessionParameters(session_directory=session_dir))
    checkpoint = session.latest_training_checkpoint()
    if checkpoint is None:
        raise SessionError(f"{session_dir} has no training checkpoint yet; train or resume it first")
    return task.from_checkpoint(checkpoint)


def cmd_train(args) -> int:
    from createml_widgets import MLModelMetadata, MLTrainingSessionParameters

    task = _task(args.task)
    data = _data_source(task, args.data, args.annotation)
    params = _parameters(task, args)
    out = Path(args.out)
    session_dir = Path(args.session) if args.session else out.with_suffix(".session")
    sp = MLTrainingSessionParameters(session_directory=session_dir, report_interval=1,
                                     checkpoint_interval=args.checkpoint_interval)
    if (session_dir / "session.json").exists():
        print(f"continuing the training session in {session_dir}", file=sys.stderr)
        session = task.restore_training_session(sp)
    else:
        session = task.make_training_session(data, params, sp)
    model = task._train_session_with_bar(session)
    print(model)
    meta = MLModelMetadata(author=args.author) if args.author else MLModelMetadata()
    path = model.write(out, meta)
    print(f"wrote {path}")
    return 0


def cmd_evaluate(args) -> int:
    task = _task(args.task)
    model = _load(task, args.session)
    metrics = model.evaluation(on=_data_source(task, args.data, args.annotation))
    print(metrics)
    return 0 if metrics.is_valid else 1


def cmd_predict(args) -> int:
    task = _task(args.task)
    model = _load(task, args.session)
    for f in args.files:
        if task.__name__ == "MLImageClassifier":
            probs = model.prediction_probabilities(f)
            result = sorted(probs.items(), key=lambda kv: -kv[1])[: args.top]
        elif task.__name__ == "MLHandPoseClassifier":
            result = model.prediction(f)[: args.top]
        else:
            result = [{"frames": [p.frame_range.start, p.frame_range.stop], "results": p.results[: args.top]}
                      for p in model.prediction(f)]
        print(json.dumps({"file": f, "prediction": result}, ensure_ascii=False))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m createml_widgets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and write it as Core ML")
    t.add_argument("task", choices=TASKS)
    t.add_argument("data", help="a folder with one subfolder per label (or labelled files)")
    t.add_argument("--out", required=True, help="output .mlmodel or .mlpackage")
    t.add_argument("--annotation", help="annotation file (CSV/JSON) for the hand tasks")
    t.add_argument("--session", help="session directory (default: OUT with .session); re-running resumes it")
    t.add_argument("--iterations", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--window", type=int, help="hand action prediction window size (frames)")
    t.add_argument("--frame-rate", type=float, help="hand action target frame rate")
    t.add_argument("--validation", default="auto", help="auto, none, or a held-out fraction such as 0.2")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--augment", help="comma-separated augmentations, e.g. crop,flip")
    t.add_argument("--revision", type=int, default=1, help="scene_print revision (image task)")
    t.add_argument("--mlp", help="multilayer perceptron hidden sizes, e.g. 128,64 (image task)")
    t.add_argument("--checkpoint-interval", type=int, default=10)
    t.add_argument("--author")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="metrics of a trained session on labelled data")
    e.add_argument("task", choices=TASKS)
    e.add_argument("data")
    e.add_argument("--session", required=True)
    e.add_argument("--annotation")
    e.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="predict files with a trained session")
    p.add_argument("task", choices=TASKS)
    p.add_argument("files", nargs="+")
    p.add_argument("--session", required=True)
    p.add_argument("--top", type=int, default=3)
    p.set_defaults(func=cmd_predict)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from createml_widgets.errors import CreateMLError

    try:
        return args.func(args)
    except CreateMLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
