"""`python -m models key=value ...`: parameter counts and FLOPs/token for a model config.

Keys are ModelConfig fields, with or without the `model.` prefix:

    python -m models width=256 depth=4 vocab_size=512 context=128 pos=rope
"""
from __future__ import annotations

import dataclasses
import sys

from models.config import ModelConfig
from models.counting import CONVENTIONS, flops_per_token_by_name, param_counts

DEFAULT_VOCAB = 256   # counting needs a vocabulary; the byte-level size when none is given


def _value(key: str, text: str, kind: str):
    """`text` as the field's type (ModelConfig's fields are int, float, bool or str)."""
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind == "int":
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return float(text) if kind == "float" else text
    except ValueError:
        raise ValueError(f"model.{key} must be {'an integer' if kind == 'int' else 'a ' + kind}, got {text!r}") from None


def parse(argv: list[str]) -> ModelConfig:
    """key=value pairs (ModelConfig fields, `model.` prefix optional) into a validated config."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(ModelConfig)}
    values = {}
    for arg in argv:
        key, sep, text = arg.partition("=")
        key = key.strip().removeprefix("model.")
        if not sep:
            raise ValueError(f"{arg!r} must look like key=value (e.g. width=256)")
        if key not in kinds:
            raise ValueError(f"unknown config key 'model.{key}' (known keys: {', '.join(kinds)})")
        values[key] = _value(key, text.strip(), kinds[key])
    cfg = ModelConfig(**values)
    if cfg.vocab_size == 0:
        cfg = dataclasses.replace(cfg, vocab_size=DEFAULT_VOCAB)
    cfg.validate()
    return cfg


def report(cfg: ModelConfig) -> str:
    counts = param_counts(cfg)
    flops = flops_per_token_by_name(cfg)
    shape = f"{cfg.kind} width={cfg.width} depth={cfg.depth}"
    if cfg.kind == "gpt":
        shape += f" heads={cfg.n_heads}"
    lines = [f"{shape} context={cfg.context} vocab={cfg.vocab_size} (padded {cfg.padded_vocab})", ""]
    lines += [f"  params {k:<14} {v:>15,d}" for k, v in counts.items()]
    lines.append("")
    lines += [f"  FLOPs/token {c:<9} {flops[c]:>15,.0f}" for c in CONVENTIONS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        cfg = parse(argv)
    except ValueError as e:
        print(f"models: {e}", file=sys.stderr)
        return 2
    print(report(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
