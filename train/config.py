"""Run configuration: one frozen dataclass per concern, composed into `RunConfig`.

Configs come from YAML files, dicts and dotted command-line overrides
(`optim.lr=3e-3`). Every key is type-checked; an unknown key or a value of the
wrong type raises `ConfigError` naming the key, before anything trains.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.config import ModelConfig
from train.contract import FLOP_CONVENTIONS, ConfigError  # noqa: F401  (ConfigError re-exported)
from train.data.config import DataConfig, SyntheticConfig  # noqa: F401  (re-exported)


SCHEDULES = ("constant", "cosine", "linear", "wsd", "inv_sqrt")
DECAY_SHAPES = ("linear", "sqrt", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 2_000_000         # token budget; steps = ceil(tokens / batch_tokens)
    batch_tokens: int = 8192        # tokens per optimizer step (all ranks, all micro-batches)
    micro_batch_tokens: int = 0     # tokens per forward/backward on one rank; 0: the whole batch (no accumulation)
    grad_clip: float = 1.0          # max global grad norm; 0 disables clipping
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    dtype: str = "auto"             # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16
    compile: bool = False           # torch.compile the model (CUDA)
    threads: int = 0                # torch CPU threads; 0: leave torch's default
    init_from: str = ""             # checkpoint to branch from (WSD cooldowns): weights, optimizer, step, data position


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1       # decoupled (AdamW)
    exclude_from_decay: bool = True  # no decay on norms, biases and embeddings
    fused: bool = True              # fused AdamW kernel on CUDA (ignored on CPU)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "cosine"            # constant | cosine | linear | wsd | inv_sqrt
    warmup_steps: int = 0           # linear warmup from 0 (all schedules); in steps so WSD branches share it
    final_frac: float = 0.1         # cosine/linear/wsd: final lr as a fraction of the peak
    decay_frac: float = 0.2         # wsd: fraction of the steps spent decaying
    decay_shape: str = "linear"     # wsd: linear | sqrt (1 - sqrt) | cosine
    timescale: int = 0              # inv_sqrt: lr = peak * sqrt(timescale / step) after warmup; 0: warmup_steps or 1


@dataclass(frozen=True)
class EvalConfig:
    points: int = 32                # log-spaced eval steps, plus the final step
    tokens: int = 65_536            # held-out tokens evaluated each time (fixed set)
    batch_size: int = 0             # sequences per eval forward; 0: as the training micro-batch


@dataclass(frozen=True)
class RunSection:
    seed: int = 0                   # model init and anything random in training
    name: str = ""                  # readable prefix of the run id; "" derives one from the shape
    sweep: str = ""                 # sweep name (wandb group, bookkeeping)
    flop_convention: str = "exact"  # 6N | kaplan | exact (see models/ FLOP counting)
    ckpt_every: int = 0             # steps between checkpoints; 0: about 10 per run
    ckpt_keep: int = 2              # periodic checkpoints kept (older ones deleted)
    ckpt_steps: tuple[int, ...] = ()  # extra steps always checkpointed and kept (WSD branch points)
    diverge_factor: float = 3.0     # stop as diverged when the train loss exceeds factor x its first value (or is NaN/inf)
    log_every: int = 0              # steps between train rows in metrics.jsonl; 0: about 200 per run
    tracker: str = "jsonl"          # jsonl | wandb (JSONL is always written)
    wandb_project: str = "scaling-testbed"
    wandb_group: str = ""           # "": run.sweep


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunSection = field(default_factory=RunSection)

    # ---- conversions -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return from_dict(cls, d)

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> "RunConfig":
        """Apply dotted overrides: {"optim.lr": 1e-3} or ["optim.lr=1e-3", ...]."""
        return apply_overrides(self, overrides)

    # ---- derived quantities -----------------------------------------
    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.train.tokens / self.train.batch_tokens))

    @property
    def batch_size(self) -> int:
        """Sequences per optimizer step (all ranks, all micro-batches)."""
        return self.train.batch_tokens // self.model.context

    def validate(self) -> None:
        """Check every section; raise ConfigError naming the key. Nothing is trained before this passes."""
        try:
            self.model.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        t, o, s, e, r, d = self.train, self.optim, self.schedule, self.eval, self.run, self.data
        if t.batch_tokens <= 0:
            raise ConfigError(f"train.batch_tokens must be positive, got {t.batch_tokens}")
        if t.batch_tokens % self.model.context:
            raise ConfigError(f"train.batch_tokens={t.batch_tokens} must be a multiple of model.context={self.model.context}")
        if t.tokens < t.batch_tokens:
            raise ConfigError(f"train.tokens={t.tokens} is below one batch (train.batch_tokens={t.batch_tokens})")
        if t.micro_batch_tokens < 0 or (t.micro_batch_tokens and (t.micro_batch_tokens % self.model.context or t.batch_tokens % t.micro_batch_tokens)):
            raise ConfigError(f"train.micro_batch_tokens={t.micro_batch_tokens} must be a multiple of model.context that divides train.batch_tokens")
        if t.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0, got {t.grad_clip}")
        if t.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"train.dtype must be auto, float32 or bfloat16, got {t.dtype!r}")
        if not (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
        if o.name != "adamw":
            raise ConfigError(f"optim.name must be adamw, got {o.name!r}")
        if not (o.lr > 0 and math.isfinite(o.lr)):
            raise ConfigError(f"optim.lr must be a positive number, got {o.lr}")
        if not (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1):
            raise ConfigError("optim.beta1 and optim.beta2 must lie in [0, 1)")
        if o.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if s.kind not in SCHEDULES:
            raise ConfigError(f"schedule.kind must be one of {SCHEDULES}, got {s.kind!r}")
        if s.decay_shape not in DECAY_SHAPES:
            raise ConfigError(f"schedule.decay_shape must be one of {DECAY_SHAPES}, got {s.decay_shape!r}")
        if s.warmup_steps < 0 or s.warmup_steps >= self.steps:
            raise ConfigError(f"schedule.warmup_steps={s.warmup_steps} must be >= 0 and below the run's {self.steps} steps")
        if not 0 <= s.final_frac <= 1:
            raise ConfigError(f"schedule.final_frac must lie in [0, 1], got {s.final_frac}")
        if not 0 < s.decay_frac <= 1:
            raise ConfigError(f"schedule.decay_frac must lie in (0, 1], got {s.decay_frac}")
        if e.points < 1:
            raise ConfigError(f"eval.points must be >= 1, got {e.points}")
        if e.tokens < self.model.context:
            raise ConfigError(f"eval.tokens={e.tokens} is below one sequence (model.context={self.model.context})")
        if r.flop_convention not in FLOP_CONVENTIONS:
            raise ConfigError(f"run.flop_convention must be one of {FLOP_CONVENTIONS}, got {r.flop_convention!r}")
        if not 0 <= r.seed < 2 ** 32:   # the range numpy and torch seeds accept
            raise ConfigError(f"run.seed must be an integer in [0, 2**32), got {r.seed}")
        if r.ckpt_every < 0 or r.ckpt_keep < 1:
            raise ConfigError("run.ckpt_every must be >= 0 and run.ckpt_keep >= 1")
        if r.diverge_factor <= 1:
            raise ConfigError(f"run.diverge_factor must be > 1, got {r.diverge_factor}")
        if r.tracker not in ("jsonl", "wandb"):
            raise ConfigError(f"run.tracker must be jsonl or wandb, got {r.tracker!r}")
        if r.tracker == "wandb" and importlib.util.find_spec("wandb") is None:
            # checked here, not when the run opens its tracker: a sweep then refuses before launching anything
            raise ConfigError("run.tracker=wandb needs the wandb package: pip install 'scaling-testbed[wandb]'")
        if d.vocab_size <= 0:
            raise ConfigError(f"data.vocab_size must be positive, got {d.vocab_size}")
        try:
            d.validate()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.model.vocab_size and self.model.vocab_size < d.vocab_size and d.source == "synthetic":
            raise ConfigError(f"model.vocab_size={self.model.vocab_size} is below data.vocab_size={d.vocab_size}")

    def resolved(self) -> "RunConfig":
        """Fill derived defaults (model.vocab_size from the data, run.name) and validate."""
        cfg = self
        if cfg.model.vocab_size == 0:
            cfg = cfg.with_overrides({"model.vocab_size": data_vocab_size(cfg.data)})
        if not cfg.run.name:
            m = cfg.model
            cfg = cfg.with_overrides({"run.name": f"{m.kind}-w{m.width}-d{m.depth}"})
        cfg.validate()
        return cfg

    def run_id(self) -> str:
        """Readable prefix plus a short hash of the resolved config: same config, same directory."""
        return f"{self.run.name}-{config_hash(self)[:8]}"


def data_vocab_size(d: DataConfig) -> int:
    """Vocabulary size implied by a data config, without building the data."""
    if d.tokenizer == "byte" and d.source != "synthetic":
        return 256
    if d.tokenizer.endswith(".json") and d.source != "synthetic":
        from train.data.tokenize import tokenizer_file_vocab_size  # counts added tokens; a missing file is a ConfigError
        return tokenizer_file_vocab_size(d.tokenizer)
    return d.vocab_size


def config_hash(cfg: RunConfig) -> str:
    """Hash of everything that changes the run's result.

    `run.name`, `run.sweep`, tracker settings and checkpoint bookkeeping do not
    change the curve, so they are left out: renaming a sweep does not retrain it.
    `train.init_from` is left out too: a WSD cooldown branched from a stable run's
    checkpoint reproduces the from-scratch run exactly (the trainer checks the
    parent is compatible), so both are the same run with the same id.
    """
    d = cfg.to_dict()
    for k in ("name", "sweep", "tracker", "wandb_project", "wandb_group", "ckpt_every", "ckpt_keep", "ckpt_steps",
              "log_every"):
        d["run"].pop(k, None)
    for k in ("device", "compile", "threads", "micro_batch_tokens", "init_from"):
        d["train"].pop(k, None)
    for k in ("cache_dir", "num_proc"):
        d["data"].pop(k, None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------
# generic dataclass <-> dict with type checking

def did_you_mean(word: str, choices: Any) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a misspelt `word`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}: the dotted keys the command line uses."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(x) for x in obj]
    return obj


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to the annotated type `tp`; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, elem, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type, d: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping")
    types = _field_types(cls)
    unknown = [k for k in d if k not in types]
    if unknown:
        known = ", ".join(prefix + k for k in types)
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}"
                          f"{did_you_mean(prefix + unknown[0], [prefix + k for k in types])} (known keys here: {known})")
    kwargs = {k: _coerce(v, types[k], prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    """Command-line values are YAML scalars: 3e-3, true, [1, 2], cosine."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML reads '3e-3' as a string (no dot); let the type coercion handle it
    return v


