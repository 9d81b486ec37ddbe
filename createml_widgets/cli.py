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
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from .errors import CreateMLError, ParameterError, SessionError

TASKS = {"image": "MLImageClassifier", "handpose": "MLHandPoseClassifier", "handaction": "MLHandActionClassifier"}
TASK_HELP = {"image": "image classifier (folders of photos)", "handpose": "hand pose classifier (photos of hands)",
             "handaction": "hand action classifier (video clips of hands)"}
# Each task's augmentation flags (ImageAugmentationOptions / VideoAugmentationOptions), lower case.
# Written out so that `--help` does not import MediaPipe; tests/test_cli.py checks them against the enums.
AUGMENTATIONS = {
    "image": ("crop", "rotation", "blur", "exposure", "noise", "flip"),
    "handpose": ("horizontally_flip", "rotate", "scale", "translate"),
    "handaction": ("drop_frames", "horizontally_flip", "interpolate_frames", "rotate", "scale", "translate"),
}
ITERATIONS_KEY = {"image": "max_iterations", "handpose": "maximum_iterations", "handaction": "maximum_iterations"}
MEDIA_COLUMN = {"handpose": "image", "handaction": "video"}
# ModelParameters fields (as ParameterError names them) -> the option that sets them.
PARAMETER_FLAGS = {"max_iterations": "--iterations", "maximum_iterations": "--iterations", "batch_size": "--batch-size",
                   "prediction_window_size": "--window", "target_frame_rate": "--frame-rate",
                   "FeatureExtractorType.scene_print": "--revision", "MLSplitStrategy.fixed(seed)": "--seed"}


class CommandLineError(CreateMLError):
    """A command-line value that cannot be used (reported as `error: ...`, exit status 2)."""


def _task(name: str):
    import createml_widgets

    return getattr(createml_widgets, TASKS[name])


def _absolute(path) -> Path:
    """`path` made absolute (symlinks kept), so a session still finds its data from another folder."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


# -- argument types (argparse turns their errors into a usage message and exit status 2) --------------
def _validation_type(text: str):
    value = text.strip().lower()
    if value in ("auto", "automatic", "none"):
        return "none" if value == "none" else "auto"
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, none or a fraction such as 0.2") from None
    if not 0.0 < ratio < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: the held-out fraction must be more than 0 and less than 1")
    return ratio


def _mlp_type(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of layer sizes such as 128,64") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every layer size must be a positive int")
    return sizes


def _augment_type(task: str):
    names = AUGMENTATIONS[task]

    def parse(text: str) -> tuple[str, ...]:
        chosen = []
        for part in text.split(","):
            name = part.strip().lower().replace("-", "_")
            if name not in names:
                raise argparse.ArgumentTypeError(f"unknown {task} augmentation {part.strip()!r}; "
                                                 f"choose from {', '.join(names)}")
            chosen.append(name)
        return tuple(dict.fromkeys(chosen))

    parse.__name__ = "augmentation list"
    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


# -- data and parameters ------------------------------------------------------------------------------
def _annotation_columns(args) -> tuple[str | None, str | None]:
    """--start-column/--end-column, else the file's own `start`/`end` columns when it has them."""
    start, end = args.start_column, args.end_column
    if start is None and end is None:
        from .data.annotations import read_annotation_file

        columns = set(read_annotation_file(args.annotation).columns)
        start = "start" if "start" in columns else None
        end = "end" if "end" in columns else None
    return start, end


def _data_source(task_name: str, task, path: str, args):
    p = _absolute(path)
    annotation = getattr(args, "annotation", None)
    if annotation:
        annotation = _absolute(annotation)
        if not annotation.is_file():
            raise CommandLineError(f"--annotation {annotation}: the file does not exist")
        media = args.media_column or MEDIA_COLUMN[task_name]
        if task_name == "handaction":
            start, end = _annotation_columns(args)
            return task.DataSource.directory_with_videos_and_annotation(
                p, annotation, media, args.label_column, start_time_column=start, end_time_column=end)
        return task.DataSource.directory_with_images_and_annotation(p, annotation, media, args.label_column)
    if p.is_dir() and any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir()):
        return task.DataSource.labeled_directories(p)
    return task.DataSource.labeled_files(p)


