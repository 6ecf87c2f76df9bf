"""Whole runs: the run-folder contract, frozen modules, determinism, dry runs, NaN stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import HEADS, cli, install_nan_plugin, metric_lines, summary, tiny_spec, val_metrics


def test_run_folder_contract(smoke_run: Path) -> None:
    for name in ("spec.toml", "environment.json", "metrics.jsonl", "summary.json"):
        assert (smoke_run / name).is_file(), name
    for name in ("last.pt", "best.pt", "stage-classical.pt", "stage-quantum.pt", "stage-ensemble.pt"):
        ck = torch.load(smoke_run / "checkpoints" / name, weights_only=True)
        assert {"model", "stage", "epoch"} <= set(ck)
    data = summary(smoke_run)
    assert data["status"] == "completed"
    assert data["sinks"] == {"local": "ok", "wandb": "ok", "mlflow": "ok"}
    assert [s["name"] for s in data["stages"]] == ["classical", "quantum", "ensemble"]
    assert {f"val/{h}/qwk" for h in (*HEADS, "ensemble")} <= set(data["final"])
    assert all({"stage", "epoch", "step"} <= set(line) for line in metric_lines(smoke_run))
    env = json.loads((smoke_run / "environment.json").read_text())
    assert "torch" in json.dumps(env) and "quantum" in json.dumps(env)
    log = (smoke_run / "run.log").read_text()
    assert "transpiled for fake_torino" in log and "qiskit.passmanager" not in log  # not one line per pass


def test_every_validation_epoch_writes_artifacts(smoke_run: Path) -> None:
    vis = smoke_run / "visualizations"
    epochs = {"classical": 2, "quantum": 2, "ensemble": 1}
    active = {"classical": ("global", "compressed"), "quantum": ("quantum",), "ensemble": HEADS}
    for stage, n in epochs.items():
        for e in range(1, n + 1):
            folder = vis / stage / f"epoch_{e:02d}"
            assert (folder / "confidence.csv").is_file()
            for head in (*active[stage], "ensemble"):
                assert (folder / f"confusion_{head}.png").is_file()
                assert (folder / f"confusion_{head}.csv").is_file()
            cams = list((folder / "gradcam").glob("*_overlay*.png"))
            assert cams and (folder / "gradcam" / "collage.png").is_file()


def test_frozen_modules_stay_bit_identical_across_stages(smoke_run: Path) -> None:
    """Failure 3: a parameter outside a stage's `train` never changes."""
    ck = {s: torch.load(smoke_run / "checkpoints" / f"stage-{s}.pt", weights_only=True)["model"]
          for s in ("classical", "quantum", "ensemble")}
    for before, after, trained in (("classical", "quantum", "heads.quantum."), ("quantum", "ensemble", "combiner.")):
        changed = {k for k in ck[before] if not torch.equal(ck[before][k], ck[after][k])}
        assert changed, f"stage {after} trained nothing"
        assert all(k.startswith(trained) for k in changed), sorted(changed)


def test_restore_best_ends_the_stage_with_its_best_epoch(smoke_run: Path) -> None:
    lines = metric_lines(smoke_run)
    quantum = [r["val/quantum/qwk"] for r in lines if r["stage"] == "quantum" and "val/quantum/qwk" in r]
    after = [r["val/quantum/qwk"] for r in lines if r["stage"] == "ensemble" and "val/quantum/qwk" in r]
    assert len(quantum) == 2 and after
    # the quantum head is frozen in the ensemble stage, so it shows the weights the stage ended with
    assert after[0] == max(quantum) == summary(smoke_run)["stages"][1]["final"]["val/quantum/qwk"]


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(smoke_run: Path, smoke_args: tuple[str, ...], tmp_path: Path) -> None:
    """A second run of the smoke spec, from scratch, ends with the shared run's metrics.

    This one in a fresh interpreter (``python -m qsight``), the shared one forked warm (`tests.launcher`):
    the suite's warm processes give what a user's command gives.
    """
    again = tmp_path / "again"
    res = cli("run", *smoke_args, "--run-dir", str(again), fresh=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert val_metrics(again) == val_metrics(smoke_run)


@pytest.mark.slow
def test_dry_run_touches_every_stage_head_and_gradcam(tmp_path: Path, reports_root: Path) -> None:
    run_dir = tmp_path / "dry"
    res = cli("run", str(tiny_spec(tmp_path, reports=reports_root)), "--run-dir", str(run_dir), "--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert [s["name"] for s in summary(run_dir)["stages"]] == ["classical", "quantum", "ensemble"]
    assert list((run_dir / "visualizations" / "quantum").glob("epoch_01/gradcam/collage.png"))


@pytest.mark.slow
def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path: Path, reports_root: Path) -> None:
    """A plugin head whose logits turn NaN in the quantum stage: exit 1, stage 1 kept."""
    run_dir = tmp_path / "nan"
    env = install_nan_plugin(tmp_path / "plugin")
    spec = tiny_spec(tmp_path, reports=reports_root, stages__0__epochs=1,
                     model__heads__quantum={"type": "nan-after", "input": "neck", "after": 2})
    res = cli("run", str(spec), "--run-dir", str(run_dir), env=env)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "non-finite loss" in res.stderr and "Traceback" not in res.stderr
    data = summary(run_dir)
    assert data["status"] == "failed" and "non-finite" in data["message"]
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert (run_dir / "checkpoints" / "stage-classical.pt").is_file()


def test_run_dir_that_holds_a_run_is_refused(smoke_run: Path, tmp_path: Path) -> None:
    res = cli("run", str(tiny_spec(tmp_path)), "--run-dir", str(smoke_run))
    assert res.returncode == 2 and "not empty" in res.stderr
    assert summary(smoke_run)["status"] == "completed"  # nothing already written is lost