def apply_overrides(cfg: Any, overrides: dict[str, Any] | list[str]) -> Any:
    if isinstance(overrides, (list, tuple)):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=3e-3)")
            k, v = item.split("=", 1)
            pairs[k.strip()] = _parse_scalar(v.strip())
        overrides = pairs
    d = to_dict(cfg)
    for key, value in overrides.items():
        parts = key.split(".")
        node = d
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r} in override {key!r}"
                                  f"{did_you_mean(key, flatten(to_dict(cfg)))}")
            node = node[p]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, flatten(to_dict(cfg)))}")
        if isinstance(node[parts[-1]], dict) and not isinstance(value, dict):
            raise ConfigError(f"{key} is a section; set one of its keys ({', '.join(key + '.' + k for k in node[parts[-1]])})")
        node[parts[-1]] = value
    return from_dict(type(cfg), d)


def _read_config_file(p: Path) -> Any:
    """A config file's mapping; a file that does not parse is a ConfigError naming it (and the line)."""
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    try:
        d = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {problem}{where}") from None
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections (model:, train:, ...), "
                          f"got a {type(d).__name__}")
    return d


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] = ()) -> RunConfig:
    """A RunConfig from an optional YAML/JSON file plus dotted overrides (unresolved)."""
    cfg = RunConfig()
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        d = _read_config_file(p)
        cfg = from_dict(RunConfig, d or {})
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg
