"""The built-in synthetic language: Zipf-distributed topics over sparse Markov chains.

Generative model (after Michaud et al. 2023, "The Quantization Model of Neural
Scaling": many discrete pieces of knowledge used with Zipfian frequencies give
power-law scaling in parameters and data):

* K topics with prior π_k ∝ k^-zipf_exponent (k = 1..K).
* One backbone chain shared by every topic: each token v has
  `backbone_branching` successors; and per topic a chain in which each token
  has `branching` topic-specific successors. Successor identities are random;
  the mass of the r-th successor is ∝ (r + 1)^-successor_zipf.
* Topic k's transition matrix is the mixture
      P_k(y | x) = w · B(y | x) + (1 - w) · T_k(y | x),   w = backbone_weight.
  A small model learns the backbone and the frequent topics; a larger one the
  rarer topics, so the loss keeps falling with N and D.
* Every probability is an exact multiple of 1/slots: each (topic, token) owns
  `slots` slots that each name a successor, and sampling draws a slot uniformly.
  Sampling is then one table lookup per token, and the probabilities used by
  the exact loss floor are the ones the sampler uses, with no rounding gap.
* A document is `doc_length` tokens of one topic, its first token uniform over
  the vocabulary. A window of `context + 1` tokens starts at a document start and,
  when doc_length < context + 1, holds several documents back to back (their
  boundaries sit at fixed positions, multiples of doc_length).

Everything is a pure function of (data.seed, vocab_size, SyntheticConfig):
the language from one seed stream, training batch i from another, the
validation windows from a third, so validation is disjoint from training by
construction (independent random streams).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.data.config import DataConfig, SyntheticConfig

# SeedSequence spawn keys of the three independent streams.
_LANGUAGE, _TRAIN, _VAL = 0, 1, 2
_VAL_BLOCK = 64  # validation windows are generated in blocks so val_batch(n) is a prefix-stable function of n


def _slot_counts(n_slots: int, n_successors: int, exponent: float) -> np.ndarray:
    """Integer slot counts (sum n_slots, each >= 1) close to mass ∝ (r+1)^-exponent.

    Largest-remainder rounding after giving every successor its one slot.
    """
    if n_slots == 0:
        return np.zeros(n_successors, dtype=np.int64)
    w = (np.arange(n_successors) + 1.0) ** -exponent
    extra = n_slots - n_successors
    share = w / w.sum() * extra
    counts = np.floor(share).astype(np.int64)
    rest = extra - counts.sum()
    counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    return counts + 1


@dataclass(frozen=True)
class Language:
    """The sampled parameters of one synthetic language.

    backbone_V_by_Sb[v, j]: successor named by backbone slot j of token v.
    topic_K_by_V_by_St[k, v, j]: successor named by topic slot j of token v in topic k.
    """
    vocab_size: int
    slots: int
    doc_length: int
    log_prior_K: np.ndarray           # float64 (K,), log π_k
    cdf_K: np.ndarray                 # float64 (K,), cumulative prior for sampling topics
    backbone_V_by_Sb: np.ndarray      # int64 (V, Sb)
    topic_K_by_V_by_St: np.ndarray    # int64 (K, V, St)

    @property
    def n_topics(self) -> int:
        return len(self.log_prior_K)

    @property
    def backbone_slots(self) -> int:
        return self.backbone_V_by_Sb.shape[1]

    def slot_table(self) -> np.ndarray:
        """Flat (K * V * Q) int64 table: entry (k, v, j) names the successor of v drawn by slot j in topic k."""
        cached = self.__dict__.get("_slot_table")
        if cached is None:
            K, V = self.n_topics, self.vocab_size
            cached = np.concatenate(
                [np.broadcast_to(self.backbone_V_by_Sb, (K, V, self.backbone_slots)), self.topic_K_by_V_by_St],
                axis=2).ravel()
            object.__setattr__(self, "_slot_table", cached)  # derived cache on a frozen dataclass
        return cached

    def transition(self, k: int) -> np.ndarray:
        """Dense P_k(y | x) as a (V, V) float64 matrix (exact multiples of 1/slots)."""
        V, Q = self.vocab_size, self.slots
        rows_bb = np.repeat(np.arange(V), self.backbone_slots)
        rows_t = np.repeat(np.arange(V), self.topic_K_by_V_by_St.shape[2])
        flat = np.concatenate([rows_bb * V + self.backbone_V_by_Sb.ravel(),
                               rows_t * V + self.topic_K_by_V_by_St[k].ravel()])
        return np.bincount(flat, minlength=V * V).reshape(V, V) / Q


def make_language(vocab_size: int, cfg: SyntheticConfig, seed: int) -> Language:
    cfg.validate()
    if vocab_size < 2:
        raise ValueError(f"data.vocab_size must be >= 2 for the synthetic language, got {vocab_size}")
    if vocab_size > np.iinfo(np.int32).max:
        raise ValueError(f"data.vocab_size={vocab_size} is too large")
    V, K, Q = vocab_size, cfg.topics, cfg.slots
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LANGUAGE]))
    prior = np.arange(1, K + 1, dtype=np.float64) ** -cfg.zipf_exponent
    prior /= prior.sum()

    n_bb = round(cfg.backbone_weight * Q)
    n_t = Q - n_bb
    # slot -> successor rank, identical for every token; the ranks' identities are random per token
    rank_bb = np.repeat(np.arange(cfg.backbone_branching), _slot_counts(n_bb, cfg.backbone_branching, cfg.successor_zipf))
    rank_t = np.repeat(np.arange(cfg.branching), _slot_counts(n_t, cfg.branching, cfg.successor_zipf))
    succ_bb = _distinct_successors(rng, (V,), cfg.backbone_branching, V)
    succ_t = _distinct_successors(rng, (K, V), cfg.branching, V)
    return Language(
        vocab_size=V, slots=Q, doc_length=cfg.doc_length,
        log_prior_K=np.log(prior), cdf_K=np.cumsum(prior),
        backbone_V_by_Sb=succ_bb[:, rank_bb] if n_bb else np.zeros((V, 0), np.int64),
        topic_K_by_V_by_St=succ_t[:, :, rank_t] if n_t else np.zeros((K, V, 0), np.int64),
    )


def _distinct_successors(rng: np.random.Generator, lead: tuple[int, ...], b: int, V: int) -> np.ndarray:
    """For each index in `lead`, b distinct random tokens in random order.

    Rejection: redraw the rows that hold a duplicate (rare when b << V). With
    b > V distinctness is impossible and duplicates simply merge their mass.
    """
    out = rng.integers(V, size=(*lead, b))
    if b > V:
        return out
    flat = out.reshape(-1, b)
    while True:
        srt = np.sort(flat, axis=1)
        bad = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
        if not len(bad):
            return out
        flat[bad] = rng.integers(V, size=(len(bad), b))


def sample_windows(lang: Language, rng: np.random.Generator, n_rows: int, length: int) -> np.ndarray:
    """n_rows windows of `length` tokens (int64), each starting at a document start."""
    V, Q, dl = lang.vocab_size, lang.slots, lang.doc_length
    table = lang.slot_table()
    n_docs = -(-length // dl)
    topic_DxR = np.searchsorted(lang.cdf_K, rng.random((n_docs, n_rows)), side="right")
    np.minimum(topic_DxR, lang.n_topics - 1, out=topic_DxR)  # guard cdf rounding at 1.0
    # offset into the flat (K, V, Q) slot table, minus the previous token's part
    off_LxR = rng.integers(Q, size=(length, n_rows), dtype=np.int64)
    off_LxR += np.repeat(topic_DxR * (V * Q), dl, axis=0)[:length]
    out_LxR = np.empty((length, n_rows), dtype=np.int64)
    out_LxR[::dl] = rng.integers(V, size=(n_docs, n_rows))
    # the loop over positions is inherent to a Markov chain; each step is one gather over rows
    for t in range(1, length):
        if t % dl:
            np.take(table, off_LxR[t] + out_LxR[t - 1] * Q, out=out_LxR[t])
    return np.ascontiguousarray(out_LxR.T)


def bayes_nll(lang: Language, windows_RxL: np.ndarray) -> np.ndarray:
    """Per-target Bayes-optimal negative log-likelihood, shape (R, L-1), float64.

    The predictor knows the language exactly and sees only the window's prefix.
    Within a document it filters the topic posterior (forward algorithm over a
    static latent topic): with c_k(t) = Σ_{s<=t} log P_k(x_s | x_{s-1}) over
    the document so far,
        -log p(x_t | x_<t) = -[LSE_k(log π_k + c_k(t)) - LSE_k(log π_k + c_k(t-1))].
    A document's first token is uniform, so it costs log V and resets the posterior.
    """
    x = np.asarray(windows_RxL, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"validation windows must be a 2-D array with >= 2 columns, got shape {x.shape}")
    if x.min() < 0 or x.max() >= lang.vocab_size:
        raise ValueError(f"validation tokens must lie in [0, {lang.vocab_size}), got range [{x.min()}, {x.max()}]")
    R, L = x.shape
    V, K, dl = lang.vocab_size, lang.n_topics, lang.doc_length
    pair = x[:, :-1] * V + x[:, 1:]                       # (R, L-1) flat (prev, next) index
    nll_RxT = np.empty((R, L - 1))
    # chunk rows so the (K, rows, T) log-likelihood block stays ~<= 64 MB
    chunk = max(1, int(8_000_000 // (K * (L - 1))))
    trans = [lang.transition(k).ravel() for k in range(K)] if K * V * V <= 32_000_000 else None
    for r0 in range(0, R, chunk):
        p = pair[r0:r0 + chunk]
        logp_KxRxT = np.empty((K, *p.shape))
        for k in range(K):
            tk = trans[k] if trans is not None else lang.transition(k).ravel()
            with np.errstate(divide="ignore"):
                logp_KxRxT[k] = np.log(tk[p])
        nll_RxT[r0:r0 + chunk] = _filter(logp_KxRxT, lang.log_prior_K, dl, V)
    return nll_RxT


def _filter(logp_KxRxT: np.ndarray, log_prior_K: np.ndarray, dl: int, V: int) -> np.ndarray:
    K, R, T = logp_KxRxT.shape
    out = np.empty((R, T))
    for lo in range(0, T + 1, dl):              # document d covers window positions [lo, lo + dl)
        # targets are positions 1..T; position lo (> 0) is a fresh document start
        first = lo + 1                           # first in-document transition target position
        last = min(lo + dl - 1, T)               # last target position inside this document
        if lo > 0:
            out[:, lo - 1] = math.log(V)
        if first > last:
            continue
        seg = logp_KxRxT[:, :, first - 1:last]   # transitions into positions first..last
        cum = np.cumsum(seg, axis=2) + log_prior_K[:, None, None]
        log_joint = _logsumexp0(cum)             # (R, n): log p(x_first..x_t | doc start token)
        prev = np.concatenate([np.zeros((R, 1)), log_joint[:, :-1]], axis=1)  # LSE(log π) = 0
        out[:, first - 1:last] = prev - log_joint
    return out


def _logsumexp0(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=0)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=0)) + m


class SyntheticSource:
    """DataSource over the synthetic language (see the module docstring)."""

    def __init__(self, cfg: DataConfig, context: int):
        if context < 1:
            raise ValueError(f"model.context must be >= 1, got {context}")
        self.cfg, self.context = cfg, context
        self.lang = make_language(cfg.vocab_size, cfg.synthetic, cfg.seed)
        self.vocab_size = cfg.vocab_size
        self._val_cache: np.ndarray | None = None

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, *key]))

    def train_array(self, index: int, batch_size: int) -> np.ndarray:
        if index < 0 or batch_size < 1:
            raise ValueError(f"train batch index must be >= 0 and batch_size >= 1, got {index}, {batch_size}")
        return sample_windows(self.lang, self._rng(_TRAIN, index, batch_size), batch_size, self.context + 1)

    def val_array(self, n_tokens: int) -> np.ndarray:
        n_rows = n_tokens // self.context
        if n_rows < 1:
            raise ValueError(f"eval.tokens={n_tokens} is below one window of model.context={self.context} tokens")
        have = 0 if self._val_cache is None else len(self._val_cache)
        if have < n_rows:
            blocks = [self._val_cache] if have else []
            for b in range(have // _VAL_BLOCK, -(-n_rows // _VAL_BLOCK)):
                blocks.append(sample_windows(self.lang, self._rng(_VAL, b), _VAL_BLOCK, self.context + 1))
            self._val_cache = np.concatenate(blocks)
        return self._val_cache[:n_rows]

    def train_batch(self, index: int, batch_size: int):
        import torch
        return torch.from_numpy(self.train_array(index, batch_size))

    def val_batch(self, n_tokens: int):
        import torch
        return torch.from_numpy(self.val_array(n_tokens).copy())

    def loss_floor(self, val: Any) -> float:
        arr = val.cpu().numpy() if hasattr(val, "cpu") else np.asarray(val)
        return float(bayes_nll(self.lang, arr).mean())

    def describe(self) -> dict[str, Any]:
        s = self.cfg.synthetic
        return {
            "source": "synthetic", "vocab_size": self.vocab_size, "seed": self.cfg.seed,
            "context": self.context, "synthetic": {f: getattr(s, f) for f in s.__dataclass_fields__},
        }
