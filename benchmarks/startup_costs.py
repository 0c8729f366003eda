"""Two per-process costs, old way against new way in one process (ratios, not absolute times):

- the synthetic language's successor draws (vocab 512, the default language): a check of every row each
  rejection round (the earlier code, kept as the reference of
  tests/test_data_synthetic.py) against `train.data.synthetic._distinct_successors`,
  which re-checks only the rows it redrew; the draws are the same;
- a small fit's BLAS thread limit: `threadpoolctl.threadpool_limits` built per fit (the earlier code)
  against the process's one cached controller (`analysis.objective.single_threaded_blas`), on 48 fits
  of a 12-run Kaplan ladder (`kaplan`, one start).

    python benchmarks/startup_costs.py
"""
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_data_synthetic import every_row  # noqa: E402  (the earlier code, the test's reference)


def best_of(fn, n=5):
    times = []
    for _ in range(n):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main():
    from train.data.config import SyntheticConfig
    from train.data.synthetic import _distinct_successors

    cfg, V = SyntheticConfig(), 512
    pop = (np.arange(V) + 1.0) ** -cfg.token_zipf
    cdf = np.cumsum(pop / pop.sum())
    lead = (cfg.topics, V)
    old = best_of(lambda: every_row(np.random.default_rng(0), lead, cfg.branching, cdf))
    new = best_of(lambda: _distinct_successors(np.random.default_rng(0), lead, cfg.branching, cdf))
    same = np.array_equal(every_row(np.random.default_rng(0), lead, cfg.branching, cdf),
                          _distinct_successors(np.random.default_rng(0), lead, cfg.branching, cdf))

    import analysis.objective as objective
    from analysis.fitting import fit
    from analysis.laws import get_law

    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(1e6, 1e8, 4), 3)
    D = N * np.tile([10, 40, 160], 4)
    loss = get_law("kaplan").predict({"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}, N=N, D=D)
    table = pd.DataFrame({"run": [f"r{i}" for i in range(12)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                          "final": True, "loss": loss * np.exp(0.003 * rng.standard_normal(12))})
    fits = lambda: [fit(table, "kaplan", n_starts=1) for _ in range(48)]  # noqa: E731
    cached = best_of(fits, 3)
    from threadpoolctl import threadpool_limits
    keep = objective.single_threaded_blas
    objective.single_threaded_blas = lambda: threadpool_limits(limits=1, user_api="blas")
    import analysis.fitting as fitting
    keep_f = getattr(fitting, "single_threaded_blas", None)
    if keep_f is not None:
        fitting.single_threaded_blas = objective.single_threaded_blas
    per_fit = best_of(fits, 3)
    objective.single_threaded_blas = keep
    if keep_f is not None:
        fitting.single_threaded_blas = keep_f

    print("| cost | earlier code | now | ratio |\n|---|---|---|---|")
    print(f"| successor draws, vocab 512, default language (same draws: {same}) | {old:.3f} s | {new:.3f} s | {new / old:.2f} |")
    print(f"| 48 small kaplan fits, BLAS limit | {per_fit:.2f} s | {cached:.2f} s | {cached / per_fit:.2f} |")


if __name__ == "__main__":
    main()
