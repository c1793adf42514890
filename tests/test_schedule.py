"""Every recipe's sigmas against an independent float64 derivation from RECIPES.md."""

import math

import numpy as np
import pytest
import torch

from fewstep.recipes import RECIPES, check_custom_parameters, recipe_for_step_count
from fewstep.schedule import (
    continuous_timestep,
    fewstep_sigmas,
    fewstep_timesteps,
    recipe_sigmas,
    schedule_problem,
    sigma_at_timestep,
    standard_sigma_table,
)

# Straight from RECIPES.md, in numpy, without the project's code.
BETAS = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000) ** 2
AC = np.cumprod(1.0 - BETAS)
SIGMAS = np.sqrt((1.0 - AC) / AC)


def reference_timesteps(N, n, rho, k, time_rho=1.2, denoise=1.0, ramp=None):
    smin, smax = SIGMAS[0], SIGMAS[-1]
    base = [(smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho for i in range(n)]
    log_table = np.log(SIGMAS)
    t_of = lambda s: np.interp(np.log(s), log_table, np.arange(1000.0))  # noqa: E731
    t_start, t_end = t_of(base[0]), t_of(base[k])
    t_start = t_end + denoise * (t_start - t_end)
    u = [j / N for j in range(N + 1)] if ramp is None else [0.0, *ramp, 1.0]  # a tuned recipe's step positions
    c = [(t_start ** (1 / time_rho) + uj * (t_end ** (1 / time_rho) - t_start ** (1 / time_rho))) ** time_rho
         for uj in u]
    return np.array(c)


def reference_schedule(N, n, rho, k, time_rho=1.2, denoise=1.0, ramp=None):
    c = reference_timesteps(N, n, rho, k, time_rho, denoise, ramp)
    out = []
    for cj in np.clip(c, 0, 999):
        lo, hi = int(np.floor(cj)), int(np.ceil(cj))
        ac = AC[lo] + (cj - lo) * (AC[hi] - AC[lo])
        out.append(np.sqrt((1 - ac) / ac))
    return np.array(out)


# Printed by reference_schedule above for each recipe (sanity pins; the SD1.5 5-step row is RECIPES.md's).
PINNED_VALUES = {
    "SD1.5 5-step": [14.6146, 4.51885, 1.96154, 1.00098, 0.501515, 0.132002],
    "SD1.5 6-step": [14.6146, 5.34094, 2.52301, 1.38770, 0.805211, 0.437411, 0.132002],
    "SD1.5 8-step": [14.6146, 6.71213, 3.60755, 2.17235, 1.40447, 0.936609, 0.616868, 0.372532, 0.147151],
    "SDXL 6-step": [14.6146, 5.34094, 2.52301, 1.38770, 0.805211, 0.437411, 0.132002],
    "SDXL 8-step": [14.6146, 6.54807, 3.46724, 2.06714, 1.32383, 0.871056, 0.559670, 0.317065, 0.0599527],
    # F-scheduler (RECIPES.md's sanity values for (6; 12, 12.0, 10), to its 5 digits: 5.2124 ... 0.0600)
    "SDXL 6-step UniPC": [14.6146, 5.21241, 2.43114, 1.32383, 0.755989, 0.393667, 0.0599527],
    "SDXL 8-step UniPC": [14.6146, 6.54807, 3.46724, 2.06714, 1.32383, 0.871056, 0.559670, 0.317065, 0.0599527],
    "SD1.5 5-step UniPC": [14.6146, 4.51885, 1.96154, 1.00098, 0.501515, 0.132002],
    "SD1.5 6-step UniPC": [14.6146, 5.34094, 2.52301, 1.38770, 0.805211, 0.437411, 0.132002],
    "SD1.5 8-step UniPC": [14.6146, 6.71213, 3.60755, 2.17235, 1.40447, 0.936609, 0.616868, 0.372532, 0.147151],
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_matches_independent_derivation(name):
    r = RECIPES[name]
    ours = recipe_sigmas(r, standard_sigma_table()).double().numpy()
    expected = reference_schedule(r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho, ramp=r.ramp)
    assert ours.shape == (r.steps + 1,)
    np.testing.assert_allclose(ours, expected, rtol=2e-6)
    if r.ramp is None:  # the paper's recipes (the flow ones are tuned: fewstep/recipes.py has their numbers)
        np.testing.assert_allclose(ours, PINNED_VALUES[name], rtol=1e-5)


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_from_float32_model_table(name):
    """ComfyUI stores its sigma table in float32; the schedule must not care."""
    r = RECIPES[name]
    ours = recipe_sigmas(r, standard_sigma_table().float()).double().numpy()
    np.testing.assert_allclose(ours, reference_schedule(r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho,
                                                        ramp=r.ramp), rtol=1e-5)


def test_schedule_shape_and_order():
    for r in RECIPES.values():
        s = recipe_sigmas(r, standard_sigma_table())
        assert s.dtype == torch.float32
        assert torch.all(s[1:] < s[:-1]) and s[-1] > 0  # descending, no zero appended: NFE = N
        assert abs(float(s[0]) - SIGMAS[-1]) < 1e-4


def test_table_matches_recipes_md():
    table = standard_sigma_table()
    assert abs(float(table[0]) - 0.0291672) < 1e-6 and abs(float(table[-1]) - 14.6146) < 1e-4


def test_timestep_round_trip():
    table = standard_sigma_table()
    # log-sigma interpolation inverted against the reference's alphas_cumprod interpolation: equal at integers
    ints = torch.tensor([0.0, 17.0, 500.0, 999.0], dtype=torch.float64)
    assert torch.allclose(continuous_timestep(sigma_at_timestep(ints, table), table), ints, atol=1e-9)
    # between integers, alphas_cumprod (ours, the reference's) and log-sigma (ComfyUI's) interpolation
    # differ by about 0.2% from t ~ 3 up (RECIPES.md, step 4; measured: 0.32% at t = 3, 0.05% at t = 10)
    grid = torch.linspace(3.0, 999.0, 20001, dtype=torch.float64)
    log_sigma = np.interp(grid.numpy(), np.arange(1000.0), np.log(SIGMAS))
    gap = np.abs(sigma_at_timestep(grid, table).numpy() / np.exp(log_sigma) - 1.0)
    assert 1e-4 < gap.max() < 3.5e-3


@pytest.mark.parametrize("denoise", [0.3, 0.55, 0.8])
def test_denoise_starts_lower_in_timestep_space(denoise):
    r = RECIPES["SD1.5 5-step"]
    ours = recipe_sigmas(r, standard_sigma_table(), denoise=denoise).double().numpy()
    full = recipe_sigmas(r, standard_sigma_table()).double().numpy()
    np.testing.assert_allclose(ours, reference_schedule(5, 8, 5.0, 6, denoise=denoise), rtol=2e-6)
    assert len(ours) == len(full) and ours[0] < full[0] and abs(ours[-1] - full[-1]) < 1e-6
    log_table = np.log(SIGMAS)
    t_end = np.interp(np.log(full[-1]), log_table, np.arange(1000.0))
    t_start = np.interp(np.log(ours[0]), log_table, np.arange(1000.0))
    assert abs((t_start - t_end) / (999 - t_end) - denoise) < 2e-3


def test_custom_parameters_equal_named_recipe():
    r = RECIPES["SD1.5 8-step"]
    table = standard_sigma_table()
    assert torch.equal(fewstep_sigmas(table, 8, 12, 7.0, 9, 1.2), recipe_sigmas(r, table))


def test_scheduler_family_by_step_count():
    assert recipe_for_step_count(5).base_rho == 5.0 and recipe_for_step_count(7).end_index == 6
    assert recipe_for_step_count(8).base_rho == 7.0 and recipe_for_step_count(20).end_index == 9
    table = standard_sigma_table()
    assert torch.equal(recipe_sigmas(recipe_for_step_count(6), table), recipe_sigmas(RECIPES["SD1.5 6-step"], table))


@pytest.mark.parametrize("args, name", [
    ((0, 8, 5.0, 6, 1.2), "steps"), ((5, 1, 5.0, 6, 1.2), "base_steps"), ((5, 8, 0.0, 6, 1.2), "base_rho"),
    ((5, 8, 5.0, 8, 1.2), "end_index"), ((5, 8, 5.0, 0, 1.2), "end_index"), ((5, 8, 5.0, 6, 0.0), "time_rho"),
])
def test_bad_custom_parameters_are_named(args, name):
    message = check_custom_parameters(*args)
    assert message.startswith(name + " = ") and "allowed" in message
    if name == "end_index":
        with pytest.raises(ValueError, match="end_index"):
            fewstep_sigmas(standard_sigma_table(), *args)


def test_good_custom_parameters_pass():
    assert check_custom_parameters(5, 8, 5.0, 7, 1.2, 1.0) is None
    assert "denoise" in check_custom_parameters(5, 8, 5.0, 6, 1.2, 0.0)


@pytest.mark.parametrize("name", list(RECIPES))
def test_timesteps_are_the_standard_schedules_whatever_the_table(name):
    """The rule for patched models: the timesteps come from the standard schedule, only the table differs.
    A table whose last sigma is 4518.8 (as zero-terminal SNR makes it) and whose others are standard gives
    the standard schedule except its first sigma, which is the table's own (t = 999)."""
    r = RECIPES[name]
    args = (r.steps, r.base_steps, r.base_rho, r.end_index, r.time_rho, 1.0, r.ramp)
    np.testing.assert_allclose(fewstep_timesteps(*args).numpy(), reference_timesteps(*args), rtol=1e-9)
    table = standard_sigma_table()
    table[-1] = 4518.76
    ours, standard = fewstep_sigmas(table, *args), recipe_sigmas(r, standard_sigma_table())
    assert float(ours[0]) == pytest.approx(4518.76, rel=1e-6)
    assert torch.equal(ours[1:], standard[1:])


def test_a_table_not_indexed_by_the_1000_training_timesteps_is_refused():
    with pytest.raises(ValueError, match="50 entries; it must give the sigma of each of the 1000 training timesteps"):
        fewstep_sigmas(standard_sigma_table()[19::20], 5, 8, 5.0, 6)


def test_schedule_problem_threshold_is_one_ten_thousandth_in_log_sigma():
    assert schedule_problem(torch.tensor([2.0, 2.0 * math.exp(-1.01e-4), 0.1])) is None
    assert "step 1 of 2 does not lower sigma by at least 0.01 %" in schedule_problem(
        torch.tensor([2.0, 2.0 * math.exp(-0.99e-4), 0.1], dtype=torch.float64))
    assert schedule_problem(torch.tensor([2.0, 0.5, 0.0]), final_zero=True) is None
    assert schedule_problem(torch.tensor([2.0, 0.5, 0.0])) == "sigmas[2] = 0; sigmas must be finite and above 0"
    assert schedule_problem(torch.tensor([2.0, 0.0, 0.0]), final_zero=True).startswith("sigmas[1] = 0")
    assert schedule_problem(torch.tensor([])) == "it is empty"
    assert schedule_problem(torch.tensor([1.0, 2.0, 1.5, 1.6, 1.0, 1.1, 0.5, 0.6, 0.2])) == (
        "steps 1, 3, 5, 7 of 8 do not lower sigma by at least 0.01 % (step 1: sigma 1 -> 2); a schedule must "
        "descend strictly, each step by at least 0.01 % (log-sigma 1e-4), the least that float32 sigmas and the "
        "solvers resolve")


def test_the_issue_example_repeats_a_sigma_in_float32():
    """steps 100, base_steps 3, base_rho 1.0, end_index 2, time_rho 10: many copies of sigma_min at the end."""
    sigmas = fewstep_sigmas(standard_sigma_table(), 100, 3, 1.0, 2, 10.0)
    assert (sigmas[-9:] == sigmas[-1]).all() and float(sigmas[-1]) == pytest.approx(0.0291672, rel=1e-5)
    assert schedule_problem(sigmas).startswith("steps 78 to 100 of 100 do not lower sigma by at least 0.01 %")
