"""Size and top-1 agreement of the written model files at each weight precision, on the 200 sample photos.

    .venv/bin/python benchmarks/export_precision.py [--task image|handpose|handaction|all] [--out FILE.json]

Trains the task on the bundled sign-language digits (default parameters), writes `.mlmodel` at
float32, float16 and int8 plus `.onnx` (and `.mlpackage`, float32, for its size), runs every sample
photo through each written file (Core ML files with `createml_widgets.export.spec_eval`, the ONNX
file with ONNX Runtime) and reports file size, top-1 agreement with float32 (the ONNX file, which the
tests hold equal to the float32 .mlmodel to 1e-5) and the largest probability difference.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from createml_widgets import MLHandPoseClassifier, MLImageClassifier, samples  # noqa: E402
from createml_widgets.export import load  # noqa: E402
from createml_widgets.features.image_embedding import vision_scale  # noqa: E402
from createml_widgets.features.image_io import load_image  # noqa: E402

PRECISIONS = ("float32", "float16", "int8")
PROGRESS: Path | None = None  # --progress: partial results written while the evaluations run
ONLY: tuple[str, ...] = PRECISIONS  # --precisions: the .mlmodel precisions to evaluate


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _rows(model, inputs: list[dict], folder: Path, labels: list[str], onnx_input, limit: int | None = None,
          progress: Path | None = None) -> list[dict]:
    """The float32 reference is the ONNX file through ONNX Runtime (tested to agree with the float32
    .mlmodel through spec_eval to 1e-5); each .mlmodel precision runs through spec_eval."""
    import onnxruntime as ort

    files = {p: model.write(folder / f"Model-{p}.mlmodel", precision=p) for p in PRECISIONS}
    onnx_path = model.write(folder / "Model.onnx")
    package = model.write(folder / "Model.mlpackage")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = np.asarray([session.run(None, onnx_input(x))[1][0] for x in inputs], np.float64)
    order = [p for p in ("int8", "float16", "float32") if p in ONLY]  # the smallest first
    rows = {"onnx": {"file": "onnx", "bytes": _size(onnx_path), "inputs": len(inputs)},
            "mlpackage": {"file": "mlpackage", "bytes": _size(package)}}
    for name in order:
        interpreter = load(files[name])
        key = next(o.name for o in interpreter.spec.description.output if o.type.WhichOneof("Type") == "dictionaryType")
        t = time.perf_counter()
        out = []
        for i, x in enumerate(inputs[:limit]):
            out.append([interpreter.predict(x)[key][label] for label in labels])
            if (i + 1) % 25 == 0 or i + 1 == len(inputs[:limit]):
                p = np.asarray(out, np.float64)
                ref = reference[: len(p)]
                rows[name] = {"file": name, "bytes": _size(files[name]), "inputs": len(p),
                              "top1_agreement": float(np.mean(p.argmax(1) == ref.argmax(1))),
                              "max_prob_diff": float(np.abs(p - ref).max())}
                print(f"    {name}: {i + 1}/{len(inputs)} in {time.perf_counter() - t:.0f}s "
                      f"agreement {rows[name]['top1_agreement']:.3f}", flush=True)
                if progress is not None:
                    progress.write_text(json.dumps(list(rows.values()), indent=2))
    return [rows[k] for k in ("float32", "float16", "int8", "onnx", "mlpackage") if k in rows]


def image_task(folder: Path) -> list[dict]:
    digits = samples.sign_language_digits()
    model = MLImageClassifier(MLImageClassifier.DataSource.labeled_directories(digits))
    photos = sorted(p for p in Path(digits).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = [vision_scale(load_image(p), 299) for p in photos]
    inputs = [{"image": im} for im in images]

    def onnx_input(x):
        return {"image": np.asarray(x["image"], np.float32).transpose(2, 0, 1)[None].copy()}

    return _rows(model, inputs, folder, model.class_labels, onnx_input, progress=PROGRESS)


def handpose_task(folder: Path) -> list[dict]:
    digits = samples.sign_language_digits()
    model = MLHandPoseClassifier(MLHandPoseClassifier.DataSource.labeled_directories(digits))
    photos = sorted(p for p in Path(digits).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    inputs = []
    for p in photos:
        try:
            inputs.append({"poses": np.asarray(model.keypoints(p).keypoints, np.float32)})
        except Exception:  # noqa: BLE001 - photos without a detected hand
            continue
    return _rows(model, inputs, folder, model.class_labels, lambda x: {"poses": x["poses"]}, progress=PROGRESS)


def handaction_task(folder: Path) -> list[dict]:
    from createml_widgets import MLHandActionClassifier

    clips = samples.hand_action_clips()
    model = MLHandActionClassifier(MLHandActionClassifier.DataSource.labeled_directories(clips))
    window = int(model.model.get_spec().description.input[0].type.multiArrayType.shape[0])
    videos = sorted(p for p in Path(clips).rglob("*") if p.suffix.lower() in (".mp4", ".mov", ".avi"))
    inputs = []
    for video in videos:  # every full window of every sample clip
        keypoints = np.asarray(model.keypoints(video), np.float32)
        for start in range(0, len(keypoints) - window + 1, window):
            inputs.append({"poses": keypoints[start:start + window]})
    return _rows(model, inputs, folder, model.class_labels, lambda x: {"poses": x["poses"]}, progress=PROGRESS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["image", "handpose", "handaction", "all"], default="all")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated, e.g. int8,float16")
    parser.add_argument("--progress", type=Path, default=None, help="write partial results here as they come")
    args = parser.parse_args()
    global PROGRESS, ONLY
    PROGRESS = args.progress
    ONLY = tuple(args.precisions.split(","))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task, fn in (("image", image_task), ("handpose", handpose_task), ("handaction", handaction_task)):
            if args.task in (task, "all"):
                print(task, flush=True)
                results[task] = fn(Path(tmp) / task)
                for row in results[task]:
                    if row.get("top1_agreement") is None:
                        print(f"  {row['file']:>9}: {row['bytes'] / 1e6:7.3f} MB")
                        continue
                    print(f"  {row['file']:>9}: {row['bytes'] / 1e6:7.3f} MB  top-1 agreement "
                          f"{row['top1_agreement'] * 100:6.2f}%  max |p - p_float32| {row['max_prob_diff']:.2e}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
