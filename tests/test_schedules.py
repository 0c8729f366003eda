"""LR schedules: boundary values, warmup, monotonicity, final values, WSD stable-phase identity."""
import math

import numpy as np
import pytest

from train.config import ScheduleConfig
from train.schedules import lr_at, lr_curve

PEAK = 1e-2


def sched(**kw) -> ScheduleConfig:
    return ScheduleConfig(**kw)


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear", "wsd", "inv_sqrt"])
def test_warmup_is_linear_from_zero_to_peak(kind):
    s = sched(kind=kind, warmup_steps=10)
    lrs = lr_curve(100, PEAK, s)
    np.testing.assert_allclose(lrs[:10], PEAK * np.arange(1, 11) / 10)
    assert lrs[9] == pytest.approx(PEAK)
    assert lrs.max() == pytest.approx(PEAK)


@pytest.mark.parametrize("kind", ["constant", "cosine", "linear", "wsd", "inv_sqrt"])
def test_lr_at_matches_lr_curve(kind):
    s = sched(kind=kind, warmup_steps=5, final_frac=0.05, decay_frac=0.3, decay_shape="sqrt")
    lrs = lr_curve(57, PEAK, s)
    assert [lr_at(i, 57, PEAK, s) for i in range(1, 58)] == lrs.tolist()


def test_constant():
    assert np.all(lr_curve(50, PEAK, sched(kind="constant")) == PEAK)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_cosine_and_linear_decay_monotonically_to_final_frac(kind):
    s = sched(kind=kind, warmup_steps=4, final_frac=0.1)
    lrs = lr_curve(200, PEAK, s)
    assert np.all(np.diff(lrs[3:]) < 0)
    assert lrs[-1] == pytest.approx(0.1 * PEAK)
    mid = lr_at(4 + 98, 200, PEAK, s)  # halfway through the decay
    assert mid == pytest.approx(0.55 * PEAK)


def test_cosine_shape_value():
    s = sched(kind="cosine", final_frac=0.0)
    # a quarter of the way: (1 + cos(pi/4)) / 2
    assert lr_at(25, 100, PEAK, s) == pytest.approx(PEAK * (1 + math.cos(math.pi / 4)) / 2)


@pytest.mark.parametrize("shape", ["linear", "sqrt", "cosine"])
def test_wsd_stable_then_decay_to_final(shape):
    s = sched(kind="wsd", warmup_steps=5, decay_frac=0.2, final_frac=0.0, decay_shape=shape)
    lrs = lr_curve(100, PEAK, s)
    assert np.all(lrs[4:80] == PEAK)            # steps 5..80 = T(1 - decay_frac)
    assert lrs[80] < PEAK                        # step 81 already decays
    assert np.all(np.diff(lrs[79:]) < 0)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-15)


def test_wsd_sqrt_shape_is_one_minus_sqrt():
    s = sched(kind="wsd", decay_frac=0.5, final_frac=0.0, decay_shape="sqrt")
    # step 75 of 100: progress p = 25/50 through the decay
    assert lr_at(75, 100, PEAK, s) == pytest.approx(PEAK * (1 - math.sqrt(0.5)))


@pytest.mark.parametrize("shape", ["linear", "sqrt", "cosine"])
def test_wsd_stable_phase_is_identical_across_totals(shape):
    """A cooldown branched from a long stable run reproduces a from-scratch short run exactly."""
    s = sched(kind="wsd", warmup_steps=7, decay_frac=0.25, decay_shape=shape, final_frac=0.1)
    long = lr_curve(1000, PEAK, s)
    for short in (40, 123, 400, 999):
        stable_end = int(short * (1 - 0.25))
        a = lr_curve(short, PEAK, s)
        assert np.array_equal(a[:stable_end], long[:stable_end])
        assert np.all(a[7:stable_end] == PEAK)


def test_inv_sqrt_continuous_after_warmup_and_decays():
    s = sched(kind="inv_sqrt", warmup_steps=16)
    lrs = lr_curve(256, PEAK, s)
    assert lrs[15] == pytest.approx(PEAK)
    assert lr_at(64, 256, PEAK, s) == pytest.approx(PEAK * math.sqrt(16 / 64))
    assert np.all(np.diff(lrs[15:]) < 0)


def test_inv_sqrt_with_explicit_timescale_never_exceeds_peak():
    s = sched(kind="inv_sqrt", warmup_steps=2, timescale=10)
    lrs = lr_curve(100, PEAK, s)
    assert lrs.max() == pytest.approx(PEAK)
    assert lr_at(40, 100, PEAK, s) == pytest.approx(PEAK * 0.5)


def test_out_of_range_step_is_an_error():
    with pytest.raises(ValueError, match="step"):
        lr_at(0, 10, PEAK, sched())
    with pytest.raises(ValueError, match="step"):
        lr_at(11, 10, PEAK, sched())


def test_schedules_module_is_torch_free():
    import subprocess
    import sys
    code = "import sys, train.schedules, train.rundir, train.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
