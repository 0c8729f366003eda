"""Data configuration (the `data.*` keys of a run config)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic language (see train/data/synthetic.py for the model)."""
    topics: int = 64            # latent topics (skills), Zipf-distributed
    zipf_exponent: float = 1.1  # topic frequency p_k ∝ k^-zipf_exponent
    branching: int = 8          # successors per token in each topic's sparse Markov chain
    doc_length: int = 256       # tokens per document (a document keeps one topic)
    order: int = 1              # Markov order of each topic chain


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"       # synthetic | local file glob(s), comma separated | hf:<name>[:<config>]
    vocab_size: int = 512           # synthetic vocabulary, or the BPE tokenizer's target size
    seed: int = 0                   # data seed: runs of one sweep share it, so they see the same language and val set
    tokenizer: str = "bpe"          # bpe | byte | path/to/tokenizer.json (text sources only)
    text_field: str = "text"        # field holding text in jsonl / parquet / hf datasets
    hf_split: str = "train"
    streaming: bool = False         # hf datasets: stream instead of downloading the whole split
    max_docs: int = 0               # 0: all documents (text sources)
    val_frac: float = 0.005         # fraction of documents held out for validation (text sources)
    cache_dir: str = ""             # "": $SCALING_TESTBED_CACHE or ~/.cache/scaling-testbed
    num_proc: int = 0               # tokenization processes; 0: one per core
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