def _parameters(task_name: str, task, args):
    from createml_widgets import MLSplitStrategy, ValidationData

    kw = {}
    if args.validation == "none":
        kw["validation"] = ValidationData.none()
    elif args.validation != "auto":
        kw["validation"] = ValidationData.split(MLSplitStrategy.fixed(args.validation, seed=args.seed))
    if args.augment:
        flags = task.ImageAugmentationOptions if task_name != "handaction" else task.VideoAugmentationOptions
        value = flags(0)
        for name in args.augment:
            value |= flags[name.upper()]
        kw["augmentation" if task_name == "image" else "augmentation_options"] = value
    if args.iterations is not None:
        kw[ITERATIONS_KEY[task_name]] = args.iterations
    if task_name == "image":
        fe = task.FeatureExtractorType.scene_print(args.revision)
        clf = task.ClassifierType.logistic_regressor()
        if args.mlp:
            clf = task.ClassifierType.multilayer_perceptron(list(args.mlp))
        kw["algorithm"] = task.ModelAlgorithmType.transfer_learning(fe, clf)
    else:
        if args.batch_size is not None:
            kw["batch_size"] = args.batch_size
        if task_name == "handaction":
            if args.window is not None:
                kw["prediction_window_size"] = args.window
            if args.frame_rate is not None:
                kw["target_frame_rate"] = args.frame_rate
    params = task.ModelParameters(**kw)
    try:
        params.validate()  # before anything is written
    except ParameterError as err:
        flag = next((f for name, f in PARAMETER_FLAGS.items() if err.name.startswith(name)), None)
        if flag is None:
            raise
        raise CommandLineError(f"{flag} {getattr(args, flag[2:].replace('-', '_'), '')}: {err}") from None
    return params


