"""The built-in synthetic language: Zipf-distributed topics over sparse Markov chains.

Generative model (after Michaud et al. 2023, "The Quantization Model of Neural
Scaling": many discrete pieces of knowledge used with Zipfian frequencies give
power-law scaling in parameters and data):

* K topics with prior π_k ∝ k^-zipf_exponent (k = 1..K).
* One backbone chain shared by every topic: each token v has
  `backbone_branching` successors, shared by all tokens of its class
  (v mod `classes`), so the backbone bigram has rank <= classes and even a
  width-16 model can learn it; and per topic a chain in which each token has
  `branching` topic-specific successors of its own (full rank: memorization,
  the long tail that only larger models learn). Successor identities are drawn
  by a Zipfian token popularity ∝ (v + 1)^-token_zipf, which makes the unigram
  Zipfian as in text; the mass of the r-th successor is ∝ (r + 1)^-successor_zipf.
  Together: uniform → unigram → class bigram → topic chains is a ladder of
  structure of decreasing learnability, so loss keeps falling from the smallest
  models to the largest instead of sitting near ln V until capacity suffices.
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

    succ_KxVxM[k, v, m]: the m-th possible successor of token v in topic k; columns
        0..Mb-1 are the shared backbone's successors (identical for every k), the
        rest topic k's own.
    mass_M[m]: probability of column m, an exact multiple of 1/slots (the same for
        every (k, v)), so P_k(y | x) = Σ_m mass_M[m] · [succ_KxVxM[k, x, m] == y].
    slot_col_Q[j]: the column that slot j names; sampling draws a slot uniformly.
    """
    vocab_size: int
    slots: int
    doc_length: int
    log_prior_K: np.ndarray           # float64 (K,), log π_k
    cdf_K: np.ndarray                 # float64 (K,), cumulative prior for sampling topics
    succ_KxVxM: np.ndarray            # int32 (K, V, M)
    mass_M: np.ndarray                # float64 (M,)
    slot_col_Q: np.ndarray            # int64 (Q,)

    @property
    def n_topics(self) -> int:
        return len(self.log_prior_K)

    def transition(self, k: int) -> np.ndarray:
        """Dense P_k(y | x) as a (V, V) float64 matrix (for tests and small vocabularies)."""
        V, M = self.vocab_size, len(self.mass_M)
        flat = np.repeat(np.arange(V) * V, M) + self.succ_KxVxM[k].ravel()
        return np.bincount(flat, weights=np.tile(self.mass_M, V), minlength=V * V).reshape(V, V)


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
    cnt_bb = _slot_counts(n_bb, cfg.backbone_branching, cfg.successor_zipf) if n_bb else np.zeros(0, np.int64)
    cnt_t = _slot_counts(Q - n_bb, cfg.branching, cfg.successor_zipf) if Q - n_bb else np.zeros(0, np.int64)
    counts_M = np.concatenate([cnt_bb, cnt_t])
    # Zipfian token popularity: successors are drawn from it, so the unigram is Zipfian too
    pop = (np.arange(V) + 1.0) ** -cfg.token_zipf
    pop_cdf = np.cumsum(pop / pop.sum())
    n_cls = cfg.classes if 0 < cfg.classes < V else V
    succ_cls = _distinct_successors(rng, (n_cls,), cfg.backbone_branching, pop_cdf)
    succ_bb = succ_cls[np.arange(V) % n_cls]    # class-shared backbone: a rank <= classes bigram
    succ_t = _distinct_successors(rng, (K, V), cfg.branching, pop_cdf)
    succ = np.concatenate([np.broadcast_to(succ_bb[:, :len(cnt_bb)], (K, V, len(cnt_bb))), succ_t[:, :, :len(cnt_t)]],
                          axis=2).astype(np.int32)
    return Language(
        vocab_size=V, slots=Q, doc_length=cfg.doc_length,
        log_prior_K=np.log(prior), cdf_K=np.cumsum(prior),
        succ_KxVxM=np.ascontiguousarray(succ), mass_M=counts_M / Q,
        slot_col_Q=np.repeat(np.arange(len(counts_M)), counts_M),
    )


