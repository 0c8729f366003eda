"""Data sources: the built-in synthetic language and tokenized real text.

`build_data(cfg, context)` returns a `DataSource`. Importing this package does
not import torch (run configs import `train.data.config`); torch is imported
when batches are made.
"""
from __future__ import annotations

from typing import Any, Protocol

from train.data.config import DataConfig, SyntheticConfig


class DataSource(Protocol):
    """What the trainer needs from any data source.

    train_batch(index, batch_size): LongTensor (batch_size, context + 1), the
        index-th global training batch, a pure function of (data config, index,
        batch_size), so a checkpoint's data position is just the next index.
    val_batch(n_tokens): LongTensor (n_tokens // context, context + 1), the fixed
        held-out windows, disjoint from training and identical for every run
        sharing the data config.
    loss_floor(val): Bayes-optimal mean nats/token over the targets val[:, 1:]
        given each window's prefix, or None when unknown (real text).
    describe(): a JSON-able dict recorded in summary.json under "data".
    """
    vocab_size: int

    def train_batch(self, index: int, batch_size: int) -> Any: ...
    def val_batch(self, n_tokens: int) -> Any: ...
    def loss_floor(self, val: Any) -> float | None: ...
    def describe(self) -> dict[str, Any]: ...


def fingerprint(data: DataSource, context: int) -> str:
    """A digest of the tokens a run trains and evaluates on: three training batches (seeded windows spread
    over the data) and the first validation windows. Two sources with the same config give the same
    digest; a corpus, tokenizer or generator that changed under the same config gives another one, so
    a run resumed on other data than its checkpoint saw is refused (`train.book.RunBook.start`)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for index in (0, 1, 997):
        h.update(np.ascontiguousarray(np.asarray(data.train_batch(index, 2), dtype=np.int64)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(data.val_batch(2 * context), dtype=np.int64)).tobytes())
    return h.hexdigest()[:16]


def build_data(cfg: DataConfig, context: int) -> DataSource:
    """The data source a run config names (`data.source`)."""
    if cfg.source == "synthetic":
        from train.data.synthetic import SyntheticSource
        return SyntheticSource(cfg, context)
    from train.data.text import TextSource
    return TextSource(cfg, context)


__all__ = ["DataConfig", "DataSource", "SyntheticConfig", "build_data", "fingerprint"]
