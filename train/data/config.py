"""Data configuration (the `data.*` keys of a run config)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in synthetic language (see train/data/synthetic.py for the model)."""
    topics: int = 256           # latent topics (skills), Zipf-distributed
    zipf_exponent: float = 1.3  # topic frequency p_k ∝ k^-zipf_exponent (Michaud et al.: loss ∝ N^-(exponent-1))
    branching: int = 8          # topic-specific successors per token in each topic's sparse Markov chain
    doc_length: int = 256       # tokens per document (a document keeps one topic); windows start at a document start
    backbone_branching: int = 8  # successors per token in the backbone chain shared by every topic
    backbone_weight: float = 0.5  # probability mass of the shared backbone in every transition
    slots: int = 64             # probability resolution: every transition probability is a multiple of 1/slots
    successor_zipf: float = 1.0  # successor r (0-based rank) of a token gets mass ∝ (r + 1)^-successor_zipf
    classes: int = 16           # backbone successors are shared by all tokens of a class (v mod classes): a low-rank
                                # part small models learn first; 0: every token has its own backbone successors
    token_zipf: float = 1.0     # successors are drawn with token popularity ∝ (v + 1)^-token_zipf (Zipfian unigram)

    def validate(self) -> None:
        """Raise ValueError naming the bad `data.synthetic.*` key."""
        k = "data.synthetic."
        if self.topics < 1:
            raise ValueError(f"{k}topics must be >= 1, got {self.topics}")
        if not (self.zipf_exponent >= 0 and self.zipf_exponent < 10):
            raise ValueError(f"{k}zipf_exponent must lie in [0, 10), got {self.zipf_exponent}")
        if self.branching < 1:
            raise ValueError(f"{k}branching must be >= 1, got {self.branching}")
        if self.backbone_branching < 1:
            raise ValueError(f"{k}backbone_branching must be >= 1, got {self.backbone_branching}")
        if self.doc_length < 2:
            raise ValueError(f"{k}doc_length must be >= 2, got {self.doc_length}")
        if not 0 <= self.backbone_weight <= 1:
            raise ValueError(f"{k}backbone_weight must lie in [0, 1], got {self.backbone_weight}")
        if not 2 <= self.slots <= 255:
            raise ValueError(f"{k}slots must lie in [2, 255], got {self.slots}")
        if not (self.successor_zipf >= 0 and self.successor_zipf < 10):
            raise ValueError(f"{k}successor_zipf must lie in [0, 10), got {self.successor_zipf}")
        if self.classes < 0:
            raise ValueError(f"{k}classes must be >= 0, got {self.classes}")
        if not (self.token_zipf >= 0 and self.token_zipf < 10):
            raise ValueError(f"{k}token_zipf must lie in [0, 10), got {self.token_zipf}")
        n_bb = round(self.backbone_weight * self.slots)
        if 0 < n_bb < self.backbone_branching or 0 < self.slots - n_bb < self.branching:
            raise ValueError(
                f"{k}slots={self.slots} is too few: the backbone gets {n_bb} slots for "
                f"{k}backbone_branching={self.backbone_branching} successors and the topic part "
                f"{self.slots - n_bb} for {k}branching={self.branching} (each successor needs a slot)")


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
    num_proc: int = 0               # tokenization threads (fixed when a process first tokenizes); 0: one per core
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def validate(self) -> None:
        """Raise ValueError naming the bad `data.*` key (checks that need no file access)."""
        if not self.source.strip():
            raise ValueError("data.source must be 'synthetic', local file glob(s) or hf:<name>[:<config>]")
        if self.vocab_size <= 0:
            raise ValueError(f"data.vocab_size must be positive, got {self.vocab_size}")
        if self.max_docs < 0:
            raise ValueError(f"data.max_docs must be >= 0, got {self.max_docs}")
        if not 0 < self.val_frac < 1:
            raise ValueError(f"data.val_frac must lie in (0, 1), got {self.val_frac}")
        if self.num_proc < 0:
            raise ValueError(f"data.num_proc must be >= 0, got {self.num_proc}")
        if self.source == "synthetic":
            if self.vocab_size < 2:
                raise ValueError(f"data.vocab_size must be >= 2 for the synthetic language, got {self.vocab_size}")
            self.synthetic.validate()
        elif self.tokenizer == "bpe" and self.vocab_size < 257:
            raise ValueError(f"data.vocab_size={self.vocab_size} is too small for a byte-level BPE tokenizer: "
                             "it needs the 256 byte symbols plus the end-of-document token (>= 257)")