def _distinct_successors(rng: np.random.Generator, lead: tuple[int, ...], b: int, cdf_V: np.ndarray) -> np.ndarray:
    """For each index in `lead`, b distinct tokens drawn by popularity (cumulative `cdf_V`), in draw order.

    Rejection: redraw the rows that hold a duplicate. With b > V distinctness is
    impossible and duplicates simply merge their mass.
    """
    V = len(cdf_V)

    def draw(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf_V, rng.random((n, b)), side="right"), V - 1)

    out = draw(int(np.prod(lead))).reshape(*lead, b)
    if b > V:
        return out
    flat = out.reshape(-1, b)
    bad = np.arange(len(flat))
    while len(bad):
        # only the rows redrawn last time can hold a duplicate: check those (in ascending order, so the
        # draws are the ones a check of every row would make)
        srt = np.sort(flat[bad], axis=1)
        bad = bad[(srt[:, 1:] == srt[:, :-1]).any(axis=1)]
        if len(bad):
            flat[bad] = draw(len(bad))
    return out


def sample_windows(lang: Language, rng: np.random.Generator, n_rows: int, length: int) -> np.ndarray:
    """n_rows windows of `length` tokens (int64), each starting at a document start."""
    V, Q, dl = lang.vocab_size, lang.slots, lang.doc_length
    M = lang.succ_KxVxM.shape[2]
    table = lang.succ_KxVxM.ravel()
    n_docs = -(-length // dl)
    topic_DxR = np.searchsorted(lang.cdf_K, rng.random((n_docs, n_rows)), side="right")
    np.minimum(topic_DxR, lang.n_topics - 1, out=topic_DxR)  # guard cdf rounding at 1.0
    # flat offset into the (K, V, M) table, minus the previous token's part: topic and drawn column
    off_LxR = lang.slot_col_Q[rng.integers(Q, size=(length, n_rows))]
    off_LxR += np.repeat(topic_DxR * (V * M), dl, axis=0)[:length]
    out_LxR = np.empty((length, n_rows), dtype=np.int64)
    out_LxR[::dl] = rng.integers(V, size=(n_docs, n_rows))
    # the loop over positions is inherent to a Markov chain; each step is one gather over rows
    for t in range(1, length):
        if t % dl:
            out_LxR[t] = table[off_LxR[t] + out_LxR[t - 1] * M]
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
    V, dl = lang.vocab_size, lang.doc_length
    pair_RxT = x[:, :-1] * V + x[:, 1:]
    # documents as [first, last] target columns (0-based into the R x (L-1) target array)
    docs = [(lo, min(lo + dl - 1, L - 1) - 1) for lo in range(0, L - 1, dl)]
    # Stream over topics: keep a running log-sum-exp of log π_k + c_k(t), so memory stays
    # O(R·L) whatever the number of topics.
    run_max = np.full((R, L - 1), -np.inf)
    run_sum = np.zeros((R, L - 1))
    logp_RxT = np.empty((R, L - 1))
    for k in range(lang.n_topics):
        with np.errstate(divide="ignore"):
            np.log(lang.transition(k).ravel()[pair_RxT], out=logp_RxT)
        v = np.full((R, L - 1), -np.inf)     # doc-start targets stay -inf: they do not enter the filter
        for first, last in docs:
            if first <= last:
                v[:, first:last + 1] = np.cumsum(logp_RxT[:, first:last + 1], axis=1)
        v += lang.log_prior_K[k]
        new_max = np.maximum(run_max, v)
        finite = np.isfinite(new_max)
        safe = np.where(finite, new_max, 0.0)
        run_sum = run_sum * np.exp(np.where(finite, run_max - safe, 0.0)) + np.exp(v - safe)
        run_max = new_max
    with np.errstate(divide="ignore"):
        log_joint = np.log(run_sum) + np.where(np.isfinite(run_max), run_max, 0.0)
    nll = np.empty((R, L - 1))
    for first, last in docs:
        if first > 0:
            nll[:, first - 1] = math.log(V)  # the document's first token: uniform
        if first <= last:
            seg = log_joint[:, first:last + 1]
            prev = np.concatenate([np.zeros((R, 1)), seg[:, :-1]], axis=1)  # LSE_k(log π_k) = 0
            nll[:, first:last + 1] = prev - seg
    return nll


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
