"""Where metrics rows go: the JSONL file always, Weights & Biases optionally.

Every tracker has two methods, `log(row)` and `close()`, plus `state()` /
the `state` constructor argument so a resumed run continues the same
external run.
"""
from __future__ import annotations

import importlib
import secrets
from pathlib import Path
from typing import Any, Protocol

from train.rundir import JsonlWriter


class Tracker(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class JsonlTracker:
    """metrics.jsonl: one row a line, flushed per row."""

    def __init__(self, path: str | Path):
        self._writer = JsonlWriter(path)

    def log(self, row: dict[str, Any]) -> None:
        self._writer.write(row)

    def close(self) -> None:
        self._writer.close()

    def state(self) -> dict[str, Any]:
        return {}


def _import_wandb() -> Any:
    try:
        return importlib.import_module("wandb")
    except ImportError:
        raise ImportError(
            "run.tracker=wandb needs the wandb package: pip install 'scaling-testbed[wandb]'") from None


class WandbTracker:
    """Weights & Biases run: project run.wandb_project, group run.wandb_group or run.sweep,
    name = the run id, config = the resolved config. Respects WANDB_MODE=offline and WANDB_DIR.

    Train rows log `train/loss`, eval rows `val/loss`, both against the optimizer step;
    tokens, FLOPs and lr ride along.
    """

    def __init__(self, *, project: str, group: str, name: str, config: dict[str, Any],
                 state: dict[str, Any] | None = None):
        wandb = _import_wandb()
        # a fresh id per run directory, kept in checkpoints, so a resumed run continues
        # the same wandb run while two directories with the same config do not collide
        self._id = (state or {}).get("wandb_id") or f"{name[:48]}-{secrets.token_hex(4)}"
        self._run = wandb.init(project=project, group=group or None, name=name, id=self._id,
                               config=config, resume="allow", reinit=True)

    def log(self, row: dict[str, Any]) -> None:
        data = {k: row[k] for k in ("tokens", "flops", "lr") if k in row}
        if row.get("kind") == "train":
            data["train/loss"] = row.get("loss")
        elif row.get("kind") == "eval":
            data["val/loss"] = row.get("val_loss")
        self._run.log(data, step=int(row["step"]))

    def close(self) -> None:
        self._run.finish()

    def state(self) -> dict[str, Any]:
        return {"wandb_id": self._id}


class Trackers:
    """Fan a row out to every tracker."""

    def __init__(self, trackers: list[Any]):
        self.trackers = trackers

    def log(self, row: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(row)

    def close(self) -> None:
        for t in self.trackers:
            t.close()

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in self.trackers:
            out.update(t.state())
        return out


def open_trackers(metrics_path: str | Path, run: Any, run_id: str, config: dict[str, Any],
                  state: dict[str, Any] | None = None) -> Trackers:
    """JSONL always; wandb when run.tracker == "wandb" (`run` is the RunSection)."""
    trackers: list[Any] = [JsonlTracker(metrics_path)]
    if run.tracker == "wandb":
        trackers.append(WandbTracker(project=run.wandb_project, group=run.wandb_group or run.sweep,
                                     name=run_id, config=config, state=state))
    return Trackers(trackers)
