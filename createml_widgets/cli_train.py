"""`train TASK`: its options (generated from the task's ModelParameters declarations, tasks/registry.py),
reading the data and parameters, opening the session folder, and the run with its iteration table."""
from __future__ import annotations

import argparse
import contextlib
import enum
import functools
import operator
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from .errors import CreateMLError, ParameterError, SessionError
from .tasks import registry
from .tasks.registry import declared_fields, field_default, iterations_field, number_text

# ParameterError names of values that are not ModelParameters fields themselves -> the option that sets them.
COMPOUND_FLAGS = {"FeatureExtractorType.scene_print": "--revision", "MLSplitStrategy.fixed(seed)": "--seed"}


class CommandLineError(CreateMLError):
    """A command-line value that cannot be used (reported as `error: ...`, exit status 2)."""


def _task(name: str):
    return registry.declaration(name).load()


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


def _augment_type(task: str, names: tuple[str, ...]):

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
        media = args.media_column or registry.declaration(task_name).media
        if task_name == "handaction":
            start, end = _annotation_columns(args)
            return task.DataSource.directory_with_videos_and_annotation(
                p, annotation, media, args.label_column, start_time_column=start, end_time_column=end)
        return task.DataSource.directory_with_images_and_annotation(p, annotation, media, args.label_column)
    if p.is_dir() and any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir()):
        return task.DataSource.labeled_directories(p)
    return task.DataSource.labeled_files(p)


def _option_dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _flag_names(flags: type) -> tuple[str, ...]:
    return tuple(member.name.lower() for member in flags)


def _parameters(task_name: str, task, args):
    """The task's ModelParameters from the options its fields declare (`cli` in their metadata)."""
    from createml_widgets import MLSplitStrategy, ValidationData

    kw = {}
    if args.validation == "none":
        kw["validation"] = ValidationData.none()
    elif args.validation != "auto":
        kw["validation"] = ValidationData.split(MLSplitStrategy.fixed(args.validation, seed=args.seed))
    flags_of_error = dict(COMPOUND_FLAGS)
    for f in declared_fields(task.ModelParameters):
        flag = f.metadata.get("cli")
        if not isinstance(flag, str):
            continue
        flags_of_error[f.name] = flag
        value = getattr(args, _option_dest(flag))
        if value is None:
            continue
        if isinstance(field_default(f), enum.Flag):
            flags = type(field_default(f))
            value = functools.reduce(operator.or_, (flags[name.upper()] for name in value), flags(0))
        kw[f.name] = value
    if task_name == "image":
        fe = task.FeatureExtractorType.scene_print(args.revision)
        clf = task.ClassifierType.logistic_regressor()
        if args.mlp:
            clf = task.ClassifierType.multilayer_perceptron(list(args.mlp))
        kw["algorithm"] = task.ModelAlgorithmType.transfer_learning(fe, clf)
    params = task.ModelParameters(**kw)
    try:
        params.validate()  # before anything is written
    except ParameterError as err:
        flag = next((f for name, f in flags_of_error.items() if err.name.startswith(name)), None)
        if flag is None:
            raise
        raise CommandLineError(f"{flag} {getattr(args, _option_dest(flag), '')}: {err}") from None
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


def _open_session(task, data, params, sp, args):
    """A new session, or the one in the session folder when it was started with this data and these options
    (the engine's open_training_session decides; this says what it did, in the command line's words)."""
    from .session_open import SessionMismatchError

    root = sp.directory
    try:
        opened = task.open_training_session(data, params, sp, restart=args.restart,
                                            keep_iterations=args.iterations is None)
    except SessionMismatchError as err:
        if err.stored_task != task.__name__:
            raise SessionError(f"{root} holds a {err.stored_task} session, not a {task.__name__} session; "
                               "pick another --out or --session, or pass --restart to discard it") from None
        raise SessionError(f"{root} holds a session started differently ({'; '.join(err.differences)}): run the "
                           "same command to continue it, pass --restart to discard it, or pick another "
                           "--out or --session") from None
    session = opened.session
    if opened.state == "restarted":
        print(f"discarded the training session in {root} (--restart)", file=sys.stderr)
    elif opened.state == "replaced":
        print(f"starting afresh: the session in {root} never got past setup and "
              f"{'; '.join(opened.differences)}", file=sys.stderr)
    elif opened.state == "continued":
        print(f"continuing the training session in {root} (from {session.phase.value} {session.iteration})",
              file=sys.stderr)
    return session


# -- running ------------------------------------------------------------------------------------------
METRIC_TITLES = {"loss": "Training loss", "accuracy": "Training accuracy", "validation_loss": "Validation loss",
                 "validation_accuracy": "Validation accuracy"}


