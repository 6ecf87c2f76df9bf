"""Throughput of the synthetic data pipeline vs a resnet18 CPU train step.

Prints images/second of (1) generating synthetic fundus images (one process,
and the automatic process count), (2) iterating the training DataLoader
(augmentation, batch 32), and (3) a resnet18 forward+backward+step at the same
size, with the ratio loader time / train-step time per batch: well below 1
means the loader is not the bottleneck of a CPU epoch.

    python benchmarks/data_pipeline.py [--image-size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    import timm
    import torch
    from torch.utils.data import DataLoader

    from qsight.data import DataContext, SyntheticFundusParams
    from qsight.data.synthetic_set import default_workers, synthetic_arrays, synthetic_fundus_dataset

    size, batch = args.image_size, args.batch_size
    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"image_size": size, "batch_size": batch, "torch_threads": args.threads}

    gen = SyntheticFundusParams(image_size=size, train_size=args.generate, val_size=1, workers=1)
    t = time.perf_counter()
    synthetic_arrays(gen, 0, None)
    out["generate_img_per_s_1_process"] = args.generate / (time.perf_counter() - t)
    workers = default_workers()
    if workers > 1:
        par = gen.model_copy(update={"workers": workers, "train_size": args.generate * 2})
        t = time.perf_counter()
        synthetic_arrays(par, 0, None)
        out[f"generate_img_per_s_{workers}_processes"] = args.generate * 2 / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        params = SyntheticFundusParams(image_size=size, train_size=batch * args.batches, val_size=8)
        bundle = synthetic_fundus_dataset(params, DataContext(seed=0, cache_dir=Path(tmp)))
    loader = DataLoader(bundle.train, batch_size=batch, shuffle=True, num_workers=args.num_workers, drop_last=True)
    t = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    loader_s = (time.perf_counter() - t) / (n / batch)
    out["loader_img_per_s"] = batch / loader_s
    out["loader_num_workers"] = args.num_workers

    model = timm.create_model("resnet18", pretrained=False, num_classes=bundle.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, bundle.num_classes, (batch,))
    model.train()
    times = []
    for i in range(args.steps + 2):
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if i >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    out["train_step_img_per_s"] = batch / step_s
    out["loader_to_train_step_ratio"] = loader_s / step_s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64, help="flagship setting: 64")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20, help="loader batches to time")
    ap.add_argument("--generate", type=int, default=300, help="images to generate for the generation rate")
    ap.add_argument("--steps", type=int, default=5, help="resnet18 train steps to time")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    res = _bench(args)
    if args.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        print(f"{k:36s} {v:.3f}" if isinstance(v, float) else f"{k:36s} {v}")


if __name__ == "__main__":
    main()
