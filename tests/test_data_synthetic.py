"""The synthetic language: determinism, disjoint streams, sampler = model, exact loss floor."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from train.config import ConfigError, load_config
from train.data import build_data
from train.data.config import DataConfig, SyntheticConfig
from train.data.synthetic import _distinct_successors, bayes_nll, make_language


def tiny(**kw) -> DataConfig:
    syn = dict(topics=2, zipf_exponent=1.0, branching=2, backbone_branching=2, backbone_weight=0.5,
               slots=8, doc_length=3)
    syn.update(kw)
    return DataConfig(vocab_size=3, seed=7, synthetic=SyntheticConfig(**syn))


def exact_seq_probs(lang, length: int) -> dict[tuple[int, ...], float]:
    """P(x_0..x_{L-1}) by brute force from the generative definition (no filtering)."""
    V, dl = lang.vocab_size, lang.doc_length
    prior = np.exp(lang.log_prior_K)
    P = [lang.transition(k) for k in range(lang.n_topics)]
    out = {}
    for seq in itertools.product(range(V), repeat=length):
        p = 1.0
        for lo in range(0, length, dl):
            doc = seq[lo:lo + dl]
            p_doc = sum(prior[k] * math.prod(P[k][a, b] for a, b in zip(doc[:-1], doc[1:]))
                        for k in range(lang.n_topics))
            p *= p_doc / V
        out[seq] = p
    return out


def test_batches_are_deterministic_and_index_dependent():
    a, b = build_data(DataConfig(), 32), build_data(DataConfig(), 32)
    assert a.vocab_size == 512
    x = a.train_batch(5, 8)
    assert tuple(x.shape) == (8, 33) and str(x.dtype) == "torch.int64"
    assert (x == b.train_batch(5, 8)).all()
    assert not (x == a.train_batch(6, 8)).all()
    assert int(x.min()) >= 0 and int(x.max()) < 512
    other_seed = build_data(DataConfig(seed=1), 32)
    assert not (x == other_seed.train_batch(5, 8)).all()


def test_val_is_fixed_prefix_stable_and_disjoint_from_train():
    src = build_data(DataConfig(), 32)
    v = src.val_batch(32 * 100)
    assert tuple(v.shape) == (100, 33)
    assert (v[:10] == build_data(DataConfig(), 32).val_batch(32 * 10)).all()
    train_rows = {tuple(r) for i in range(20) for r in src.train_batch(i, 16).tolist()}
    assert not train_rows & {tuple(r) for r in v.tolist()}
    # the val stream is not the train stream under another name
    assert not (src.val_batch(32 * 16) == src.train_batch(0, 16)).all()


def test_sampler_matches_the_exact_sequence_distribution():
    src = build_data(tiny(), 4)                   # windows of 5 tokens: two documents (3 + 2)
    exact = exact_seq_probs(src.lang, 5)
    assert abs(sum(exact.values()) - 1) < 1e-12
    rows = np.concatenate([src.train_array(i, 4096) for i in range(30)])
    codes = rows @ (3 ** np.arange(4, -1, -1))
    emp = np.bincount(codes, minlength=3 ** 5) / len(rows)
    ex = np.array([exact[s] for s in itertools.product(range(3), repeat=5)])
    # multinomial standard error is <= sqrt(p / n); allow 5 sigma per cell
    assert np.all(np.abs(emp - ex) <= 5 * np.sqrt(ex / len(rows)) + 1e-4)


def test_floor_equals_brute_force_conditionals():
    src = build_data(tiny(), 4)
    exact = exact_seq_probs(src.lang, 5)
    prefix = {}
    for seq, p in exact.items():
        for t in range(1, 6):
            prefix[seq[:t]] = prefix.get(seq[:t], 0.0) + p
    val = src.val_array(4 * 50)
    brute = np.array([[-math.log(prefix[tuple(r[:t + 1])] / prefix[tuple(r[:t])]) for t in range(1, 5)]
                      for r in val.tolist()])
    np.testing.assert_allclose(bayes_nll(src.lang, val), brute, rtol=1e-10, atol=1e-12)
    assert src.loss_floor(src.val_batch(4 * 50)) == pytest.approx(brute.mean(), rel=1e-12)


def _val_nll(probs_fn, val: np.ndarray) -> float:
    p = probs_fn(val)
    return float(-np.log(p).mean())


def test_floor_beats_a_counted_bigram_and_a_wrong_prior_mixture():
    cfg = DataConfig(vocab_size=64, synthetic=SyntheticConfig(topics=16, branching=4, backbone_branching=4))
    src = build_data(cfg, 64)
    val = src.val_array(64 * 256)
    floor = src.loss_floor(val)
    # a bigram model counted on 2M training tokens (add-0.1 smoothing)
    counts = np.full((64, 64), 0.1)
    for i in range(16):
        x = src.train_array(i, 2048)
        np.add.at(counts, (x[:, :-1].ravel(), x[:, 1:].ravel()), 1)
    bigram = counts / counts.sum(1, keepdims=True)
    bigram_nll = float(-np.log(bigram[val[:, :-1], val[:, 1:]]).mean())
    # the true chains with a uniform (wrong) topic prior
    wrong = make_language(64, cfg.synthetic, cfg.seed)
    wrong = type(wrong)(**{**wrong.__dict__, "log_prior_K": np.full(16, -math.log(16))})
    wrong_nll = float(bayes_nll(wrong, val).mean())
    assert floor < wrong_nll < bigram_nll
    assert bigram_nll - floor > 0.05             # topic inference is worth something


def every_row(rng, lead, b, cdf):
    """The successor draws as the earlier code made them: every row re-checked each rejection round (the
    reference `_distinct_successors` must equal; benchmarks/startup_costs.py times the two)."""
    draw = lambda n: np.minimum(np.searchsorted(cdf, rng.random((n, b)), side="right"), len(cdf) - 1)  # noqa: E731
    out = draw(int(np.prod(lead))).reshape(*lead, b)
    flat = out.reshape(-1, b)
    while True:
        srt = np.sort(flat, axis=1)
        bad = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
        if not len(bad):
            return out
        flat[bad] = draw(len(bad))


def test_successor_draws_equal_a_check_of_every_row_each_round():
    """The rejection loop re-checks only the rows it redrew: the language is the one a check of every row
    each round gives (same draws in the same order), so languages, and every loss measured on them, stay put."""
    pop = (np.arange(12) + 1.0) ** -1.2
    cdf = np.cumsum(pop / pop.sum())
    for seed in range(3):                      # 12 tokens, 6 distinct successors: most rows redraw many times
        got = _distinct_successors(np.random.default_rng(seed), (40, 12), 6, cdf)
        np.testing.assert_array_equal(got, every_row(np.random.default_rng(seed), (40, 12), 6, cdf))
        assert all(len(set(row)) == 6 for row in got.reshape(-1, 6))


def test_floor_is_fast_on_64k_tokens():
    import time
    src = build_data(DataConfig(), 128)
    v = src.val_batch(65_536)
    t0 = time.process_time()                   # CPU time: robust to a busy machine
    f = src.loss_floor(v)
    assert 0 < f < math.log(512)
    assert time.process_time() - t0 < 10.0     # loose (about 0.4 s here): a broken vectorization takes minutes


@pytest.mark.parametrize("key,value", [
    ("topics", 0), ("branching", 0), ("backbone_weight", 1.5), ("slots", 1), ("doc_length", 1),
    ("zipf_exponent", -1.0), ("successor_zipf", -0.5), ("classes", -1), ("token_zipf", -1.0),
])
def test_bad_synthetic_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"data.synthetic.{key}"):
        build_data(DataConfig(synthetic=SyntheticConfig(**{key: value})), 32)


def test_too_few_slots_names_the_keys():
    with pytest.raises(ValueError, match="data.synthetic.slots"):
        SyntheticConfig(slots=8, branching=8, backbone_branching=8).validate()


def test_bad_vocab_and_context():
    with pytest.raises(ValueError, match="data.vocab_size"):
        build_data(DataConfig(vocab_size=1), 32)
    with pytest.raises(ValueError, match="model.context"):
        build_data(DataConfig(), 0)
    with pytest.raises(ValueError, match="eval.tokens"):
        build_data(DataConfig(), 32).val_batch(16)


def test_run_config_validation_reports_synthetic_keys():
    with pytest.raises(ConfigError, match="data.synthetic.topics"):
        load_config(overrides=["data.synthetic.topics=0"]).resolved()


def test_describe_is_json_and_complete():
    import json
    d = build_data(DataConfig(), 32).describe()
    json.dumps(d)
    assert d["source"] == "synthetic" and d["synthetic"]["topics"] == SyntheticConfig().topics


def test_backbone_is_shared_within_a_class_and_unigram_is_zipfian():
    cfg = DataConfig(vocab_size=64, synthetic=SyntheticConfig(topics=4, classes=4, backbone_weight=1.0, branching=1))
    lang = build_data(cfg, 32).lang
    P = lang.transition(0)
    np.testing.assert_allclose(P.sum(1), 1.0)
    assert np.array_equal(P[1], P[5]) and np.array_equal(P[1], P[61])   # same class (v mod 4)
    assert not np.array_equal(P[1], P[2])
    assert np.array_equal(P, lang.transition(3))                        # backbone only: topics agree
    x = build_data(DataConfig(vocab_size=64), 32).train_array(0, 512)
    freq = np.bincount(x.ravel(), minlength=64)
    assert freq[:8].sum() > 3 * freq[-8:].sum()                          # popular ids dominate
