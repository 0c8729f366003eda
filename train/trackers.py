"""Where metrics rows go: the JSONL file always, Weights & Biases optionally.

Every tracker has two methods, `log(row)` and `close()`, plus `state()` /
the `state` constructor argument so a resumed run continues the same
external run. Trackers close after the trainer wrote summary.json, so a tracker
can read the run's outcome from the run directory.
"""
from __future__ import annotations

import importlib
import secrets
from pathlib import Path
from typing import Any, Protocol

from train.config import flatten
from train.contract import COMPLETED, SUMMARY
from train.rundir import JsonlWriter, read_json


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
    name = the run id, config = the resolved config, tags for the sweep, the model shape and
    the token budget. Respects WANDB_MODE=offline and WANDB_DIR.

    Train rows log `train/loss`, eval rows `val/loss`, both against the optimizer step;
    tokens, FLOPs and lr ride along. On close, the run directory's summary.json (parameter
    counts, FLOPs/token, loss floor, final losses, status) is copied into the W&B run
    summary, and a run that did not complete finishes with exit code 1.

    Several runs can be open in one process at once (the packed trainer opens one per
    model): each is its own W&B run (`reinit="create_new"`, wandb >= 0.19.10).
    """

    def __init__(self, *, project: str, group: str, name: str, config: dict[str, Any],
                 state: dict[str, Any] | None = None, run_dir: str | Path | None = None):
        wandb = _import_wandb()
        # a fresh id per run directory, kept in checkpoints, so a resumed run continues
        # the same wandb run while two directories with the same config do not collide
        self._id = (state or {}).get("wandb_id") or f"{name[:48]}-{secrets.token_hex(4)}"
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._run = wandb.init(project=project, group=group or None, name=name, id=self._id,
                               config=config, resume="allow", reinit="create_new", tags=run_tags(config))

    def log(self, row: dict[str, Any]) -> None:
        data = {k: row[k] for k in ("tokens", "flops", "lr") if k in row}
        if row.get("kind") == "train":
            data["train/loss"] = row.get("loss")
        elif row.get("kind") == "eval":
            data["val/loss"] = row.get("val_loss")
        self._run.log(data, step=int(row["step"]))

    def close(self) -> None:
        summary = self._summary()
        if summary:
            self._run.summary.update(summary)
        status = summary.get("status")
        # no summary: the process is going down before the trainer wrote one (an interrupt)
        self._run.finish(exit_code=0 if status == COMPLETED else 1)

    def _summary(self) -> dict[str, Any]:
        if self._run_dir is None:
            return {}
        try:
            d = read_json(self._run_dir / SUMMARY)
        except (OSError, ValueError):
            return {}
        return flatten(d) if isinstance(d, dict) else {}

    def state(self) -> dict[str, Any]:
        return {"wandb_id": self._id}


def run_tags(config: dict[str, Any]) -> list[str]:
    """W&B tags to filter a project by: the sweep, the model shape and the token budget."""
    m, t, r = config.get("model", {}), config.get("train", {}), config.get("run", {})
    tags = []
    if r.get("sweep"):
        tags.append(f"sweep:{r['sweep']}"[:64])
    if m:
        tags.append(f"shape:{m.get('kind')}-w{m.get('width')}-d{m.get('depth')}")
    if t.get("tokens"):
        tags.append(f"tokens:{float(t['tokens']):.3g}")
    return tags


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
                                     name=run_id, config=config, state=state, run_dir=Path(metrics_path).parent))
    return Trackers(trackers)
