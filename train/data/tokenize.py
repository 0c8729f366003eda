"""Tokenizers for real text, and writing token ids to a shard file (torch-free).

- `bpe`: a byte-level BPE (GPT-2 pre-tokenization) trained with `tokenizers` to
  `data.vocab_size`, id 0 = the end-of-document token. It is trained on an evenly
  strided sample of at most `BPE_SAMPLE_CHARS` characters of the training documents:
  merges learnt from 32M characters of one language barely change with more text, and
  training on a whole 100 MB shard costs a minute on two cores.
- `byte`: UTF-8 bytes (256 ids); 0xFF, a byte that never occurs in UTF-8, ends a document.
- a `tokenizer.json` file; its vocabulary size counts the added (special) tokens too.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from train.data.config import DataConfig
from train.data.documents import DataError

EOS_TEXT = "<|endoftext|>"
BYTE_EOS = 0xFF
BPE_SAMPLE_CHARS = 32_000_000
ENCODE_BATCH_DOCS = 256


def tokenizer_file_vocab_size(path: str) -> int:
    """Ids a tokenizer.json can produce: its model's vocabulary and its added tokens (max id + 1)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.tokenizer: file {path!r} does not exist")
    try:
        d = json.loads(p.read_text())
        ids = list(d["model"]["vocab"].values()) + [int(t["id"]) for t in d.get("added_tokens") or []]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"data.tokenizer: {path!r} is not a tokenizer.json with a model vocabulary ({e})") from None
    if not ids:
        raise DataError(f"data.tokenizer: {path!r} has an empty vocabulary")
    return max(ids) + 1


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str            # bpe | byte | file
    vocab_size: int
    path: str = ""

    @staticmethod
    def from_config(cfg: DataConfig) -> "TokenizerSpec":
        if cfg.tokenizer == "byte":
            return TokenizerSpec("byte", 256)
        if cfg.tokenizer == "bpe":
            if cfg.vocab_size < 257:
                raise DataError(f"data.vocab_size={cfg.vocab_size} is too small for byte-level BPE: "
                                f"it needs the 256 byte symbols plus {EOS_TEXT} (>= 257)")
            return TokenizerSpec("bpe", cfg.vocab_size)
        if cfg.tokenizer.endswith(".json"):
            return TokenizerSpec("file", tokenizer_file_vocab_size(cfg.tokenizer), cfg.tokenizer)
        raise DataError(f"data.tokenizer must be bpe, byte or a path to tokenizer.json, got {cfg.tokenizer!r}")

    def identity(self) -> str:
        if self.kind == "file":
            return "file:" + hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        if self.kind == "bpe":
            return f"bpe:{self.vocab_size}:sample{BPE_SAMPLE_CHARS}"
        return f"{self.kind}:{self.vocab_size}"


def bpe_sample(docs: list[str], max_chars: int = BPE_SAMPLE_CHARS) -> list[str]:
    """Every k-th document, k chosen so that the sample holds at most about `max_chars` characters."""
    total = sum(len(d) for d in docs)
    stride = max(1, math.ceil(total / max_chars))
    return docs[::stride]


def train_bpe(docs: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenization) with one special token, id 0 = end of document."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    sample = bpe_sample(docs)
    tok.train_from_iterator(sample, trainer=trainer, length=len(sample))
    return tok


class ByteTokenizer:
    """UTF-8 bytes as ids; 0xFF (never valid UTF-8) marks the end of a document."""
    vocab_size = 256
    eos_id = BYTE_EOS

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def encode_array(self, texts: list[str], dtype: np.dtype) -> np.ndarray:
        """The texts' ids, each followed by the end-of-document id, as one array."""
        raw = b"".join(t.encode("utf-8") + bytes([BYTE_EOS]) for t in texts)
        return np.frombuffer(raw, dtype=np.uint8).astype(dtype)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if i != BYTE_EOS).decode("utf-8", errors="strict")


class HFTokenizer:
    """A `tokenizers.Tokenizer` behind the same small interface as ByteTokenizer."""

    def __init__(self, tok, eos_id: int):
        self.tok, self.eos_id = tok, eos_id
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets nobody here reads
        self._encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._encode(texts, add_special_tokens=False)]

    def encode_array(self, texts: list[str], dtype: np.dtype) -> np.ndarray:
        """The texts' ids, each followed by the end-of-document id, as one array (encoded in parallel
        by the library's own thread pool)."""
        eos = np.array([self.eos_id], dtype=dtype)
        parts: list[np.ndarray] = []
        for e in self._encode(texts, add_special_tokens=False):
            parts += [np.asarray(e.ids, dtype=dtype), eos]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids if i != self.eos_id], skip_special_tokens=True)


def eos_of(tok, where: str) -> int:
    for name in (EOS_TEXT, "</s>", "<eos>", "<|end_of_text|>", "[SEP]"):
        i = tok.token_to_id(name)
        if i is not None:
            return i
    raise DataError(f"{where}: the tokenizer has no end-of-document token ({EOS_TEXT}, </s>, <eos>, ...)")


def encode_to_file(docs: list[str], tokenizer: Any, out: Path, dtype: np.dtype,
                   advance: Callable[[int, int], None] | None = None) -> int:
    """Tokenize `docs` in batches, append the end-of-document id to each, stream the ids to `out`.

    `advance(docs, tokens)` is called after each batch (progress). Returns the token count.
    Memory stays at one batch of ids, whatever the corpus size.
    """
    n = 0
    with open(out, "wb") as fh:
        for i in range(0, len(docs), ENCODE_BATCH_DOCS):
            batch = docs[i:i + ENCODE_BATCH_DOCS]
            ids = tokenizer.encode_array(batch, dtype)
            fh.write(ids.tobytes())
            n += len(ids)
            if advance:
                advance(len(batch), len(ids))
    return n


def load_tokenizer(kind: str, path: Path | None, eos_id: int):
    if kind == "byte":
        return ByteTokenizer()
    from tokenizers import Tokenizer
    return HFTokenizer(Tokenizer.from_file(str(path)), eos_id)


def build_tokenizer(spec: TokenizerSpec, train_docs: Iterable[str], where: str):
    """(tokenizer, tokenizers.Tokenizer or None to save) for a spec."""
    if spec.kind == "byte":
        return ByteTokenizer(), None
    if spec.kind == "bpe":
        hf_tok = train_bpe(list(train_docs), spec.vocab_size)
    else:
        from tokenizers import Tokenizer
        hf_tok = Tokenizer.from_file(spec.path)
    return HFTokenizer(hf_tok, eos_of(hf_tok, where)), hf_tok
