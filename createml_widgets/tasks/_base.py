"""What every task class shares: Create ML's verbs over the one engine in `session.py`.

A task subclasses `ClassifierTask` and implements four hooks:
  `_plan(session)`            -> Plan: the items to extract, the split, the extractor
  `_make_trainer(session, plan)` -> a trainer over the extracted features (nets.training.Trainer, or one
                                    with its step/validation_metrics/state_dict/load_state_dict/net)
  `_predict_features(features)`  -> (N, K) probabilities for a list of feature arrays
  `_probabilities_of(source)`    -> (K,) probabilities for one input (a photo, a clip)
  `_export(fmt, metadata)`    -> coremltools MLModel
plus `_extractor_for_prediction()` to turn a user's input into features.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import torch

from ..data.items import Item
from ..errors import SessionError
from ..metadata import MLModelMetadata
from ..metrics import NO_PREDICTION, MLClassifierMetrics
from ..session import (
    JobCancelledError,
    MLCheckpoint,
    MLJob,
    MLPhase,
    MLTrainingSession,
    MLTrainingSessionParameters,
    failure_reason,
    prepare_session_directory,
)
from ..session_open import OpenedSession, open_training_session
from ._plan import (  # noqa: F401 - reached here by the task modules, the CLI and the engine
    Plan,
    check_session_outside_data,
    failed_entry,
    skipped_files,
    split_for_validation,
    warn_skipped,
)
from .registry import iterations_field

if TYPE_CHECKING:
    from coremltools.models import MLModel
    from IPython.display import HTML

    from ..data.keypoint_sources import KeypointDataSource
    from ..features.image_io import ImageSource
    from .hand_action_classifier import _ModelParameters as _HandActionParameters
    from .hand_pose_classifier import _ModelParameters as _HandPoseParameters
    from .image_classifier import _DataSource as _ImageDataSource
    from .image_classifier import _ModelParameters as _ImageParameters

    AnyDataSource = KeypointDataSource | _ImageDataSource  # a task's DataSource
    AnyModelParameters = _ImageParameters | _HandPoseParameters | _HandActionParameters  # a task's ModelParameters
    # what `train` takes: a DataSource, or (image classifier) a {label: [paths]} dict
    TrainingData = AnyDataSource | dict[str, list[str | os.PathLike]]

log = logging.getLogger(__name__)
# tqdm's bar without its items-per-second rate (cf. the command line's progress)
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
METRICS_BATCH = 4096  # examples predicted at a time for a model's metrics


class ClassifierTask:
    """Base of MLImageClassifier, MLHandPoseClassifier and MLHandActionClassifier."""

    DataSource: type
    ModelParameters: type
    _what = "example"  # "image", "video": used in messages
    _no_detection_counts_as_wrong = False

    # -- training --------------------------------------------------------------------------
    def __init__(self, training_data: TrainingData, parameters: AnyModelParameters | None = None):
        """Train synchronously (Create ML's `init(trainingData:parameters:)`), with a progress bar."""
        model = type(self)._train_sync(training_data, parameters)
        self.__dict__.update(model.__dict__)

    @classmethod
    def _train_sync(cls, training_data, parameters, session_parameters=None):
        if session_parameters is None:
            # Create ML's init(trainingData:parameters:) trains the iterations the parameters ask for: no session
            # bound of 1000 (MLTrainingSessionParameters' default) that the caller could not raise
            asked = getattr(parameters, iterations_field(cls.ModelParameters), 0)  # (parameters None: 0)
            asked = asked if isinstance(asked, int) else 0  # a wrong value: validate() names it
            session_parameters = MLTrainingSessionParameters(iterations=max(asked, MLTrainingSessionParameters.iterations))
        session = cls.make_training_session(training_data, parameters, session_parameters)
        return cls._train_session_with_bar(session)

    @classmethod
    def _train_session_with_bar(cls, session: MLTrainingSession):
        """Run (or continue) `session` on this thread, showing tqdm bars (widgets in Jupyter)."""
        from tqdm.auto import tqdm

        job = MLJob(session)
        bars: dict = {}

        def show(progress):
            bar = bars.get(progress.phase)
            if bar is None:
                for other in bars.values():
                    other.close()
                # no rate: items come from the cache at millions a second, which says nothing to a user
                bar = bars[progress.phase] = tqdm(total=progress.total_item_count, desc=progress.phase.title,
                                                  leave=False, bar_format=BAR_FORMAT)
            bar.n = progress.item_count
            if progress.metrics:
                bar.set_postfix({k: f"{v:.3f}" for k, v in progress.metrics.items()}, refresh=False)
            bar.refresh()

        job.on_progress(show)
        try:
            return job.run()
        finally:
            for bar in bars.values():
                bar.close()

    @classmethod
    def train(cls, training_data: TrainingData, parameters: AnyModelParameters | None = None,
              session_parameters: MLTrainingSessionParameters | None = None) -> MLJob:
        """Start training in the background; returns an MLJob (see `job.result()`). A session folder's session started
        otherwise is refused, naming what differs; one started the same way is continued (`open_training_session`)."""
        return cls.resume(cls.open_training_session(training_data, parameters, session_parameters).session)

    @classmethod
    def open_training_session(cls, training_data: TrainingData, parameters: AnyModelParameters | None = None,
                              session_parameters: MLTrainingSessionParameters | None = None, *,
                              restart: bool = False, keep_iterations: bool = False) -> OpenedSession:
        """A new session, or the folder's when it was started the same way (session_open.open_training_session)."""
        return open_training_session(cls, training_data, parameters, session_parameters, restart=restart,
                                     keep_iterations=keep_iterations)

    @classmethod
    def make_training_session(cls, training_data: TrainingData, parameters: AnyModelParameters | None = None,
                              session_parameters: MLTrainingSessionParameters | None = None) -> MLTrainingSession:
        """A new session (saved to its folder, if it has one) after checking the data and parameters; not started."""
        if not isinstance(training_data, cls.DataSource):
            if isinstance(training_data, dict) and hasattr(cls.DataSource, "files_by_label"):
                training_data = cls.DataSource.files_by_label(training_data)
            else:
                raise TypeError(f"training_data must be a {cls.__name__}.DataSource, got {type(training_data).__name__}")
        parameters = parameters if parameters is not None else cls.ModelParameters()
        if not isinstance(parameters, cls.ModelParameters):
            raise TypeError(f"parameters must be a {cls.__name__}.ModelParameters, got {type(parameters).__name__}")
        sp = session_parameters or MLTrainingSessionParameters()
        sp.validate()
        parameters.validate()
        if sp.directory is not None:
            check_session_outside_data(training_data, sp.directory)
            if (sp.directory / "session.json").exists():
                raise SessionError(f"{sp.directory} already holds a training session: use "
                                   f"{cls.__name__}.restore_training_session() to continue it, or pick a new folder")
            prepare_session_directory(sp.directory)
        session = MLTrainingSession(cls, training_data, parameters, sp)
        session.save()
        return session

    @classmethod
    def resume(cls, session: MLTrainingSession) -> MLJob:
        """Continue `session` (a session of this task) in the background; returns its running MLJob."""
        if session.task is not cls:
            raise SessionError(f"this is a {session.task.__name__} session, not a {cls.__name__} session")
        return MLJob(session).start()

    @classmethod
    def restore_training_session(cls, session_parameters: MLTrainingSessionParameters) -> MLTrainingSession:
        """The session saved in `session_parameters.session_directory` (Create ML's `restoreTrainingSession`)."""
        return MLTrainingSession.restore(cls, session_parameters)

    @classmethod
    def from_checkpoint(cls, checkpoint: MLCheckpoint) -> Self:
        """The model as it was at a training checkpoint."""
        if checkpoint.phase != MLPhase.TRAINING:
            raise SessionError(f"a {checkpoint.phase.value} checkpoint holds no model yet; pass a training checkpoint")
        session = getattr(checkpoint, "_session", None)
        if session is None:
            root = checkpoint._session_directory or (Path(checkpoint.url).parent.parent if checkpoint.url else None)
            if root is None:
                raise SessionError("this checkpoint has neither a file nor an in-memory state")
            session = MLTrainingSession.restore(cls, MLTrainingSessionParameters(session_directory=root))
        state = checkpoint._load_state()
        plan = cls._plan(session)
        missing = [i for i in plan.items if i.key not in session.features]
        if missing:
            raise SessionError(f"the session lacks features for {len(missing)} items; resume it first")
        trainer = cls._make_trainer(session, plan)
        trainer.load_state_dict(state)
        return cls._build(session, plan, trainer, iteration=checkpoint.iteration, warn=False)

    # -- hooks the engine calls --------------------------------------------------------------
    @classmethod
    def _plan(cls, session: MLTrainingSession) -> Plan:
        raise NotImplementedError

    @classmethod
    def _make_trainer(cls, session: MLTrainingSession, plan: Plan):
        raise NotImplementedError

    @classmethod
    def _build(cls, session: MLTrainingSession, plan: Plan, trainer, iteration: int | None = None,
               warn: bool = True):
        model = cls.__new__(cls)
        model.model_parameters = session.model_parameters
        model._labels = list(plan.labels)
        model._net = trainer.net.eval()
        model._history = list(session.history)
        model._summary = dict(session.summary)
        model._session_directory = session.session_directory
        model._iterations = iteration if iteration is not None else session.iteration
        model._mlmodel_cache = {}
        model._prediction_extractor = None
        model._init_after_training(session, plan)
        train_originals = [i for i in plan.train if not i.variant]
        model._training_metrics = model._metrics_for(train_originals, session.features, count_failures=False,
                                                     skipped=plan.skipped)
        if plan.validation:
            model._validation_metrics = model._metrics_for(plan.validation, session.features,
                                                           count_failures=cls._no_detection_counts_as_wrong)
        else:
            model._validation_metrics = MLClassifierMetrics(labels=plan.labels,
                                                            error=ValueError("no validation data was used"))
        if warn:
            warn_skipped(cls._what, skipped_files(plan, session.features))
        return model

    def _init_after_training(self, session, plan) -> None:
        """Task-specific state a trained model keeps (e.g. the feature extractor's settings)."""

    # -- metrics -----------------------------------------------------------------------------
    def _metrics_for(self, items: Sequence[Item], features, count_failures: bool,
                     skipped: Sequence[dict] = ()) -> MLClassifierMetrics:
        ok = [i for i in items if i.key in features.features]
        failed = [i for i in items if i.key in features.failed]
        skipped_list = list(skipped) + [failed_entry(i, features) for i in failed]
        true, pred, conf, shown = [], [], [], []
        # in batches: the features of 100,000 photos stacked at once would be one more copy of them (400 MB)
        for start in range(0, len(ok), METRICS_BATCH):
            batch = ok[start:start + METRICS_BATCH]
            probs = self._predict_features([features.features[i.key] for i in batch])
            for item, p in zip(batch, probs):
                label, confidence = self._ranked(p)[0]
                true.append(item.label)
                pred.append(label)
                conf.append(confidence)
                shown.append(item)
        if count_failures:
            for item in failed:
                true.append(item.label)
                pred.append(NO_PREDICTION)
                conf.append(float("nan"))
                shown.append(item)
        # each example with its name, its file and its time range, so that no view parses the name
        return MLClassifierMetrics(true, pred, self._labels, conf, [i.name for i in shown], skipped=skipped_list,
                                   paths=[i.file for i in shown],
                                   time_ranges=[(i.start, i.end) for i in shown])

    @property
    def training_metrics(self) -> MLClassifierMetrics:
        """Metrics on the training examples (augmented copies left out)."""
        return self._training_metrics

    @property
    def validation_metrics(self) -> MLClassifierMetrics:
        """Metrics on the validation examples (invalid when no validation data was used)."""
        return self._validation_metrics

    def evaluation(self, on: TrainingData) -> MLClassifierMetrics:
        """Metrics on another labelled data source (or {label: [paths]} dict for images).

        Like Create ML's `evaluation(on:)`, this does not raise for bad data: the metrics come back
        invalid, with `error` set.
        """
        try:
            if isinstance(on, dict) and hasattr(self.DataSource, "files_by_label"):
                on = self.DataSource.files_by_label(on)
            if not isinstance(on, self.DataSource):
                raise TypeError(f"evaluation(on=) takes a {type(self).__name__}.DataSource")
            items, skipped = self._evaluation_items(on)
            from ..session import FeatureStore

            store = FeatureStore(None)
            with self._make_extractor() as extractor:
                for start in range(0, len(items), 64):
                    chunk = items[start:start + 64]
                    for item, result in zip(chunk, extractor.extract(chunk)):
                        if isinstance(result, BaseException):
                            store.fail(item.key, failure_reason(result))
                        else:
                            store.add(item.key, np.asarray(result, dtype=np.float32))
            unknown = sorted({i.label for i in items} - set(self._labels))
            if unknown:
                warnings.warn(f"labels not seen in training: {unknown}; their examples count as errors", stacklevel=2)
            return self._metrics_for(items, store, count_failures=self._no_detection_counts_as_wrong,
                                     skipped=skipped)
        except Exception as err:  # noqa: BLE001 - Create ML's evaluation(on:) does not throw
            return MLClassifierMetrics(labels=getattr(self, "_labels", []), error=err)

    def _evaluation_items(self, source) -> tuple[list[Item], list[dict]]:
        raise NotImplementedError

    def _make_extractor(self):
        raise NotImplementedError

    # -- prediction: every answer is one ranked result ---------------------------------------------
    def _predict_features(self, features: list[np.ndarray]) -> np.ndarray:
        """(N, K) probabilities, in `class_labels` order, for N examples' features."""
        raise NotImplementedError

    def _probabilities_of(self, source) -> np.ndarray:
        """(K,) probabilities for one input as the task takes it (a photo, a hand photo, a whole clip)."""
        raise NotImplementedError

    @torch.inference_mode()
    def _probabilities(self, x: torch.Tensor) -> np.ndarray:
        self._net.eval()
        return torch.softmax(self._net(x), dim=1).numpy()

    def _ranked(self, probabilities) -> list[tuple[str, float]]:
        """The ranked result every prediction is read from: each label with its probability, most confident
        first (ties in `class_labels` order). An image's label is its first; a hand action window's `Prediction` holds it."""
        return sorted(((label, float(p)) for label, p in zip(self._labels, probabilities)), key=lambda t: -t[1])

    def ranked_prediction(self, source: ImageSource | torch.Tensor) -> list[tuple[str, float]]:
        """Every label with its confidence for one input, most confident first: a photo's (image and
        hand pose classifiers) or a whole clip's, its windows averaged (hand action classifier)."""
        return self._ranked(self._probabilities_of(source))

    @property
    def class_labels(self) -> list[str]:
        """The labels the model tells apart, in the order of its probability outputs."""
        return list(self._labels)

    def release_resources(self) -> None:
        """Free what prediction and export built on first use (the feature extractor's network or
        MediaPipe graph, the Core ML models); they are built again when next needed. The dashboard
        calls this for a task it switches away from."""
        extractor, self._prediction_extractor = getattr(self, "_prediction_extractor", None), None
        close = getattr(extractor, "close", None)
        if callable(close):
            close()
        getattr(self, "_mlmodel_cache", {}).clear()

    # -- Core ML -----------------------------------------------------------------------------
    @property
    def model(self) -> MLModel:
        """The trained model as a coremltools MLModel (a neural network, as `.mlmodel` files hold),
        with the default `MLModelMetadata()` (author: your user name)."""
        return self._coreml("neuralnetwork")

    def _coreml(self, fmt: str, metadata=None):
        """The Core ML model; without `metadata` it carries `MLModelMetadata()`'s defaults (built once)."""
        if metadata is not None:
            return self._export(fmt, metadata)
        if fmt not in self._mlmodel_cache:
            self._mlmodel_cache[fmt] = self._export(fmt, MLModelMetadata())
        return self._mlmodel_cache[fmt]

    def _training_info(self) -> dict[str, str]:
        info = {"com.github.createml_widgets.task": type(self).__name__,
                "com.github.createml_widgets.iterations": str(self._iterations),
                "com.github.createml_widgets.labels": ",".join(self._labels)}
        if self.training_metrics.is_valid:
            info["com.github.createml_widgets.training_accuracy"] = f"{self.training_metrics.accuracy:.4f}"
        if self.validation_metrics.is_valid:
            info["com.github.createml_widgets.validation_accuracy"] = f"{self.validation_metrics.accuracy:.4f}"
        return info

    # Weight precision of a written .mlmodel when `write` is not told: the smallest that keeps
    # top-1 agreement with float32 at 100% on the bundled samples (README: "Model files").
    default_precision = "float16"

    def write(self, path: str | os.PathLike, metadata: MLModelMetadata | None = None,
              precision: str | None = None) -> Path:
        """Save the model: `.mlmodel` (Core ML neural network), `.mlpackage` (Core ML ML program) or
        `.onnx` (ONNX, for ONNX Runtime on Android, the web and Windows).

        Without `metadata`, the model gets `MLModelMetadata()` (your full name as author, a
        description naming this package). `precision` ("float32", "float16", "int8"; default
        `default_precision`) sets how a `.mlmodel` stores its weights; `.mlpackage` and `.onnx`
        files hold float32 weights.
        """
        from ..export import format_for_path, write_model
        from ..export.coreml import check_precision, quantize_model

        if precision is not None:
            check_precision(precision)
        if str(path).lower().endswith(".onnx"):
            if precision not in (None, "float32"):
                raise ValueError(f"precision {precision!r}: an .onnx file holds float32 weights; "
                                 "use precision='float32' or write a .mlmodel")
            from ..export.onnx_export import write_onnx

            return write_onnx(self._onnx(metadata if metadata is not None else MLModelMetadata()), path)
        fmt = format_for_path(path)
        if fmt != "neuralnetwork":
            if precision not in (None, "float32"):
                raise ValueError(f"precision {precision!r} is offered for .mlmodel files; an .mlpackage "
                                 "holds float32 weights (use precision='float32')")
            return write_model(self._coreml(fmt, metadata), path)
        return write_model(quantize_model(self._coreml(fmt, metadata), precision or self.default_precision), path)

    write_to_file = write

    # -- views -------------------------------------------------------------------------------
    def __str__(self) -> str:
        from ..display import task_text

        return task_text(self)

    def __repr__(self) -> str:
        tm = self.training_metrics
        vm = self.validation_metrics
        acc = lambda m: f"{m.accuracy:.3f}" if m.is_valid else "n/a"  # noqa: E731
        return (f"<{type(self).__name__} labels={self._labels} iterations={self._iterations} "
                f"training_accuracy={acc(tm)} validation_accuracy={acc(vm)}>")

    def _repr_html_(self) -> str:
        from ..display import task_html

        return task_html(self)

    @property
    def playground_description(self) -> HTML:
        """The rich view (what Create ML's playgroundDescription shows), as an IPython HTML object."""
        from IPython.display import HTML

        return HTML(self._repr_html_())

    description = property(__str__)
    debug_description = property(__repr__)


__all__ = ["ClassifierTask", "Plan", "check_session_outside_data", "split_for_validation", "skipped_files", "warn_skipped", "JobCancelledError"]
