"""Inference throughput: `qsight predict` vs a plain torch forward, and ONNX Runtime vs torch.

    python benchmarks/inference.py            # table
    python benchmarks/inference.py --json     # one JSON object

Side by side in one process, on the flagship model (`experiments/hybrid.toml`: resnet18 at 64 px,
neck, linear/MLP/8-qubit quantum heads, gated ensemble; weights as initialised, which does not
change the work) saved as a run folder with a real checkpoint, and the same PNG files:

* predict: `qsight.serving.predict.predict_images` + the CSV (what `qsight predict` runs after loading);
* plain: a textbook loop over the same files: PIL decode, the same eval transform, stack, forward, softmax;
* forward: the forward pass alone on tensors already in memory (the ceiling of both);
* ONNX Runtime (CPU) vs torch on the same in-memory batches, the exported file checked against torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from qsight.config.overrides import apply_overrides
from qsight.config.spec import ExperimentSpec, validate_spec
from qsight.config.toml_io import spec_to_toml
from qsight.experiment.build import build_data, build_hybrid
from qsight.runs.layout import RunLayout
from qsight.serving.export import export_run
from qsight.serving.loader import load_trained
from qsight.serving.predict import predict_images, write_predictions
from qsight.training.checkpoints import CheckpointStore, TrainingParts
from qsight.training.state import EarlyStopping, RunState

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, images: int) -> tuple[Path, list[Path]]:
    """A run folder of the flagship spec with a freshly initialised checkpoint, and `images` PNG files."""
    with (ROOT / "experiments" / "hybrid.toml").open("rb") as fh:
        raw = tomllib.load(fh)
    raw.pop("sinks", None)
    raw = apply_overrides(raw, [f'output.root="{root}"', "data.train_size=16", f"data.val_size={images}",
                                "train.device=cpu"])
    spec: ExperimentSpec = validate_spec(raw)
    data = build_data(spec)
    run = root / "runs" / "hybrid" / "bench"
    layout = RunLayout(run)
    run.mkdir(parents=True)
    layout.spec.write_text(spec_to_toml(spec))
    layout.summary.write_text(json.dumps({"status": "completed", "class_names": list(data.class_names)}))
    model = build_hybrid(spec, data.num_classes, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = TrainingParts(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), None,
                          EarlyStopping(None))
    CheckpointStore(run).save(parts, RunState(), spec.stages[-1].name, best=True)
    folder = root / "images"
    folder.mkdir()
    paths = []
    for i in range(images):
        paths.append(folder / f"img{i:04d}.png")
        Image.fromarray(data.display_image(i)).save(paths[-1])
    return run, paths


def medians(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds (after one warm-up round),
    so that a load change on the machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeat + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    run, paths = make_run(tmp, args.images)
    trained = load_trained(run, device="cpu")
    model, transform, size = trained.model, trained.transform, trained.spec.data.image_size  # type: ignore[attr-defined]
    n, bs = len(paths), args.batch

    def qsight_predict() -> None:
        results = predict_images(trained, paths, batch_size=bs)
        write_predictions(results, trained.class_names, tmp / "predictions.csv")

    def plain() -> None:
        out = []
        with torch.inference_mode():
            for i in range(0, n, bs):
                batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + bs]])
                out.append(model(batch).ensemble.exp())
        torch.cat(out)

    tensors = [torch.stack([trained.load_image(p) for p in paths[i : i + bs]]) for i in range(0, n, bs)]

    def forward() -> None:
        with torch.inference_mode():
            for x in tensors:
                model(x).ensemble.exp()

    exported = export_run(run, "onnx", tmp / "model.onnx", samples=min(n, 64))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(exported.file, options, providers=["CPUExecutionProvider"])
    arrays = [x.numpy() for x in tensors]

    def onnx() -> None:
        for a in arrays:
            session.run(None, {"images": a})

    t = medians({"predict": qsight_predict, "plain": plain, "forward": forward, "onnx": onnx}, args.repeat)
    t_predict, t_plain, t_forward, t_onnx = t["predict"], t["plain"], t["forward"], t["onnx"]
    return {
        "images": n, "batch": bs, "image_size": size, "threads": args.threads, "repeat": args.repeat,
        "predict_ips": n / t_predict, "plain_ips": n / t_plain, "forward_ips": n / t_forward,
        "predict_over_plain": t_plain / t_predict,
        "onnx_ips": n / t_onnx, "torch_ips": n / t_forward, "onnx_over_torch": t_forward / t_onnx,
        "onnx_max_abs_diff": exported.max_abs_diff, "onnx_check_samples": exported.samples,
        "torch": torch.__version__, "onnxruntime": ort.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="PNG files predicted")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qsight-bench-") as tmp:
        result = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['images']} images of {result['image_size']} px, batch {result['batch']}, "
          f"{result['threads']} threads, median of {result['repeat']}")
    print(f"qsight predict   {result['predict_ips']:8.1f} images/s")
    print(f"plain loop       {result['plain_ips']:8.1f} images/s   predict / plain = "
          f"{result['predict_over_plain']:.2f} (goal >= 0.8)")
    print(f"forward only     {result['forward_ips']:8.1f} images/s")
    print(f"ONNX Runtime     {result['onnx_ips']:8.1f} images/s   ONNX Runtime / torch = "
          f"{result['onnx_over_torch']:.2f}   (max |dp| {result['onnx_max_abs_diff']:.1e} over "
          f"{result['onnx_check_samples']} images)")


if __name__ == "__main__":
    main()