class IterationTable:
    """Training progress as Create ML's and Turi Create's logs show it: one row per iteration (every
    `step`-th of a long run, and the last), fixed-width columns, on stderr."""

    def __init__(self, total: int | None, out: TextIO | None = None):
        self.total, self.out = total, out or sys.stderr
        self.step = 1 if not total or total <= 30 else -(-total // 20)
        self.keys: list[str] | None = None
        self.start = time.monotonic()

    def _line(self, cells) -> str:
        return "| " + " | ".join(f"{c:>{w}}" for c, w in cells) + " |"

    def row(self, iteration: int, metrics: dict) -> None:
        """Print the row of `iteration` (the header first, on the first call) unless it is one skipped."""
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
        """Print the closing rule (when a row was printed)."""
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
        name = progress.phase.title
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
        return job.run()
    finally:
        end_line()
        if last["table"] is not None:
            last["table"].close()


def cmd_train(args: argparse.Namespace) -> int:
    """`train TASK DATA --out MODEL`: check everything, train (or continue) the session, write the model."""
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
        session = _open_session(task, data, params, sp, args)
        # the session's bound on iterations is what was asked (Create ML's default of 1000 would cap it)
        session.parameters.iterations = max(1, int(getattr(session.model_parameters,
                                                           iterations_field(task.ModelParameters))))
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


def add_annotation_options(p: argparse.ArgumentParser, task: str) -> None:
    """The options that read DATA through an annotation file (--annotation and its column names) for `task`."""
    media = registry.declaration(task).media
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


def _add_parameter_options(t, task_name: str, task) -> None:
    """One option per ModelParameters field that declares one (`cli`): numbers with their declared range and
    default, augmentation flags as a list of their names."""
    for f in declared_fields(task.ModelParameters):
        flag, default = f.metadata.get("cli"), field_default(f)
        if not isinstance(flag, str):
            continue
        if isinstance(default, enum.Flag):
            names = _flag_names(type(default))
            t.add_argument(flag, type=_augment_type(task_name, names), metavar="LIST",
                           help=f"comma-separated augmentations: {', '.join(names)}")
        elif "range" in f.metadata:
            lo, hi = (number_text(v) for v in f.metadata["range"])
            unit = f" {f.metadata['unit']}" if f.metadata.get("unit") else ""
            t.add_argument(flag, type=float if isinstance(default, float) else int, metavar="N",
                           help=f"{f.metadata.get('hint', f.name)} ({lo} to {hi}{unit}; default: {number_text(default)})")


def add_train_parser(tasks: argparse._SubParsersAction, task_name: str) -> None:
    """The `train TASK` parser of `task_name`: DATA, --out, the session options and one per model parameter."""
    d = registry.declaration(task_name)
    task = d.load()  # no MediaPipe: a task module loads it only when it detects hands
    t = tasks.add_parser(task_name, help=d.summary, description=f"Train a {d.summary} and write it as Core ML.")
    t.add_argument("data", metavar="DATA",
                   help=f"a folder of {d.examples}: one subfolder per label, labelled file names (Label.1.ext)"
                        + (", or the folder --annotation lists" if d.key != "image" else ""))
    t.add_argument("--out", required=True, help="the model to write: .mlmodel (neural network), .mlpackage "
                                                "(ML program) or .onnx (ONNX); checked before training")
    t.add_argument("--session", help="session folder (default: OUT with the suffix .session); running the same "
                                     "command again continues it")
    t.add_argument("--restart", action="store_true", help="discard the session in the session folder and start over")
    if d.key != "image":
        add_annotation_options(t, task_name)
    t.add_argument("--validation", type=_validation_type, default="auto", metavar="{auto,none,FRACTION}",
                   help="validation data: auto (Create ML's split), none, or a held-out fraction such as 0.2")
    t.add_argument("--seed", type=int, default=0, help="seed of the --validation FRACTION split (default: 0)")
    _add_parameter_options(t, task_name, task)
    if d.key == "image":
        t.add_argument("--revision", type=int, default=1, help="scene_print feature extractor revision (default: 1)")
        t.add_argument("--mlp", type=_mlp_type, metavar="SIZES",
                       help="a multilayer perceptron with these hidden sizes, e.g. 128,64 (default: logistic "
                            "regression)")
    t.add_argument("--checkpoint-interval", type=int, default=10,
                   help="save a checkpoint every N iterations (default: 10)")
    t.add_argument("--author", help="author in the model's metadata")
    t.set_defaults(func=cmd_train, task=task_name)


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
