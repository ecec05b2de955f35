"""ase_search.callplan: the call numbering of reuse/forecast intervals and the forecast."""

from __future__ import annotations

import pytest
import torch

from ase_search.callplan import CallNumbering, PlannedCall, call_plan, forecast
from ase_search.schedule import ExitSchedule

UNEVEN = (0.93, 0.71, 0.58, 0.31)  # uneven spacings, as DPM-Solver++ or searched timesteps make


@pytest.mark.parametrize("order", [1, 2])
def test_a_polynomial_of_the_forecast_order_is_forecast_exactly(order):
    """A residual that is exactly linear (order 1) or quadratic (order 2) in t is extrapolated
    without error, from refreshes at uneven times, to times past and between them."""
    gen = torch.Generator().manual_seed(0)
    coef = [torch.randn(3, 5, generator=gen, dtype=torch.float64) for _ in range(order + 1)]

    def f(t):
        return sum(c * t ** k for k, c in enumerate(coef))

    history = [(t, f(t)) for t in UNEVEN]
    for t in (0.2, 0.0, 0.45, 1.0):
        torch.testing.assert_close(forecast(history, t, order), f(t), rtol=0, atol=1e-12)
    # one order less is not exact on it (the test can fail)
    assert not torch.allclose(forecast(history, 0.0, order - 1), f(0.0), atol=1e-3)


def test_order_one_is_taylorseers_backward_difference_and_order_zero_the_last_refresh():
    history = [(0.8, 2.0), (0.6, 5.0)]
    assert forecast(history, 0.5, 1) == pytest.approx(5.0 + (5.0 - 2.0) / (0.6 - 0.8) * -0.1)
    assert forecast(history, 0.5, 0) == 5.0
    # fewer refreshes than the order asks for: as many as there are
    assert forecast(history[-1:], 0.1, 2) == 5.0
    with pytest.raises(ValueError, match="refresh first"):
        forecast([], 0.5, 1)
    with pytest.raises(ValueError, match="distinct times"):
        forecast([(0.5, 1.0), (0.5, 2.0)], 0.4, 1)


def test_the_numbering_refreshes_after_the_warm_up_every_period():
    # one forecasting interval over [0.2, 1] at 3 blocks, period 3, two warm-up refreshes; ten
    # DDIM-like calls at 900 ... 0 (the last two, t < 0.2, skip down to 5 blocks)
    s = ExitSchedule("dit", 6, (0.0, 0.2, 1.0), (5, 3), modes=("skip", "forecast"),
                     periods=(1, 3), orders=(0, 2), warmup=2)
    plan = call_plan(s, [900.0 - 100 * i for i in range(10)])
    refresh = [c.refresh for c in plan[:8]]
    assert refresh == [True, True, True, False, False, True, False, False]
    assert plan[3] == PlannedCall(3, True, False, 2, False)
    assert plan[8] == PlannedCall(5, False, False, 0, True)  # entering the skip interval
    # the same numbering one call at a time, as the diffusers hooks use it
    numbering = CallNumbering(s)
    assert [numbering.next(900.0 - 100 * i) for i in range(10)] == plan
    # without a warm-up, the old reuse numbering: j % period == 0
    plain = call_plan(ExitSchedule("dit", 6, (0.0, 1.0), (3,), modes=("reuse",), periods=(3,)),
                      [900.0 - 100 * i for i in range(7)])
    assert [c.refresh for c in plain] == [True, False, False, True, False, False, True]