def _check_out(out: Path) -> None:
    """Fail now, not after training, when the model cannot be written to `out`."""
    from .export import format_for_path

    if out.suffix.lower() != ".onnx":
        format_for_path(out)  # ValueError naming the file when the suffix is not .mlmodel, .mlpackage or .onnx
    if out.suffix.lower() in (".mlmodel", ".onnx") and out.is_dir():
        raise CommandLineError(f"--out {out}: a folder of that name is in the way of the model file")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandLineError(f"--out {out}: its folder {parent} cannot be created ({err.strerror or err})") from err
    try:
        fd, probe = tempfile.mkstemp(prefix=".cmlw-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CommandLineError(f"--out {out}: its folder {parent} is not writable ({err.strerror or err})") from err


def _jsonable(value):
    return json.loads(json.dumps(value))


def _session_differences(task_name: str, task, stored: dict, data, params, root: Path) -> list[str]:
    """What differs between a stored session and this command (the iteration count may differ)."""
    diffs = []
    old_data = _jsonable(stored.get("training_data", {}))
    new_data = _jsonable(data.to_dict(root))
    for d in (old_data, new_data):
        for key in ("value", "path", "annotation_file"):
            if isinstance(d.get(key), str):
                d[key] = str(_absolute(d[key]))
    if old_data != new_data:
        try:
            old = repr(task.DataSource.from_dict(old_data, root))
        except Exception:  # noqa: BLE001 - only for the message
            old = json.dumps(old_data)
        diffs.append(f"its training data is {old}, not {data!r}")
    old_params = dict(stored.get("parameters", {}))
    new_params = _jsonable(params.to_dict(root))
    for key in sorted(set(old_params) | set(new_params)):
        if key != ITERATIONS_KEY[task_name] and old_params.get(key) != new_params.get(key):
            diffs.append(f"its {key} is {json.dumps(old_params.get(key))}, not {json.dumps(new_params.get(key))}")
    return diffs


def _open_session(task_name: str, task, data, params, sp, args):
    """A new session, or the one in the session folder when it was started with this data and these options."""
    from .session import MANIFEST_FILE, SESSION_FILE, read_session_file, remove_session_directory

    root = sp.directory
    path = root / SESSION_FILE
    if args.restart and (path.exists() or (root / MANIFEST_FILE).exists()):
        remove_session_directory(root, keep_folder=True)
        print(f"discarded the training session in {root} (--restart)", file=sys.stderr)
    elif path.exists():
        stored = read_session_file(path)
        if stored.get("task") != task.__name__:
            raise SessionError(f"{root} holds a {stored.get('task')} session, not a {task.__name__} session; "
                               "pick another --out or --session, or pass --restart to discard it")
        try:
            diffs = _session_differences(task_name, task, stored, data, params, root)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise SessionError(f"the session file {path} is damaged ({type(err).__name__}: {err}); pass --restart "
                               "to discard that session") from err
        if diffs:
            started = bool(stored.get("checkpoints")) or stored.get("phase") not in (None, "initialized")
            if started:
                raise SessionError(f"{root} holds a session started differently ({'; '.join(diffs)}): run the "
                                   "same command to continue it, pass --restart to discard it, or pick another "
                                   "--out or --session")
            remove_session_directory(root, keep_folder=True)  # it never got past setup: nothing to lose
            print(f"starting afresh: the session in {root} never got past setup and "
                  f"{'; '.join(diffs)}", file=sys.stderr)
        else:
            session = task.restore_training_session(sp)
            if args.iterations is not None:
                setattr(session.model_parameters, ITERATIONS_KEY[task_name], args.iterations)
            print(f"continuing the training session in {root} (from {session.phase.value} {session.iteration})",
                  file=sys.stderr)
            return session
    return task.make_training_session(data, params, sp)


# -- running ------------------------------------------------------------------------------------------
PHASE_NAMES = {"extractingFeatures": "Extracting features", "training": "Training", "evaluating": "Evaluating"}


METRIC_TITLES = {"loss": "Training loss", "accuracy": "Training accuracy", "validation_loss": "Validation loss",
                 "validation_accuracy": "Validation accuracy"}


class IterationTable:
    """Training progress as Create ML's and Turi Create's logs show it: one row per iteration (every
    `step`-th of a long run, and the last), fixed-width columns, on stderr."""

    def __init__(self, total: int | None, out=None):
        self.total, self.out = total, out or sys.stderr
        self.step = 1 if not total or total <= 30 else -(-total // 20)
        self.keys: list[str] | None = None
        self.start = time.monotonic()

    def _line(self, cells) -> str:
        return "| " + " | ".join(f"{c:>{w}}" for c, w in cells) + " |"

    def row(self, iteration: int, metrics: dict) -> None:
        if self.keys is None:
            self.keys = [k for k in METRIC_TITLES if k in metrics] + [k for k in metrics if k not in METRIC_TITLES]
            head = [("Iteration", 9), ("Elapsed", 8)] + [(METRIC_TITLES.get(k, k), max(10, len(METRIC_TITLES.get(k, k))))
                                                        for k in self.keys]
            rule = "+" + "+".join("-" * (w + 2) for _t, w in head) + "+"
            self.widths = [w for _t, w in head]
            self.rule = rule
            print(rule, self._line(head), rule, sep="\n", file=self.out, flush=True)
        last = self.total is not None and iteration >= self.total
        if iteration % self.step and iteration != 1 and not last:
            return
        cells = [str(iteration), f"{time.monotonic() - self.start:.1f}s"]
        for k in self.keys:
            v = metrics.get(k)
            cells.append("" if v is None else f"{v:.2%}" if "accuracy" in k else f"{v:.4f}")
        print(self._line(zip(cells, self.widths)), file=self.out, flush=True)

    def close(self) -> None:
        if self.keys is not None:
            print(self.rule, file=self.out, flush=True)


def _run(task, session):
    """Run (or continue) `session` here: extraction as a count (one line, redrawn, on a terminal), then
    an iteration table; on stderr."""
    from .session import MLJob, MLPhase

    job = MLJob(session)
    tty = sys.stderr.isatty()
    last = {"phase": None, "time": 0.0, "table": None, "start": time.monotonic(), "open": False}

    def end_line():
        if last["open"]:
            print(file=sys.stderr, flush=True)
            last["open"] = False

    def show(progress) -> None:
        now = time.monotonic()
        total = progress.total_item_count
        done = total is not None and progress.item_count >= total
        if progress.phase != last["phase"]:
            end_line()
            if last["table"] is not None:
                last["table"].close()
                last["table"] = None
            last["start"] = now
        name = PHASE_NAMES.get(progress.phase.value, progress.phase.value)
        if progress.phase == MLPhase.TRAINING and progress.metrics:
            if last["table"] is None:
                last["table"] = IterationTable(total)
            last["table"].row(progress.item_count, dict(progress.metrics))
            if done:
                last["table"].close()
                last["table"] = None
                print(f"{name}: {progress.item_count}/{total} iterations in {now - last['start']:.1f} s",
                      file=sys.stderr, flush=True)
            last.update(phase=progress.phase, time=now)
            return
        if progress.phase == last["phase"] and not done and now - last["time"] < (0.25 if tty else 1.0):
            return
        last.update(phase=progress.phase, time=now)
        count = f"{progress.item_count}/{total}" if total is not None else f"{progress.item_count}"
        percent = f" ({progress.item_count / total:.0%})" if total else ""
        text = f"{name}: {count}{percent} · {now - last['start']:.0f} s"
        if tty:  # one line, redrawn in place; ended when the phase is done
            print(f"\r{text}\033[K", end="" if not done else "\n", file=sys.stderr, flush=True)
            last["open"] = not done
        else:
            print(text, file=sys.stderr, flush=True)

    job.on_progress(show)
    try:
        job._start(background=False)
        return job.result()
    finally:
        end_line()
        if last["table"] is not None:
            last["table"].close()


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


def cmd_train(args) -> int:
    from createml_widgets import MLModelMetadata, MLTrainingSessionParameters

    # Everything that can be checked is checked before any file is written or any feature extracted.
    task = _task(args.task)
    params = _parameters(args.task, task, args)
    out = _absolute(args.out)
    session_dir = _absolute(args.session) if args.session else out.with_suffix(".session")
    sp = MLTrainingSessionParameters(session_directory=session_dir, report_interval=1,
                                     checkpoint_interval=args.checkpoint_interval)
    sp.validate()
    _check_out(out)
    data = _data_source(args.task, task, args.data, args)
    from .session import prepare_session_directory, remove_session_directory, session_lock
    from .tasks._base import check_session_outside_data

    check_session_outside_data(data, session_dir)  # before the folder is made
    prepare_session_directory(session_dir)
    with session_lock(session_dir):  # a second train on the same session folder is refused
        session = _open_session(args.task, task, data, params, sp, args)
        # the session's bound on iterations is what was asked (Create ML's default of 1000 would cap it)
        session.parameters.iterations = max(1, int(getattr(session.model_parameters, ITERATIONS_KEY[args.task])))
        started = time.monotonic()
        try:
            model = _run(task, session)
        except (CreateMLError, OSError, ValueError):
            if session.phase.value == "initialized" and not session.checkpoints and not session.features.features:
                # refused before any work (e.g. unusable data): leave no session behind
                with contextlib.suppress(CreateMLError, OSError):
                    remove_session_directory(session_dir, keep_others=True)
            raise
        trained_s = time.monotonic() - started
    print(model)
    meta = MLModelMetadata(author=args.author) if args.author else MLModelMetadata()
    print(f"writing {out.name} (Core ML)…", file=sys.stderr, flush=True)
    t = time.monotonic()
    path = model.write(out, meta)
    print(f"wrote {path}")
    print(_written_summary(Path(path), trained_s, time.monotonic() - t))
    return 0


def _written_summary(path: Path, trained_s: float, written_s: float) -> str:
    """"  13.4 MB · input image (224×224 image) · outputs classLabelProbs, classLabel · trained in 12.0 s, written
    in 2.1 s"."""
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    parts = [f"{size / 1e6:.1f} MB"]
    try:
        from .export.spec_eval import _proto

        spec = _load_spec(path, _proto()[0])
        parts.append("input " + ", ".join(_feature_text(f) for f in spec.description.input))
        parts.append("outputs " + ", ".join(f.name for f in spec.description.output))
    except Exception:  # noqa: BLE001 - the interface is a nicety of the summary
        pass
    parts.append(f"trained in {trained_s:.1f} s, written in {written_s:.1f} s")
    return "  " + " · ".join(parts)


def _load_spec(path: Path, proto):
    spec_file = path / "Data" / "com.apple.CoreML" / "model.mlmodel" if path.is_dir() else path
    spec = proto.Model()
    spec.ParseFromString(spec_file.read_bytes())
    return spec


def _feature_text(feature) -> str:
    kind = feature.type.WhichOneof("Type")
    if kind == "imageType":
        return f"{feature.name} ({feature.type.imageType.width}×{feature.type.imageType.height} image)"
    if kind == "multiArrayType":
        return f"{feature.name} ({'×'.join(str(d) for d in feature.type.multiArrayType.shape)} array)"
    return feature.name


def cmd_evaluate(args) -> int:
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


def cmd_predict(args) -> int:
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
def _add_annotation_options(p, task: str) -> None:
    media = MEDIA_COLUMN[task]
    what = "videos" if task == "handaction" else "images"
    p.add_argument("--annotation", metavar="FILE",
                   help=f"CSV or JSON annotation file listing the {what} in DATA with their labels")
    p.add_argument(f"--{media}-column", dest="media_column", metavar="NAME",
                   help=f"annotation column of the file names (default: {media})")
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="annotation column of the labels (default: label)")
    if task == "handaction":
        p.add_argument("--start-column", metavar="NAME",
                       help="annotation column of start times (default: 'start' when the file has it)")
        p.add_argument("--end-column", metavar="NAME",
                       help="annotation column of end times (default: 'end' when the file has it)")


def _add_train_parser(tasks, task: str) -> None:
    t = tasks.add_parser(task, help=TASK_HELP[task], description=f"Train a {TASK_HELP[task]} and write it as Core ML.")
    what = {"image": "photos", "handpose": "photos of hands", "handaction": "video clips"}[task]
    t.add_argument("data", metavar="DATA",
                   help=f"a folder of {what}: one subfolder per label, labelled file names (Label.1.ext)"
                        + (", or the folder --annotation lists" if task != "image" else ""))
    t.add_argument("--out", required=True, help="the model to write: .mlmodel (neural network), .mlpackage "
                                                "(ML program) or .onnx (ONNX); checked before training")
    t.add_argument("--session", help="session folder (default: OUT with the suffix .session); running the same "
                                     "command again continues it")
    t.add_argument("--restart", action="store_true", help="discard the session in the session folder and start over")
    if task != "image":
        _add_annotation_options(t, task)
    t.add_argument("--iterations", type=int, help="maximum training iterations (default: 25 for images, 80 for "
                                                  "the hand tasks); on a finished session, trains further")
    t.add_argument("--validation", type=_validation_type, default="auto", metavar="{auto,none,FRACTION}",
                   help="validation data: auto (Create ML's split), none, or a held-out fraction such as 0.2")
    t.add_argument("--seed", type=int, default=0, help="seed of the --validation FRACTION split (default: 0)")
    t.add_argument("--augment", type=_augment_type(task), metavar="LIST",
                   help=f"comma-separated augmentations: {', '.join(AUGMENTATIONS[task])}")
    if task == "image":
        t.add_argument("--revision", type=int, default=1, help="scene_print feature extractor revision (default: 1)")
        t.add_argument("--mlp", type=_mlp_type, metavar="SIZES",
                       help="a multilayer perceptron with these hidden sizes, e.g. 128,64 (default: logistic "
                            "regression)")
    else:
        t.add_argument("--batch-size", type=int, help="training batch size (default: 32)")
    if task == "handaction":
        t.add_argument("--window", type=int, help="prediction window size in frames (default: 60)")
        t.add_argument("--frame-rate", type=float, help="target frame rate of the keypoints (default: 30)")
    t.add_argument("--checkpoint-interval", type=int, default=10,
                   help="save a checkpoint every N iterations (default: 10)")
    t.add_argument("--author", help="author in the model's metadata")
    t.set_defaults(func=cmd_train, task=task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m createml_widgets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model and write it as Core ML",
                           description="Train a model and write it as Core ML; `train TASK -h` lists its options.")
    train_tasks = train.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for task in TASKS:
        _add_train_parser(train_tasks, task)

    evaluate = sub.add_parser("evaluate", help="metrics of a trained session on labelled data")
    evaluate_tasks = evaluate.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for task in TASKS:
        e = evaluate_tasks.add_parser(task, help=TASK_HELP[task])
        e.add_argument("data", metavar="DATA", help="labelled data, laid out as for train")
        e.add_argument("--session", required=True, help="the session folder train wrote")
        if task != "image":
            _add_annotation_options(e, task)
        e.set_defaults(func=cmd_evaluate, task=task)

    predict = sub.add_parser("predict", help="predict files with a trained session or a written model file")
    predict_tasks = predict.add_subparsers(dest="task_name", required=True, metavar="TASK")
    for task in TASKS:
        p = predict_tasks.add_parser(task, help=TASK_HELP[task])
        p.add_argument("files", nargs="+", metavar="FILE")
        p.add_argument("--session", help="the session folder train wrote")
        p.add_argument("--model", help="the .mlmodel (or .mlpackage) train wrote: run by its own spec, no session "
                                       "or training data needed (image and handpose)")
        p.add_argument("--top", type=_positive_int, default=3, help="labels to list per prediction (default: 3)")
        p.add_argument("--json", action="store_true", help="one JSON object per file, for machines")
        p.set_defaults(func=cmd_predict, task=task)
    return parser


def _one_line(err) -> str:
    text = " ".join(_printable(str(err)).split())
    return text or type(err).__name__


def _printable(text: str) -> str:
    """`text` as any output stream can print it: bytes of a file name that is not UTF-8 (which Python keeps as
    lone surrogates) are written as \\xNN escapes instead of failing on a strict UTF-8 stdout."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decoding made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def main(argv=None) -> int:
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
