"""Run a plan's solver over a schedule: DPM++ (``solvers.py``) or UniPC (``unipc.py``), k-diffusion signature.

``model(x, sigma * s_in, **extra_args)`` returns the data prediction D (guidance applied), as ComfyUI's
KSAMPLER gives it.
"""

from __future__ import annotations

import torch

from .learned import PRECONDITIONINGS, Preconditioning, active, at_model_time, sample_weighted
from .noise_forms import NOISE_FORM_EPS
from .params import PREDICTION_DATA
from .plan import Solver, solver_named
from .solver_names import FINISH_LAST_SIGMA
from .solvers import sample_fewstep
from .unipc import sample_unipc


def sample(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
           disable: bool | None = None, solver: Solver = Solver(), sigma_table: torch.Tensor | None = None,
           preconditioning: Preconditioning | None = None) -> torch.Tensor:
    """Run ``solver`` over ``sigmas``, stepping in its ``noise_form``. ``sigma_table``, the model's sigma at each
    training timestep, places the AFS midpoint of UniPC with ``afs`` (default: the standard SD1.x / SDXL table in
    the eps form, the unshifted flow time t = sigma in the const form). A solver with a non-zero ``model_time``
    tells the network shifted times (``learned.at_model_time``) through ``preconditioning``, the model's c_in,
    c_skip and c_out (default: eps prediction in the eps form, flow in the const form); one with non-zero
    ``weights``, or DPM++ with ``afs`` or the noise prediction, is the weighted multistep solver
    (``learned.sample_weighted``). Without either: the solver itself."""
    dpmpp_afs = solver.afs and not solver.unipc  # the weighted solver's analytical first step: one more step
    for name, values, count in (("weights", solver.weights, len(sigmas) - 1 + dpmpp_afs),
                                ("model_time", solver.model_time, len(sigmas) - 1)):
        if active(values) and len(values) != count:
            more = " (weights: one more with afs=1, the analytical first step)" if dpmpp_afs else ""
            raise ValueError(f"{name} has {len(values)} steps but the SIGMAS have {len(sigmas) - 1}{more}: use the "
                             "params text's schedule (Few-Step Sigmas with the same text) or one with as many steps")
    if active(solver.model_time):
        model = at_model_time(model, solver.model_time, preconditioning or PRECONDITIONINGS[solver.noise_form],
                              solver.noise_form)
    if active(solver.weights) or dpmpp_afs or (not solver.unipc and solver.weighted_prediction != PREDICTION_DATA):
        if solver.unipc:
            raise ValueError("weights are offsets from a DPM++ solver's weights; UniPC takes none")
        return sample_weighted(model, x, sigmas, extra_args, callback, disable, base=solver.name,
                               weights=solver.weights if active(solver.weights) else None, finish=solver.finish,
                               noise_form=solver.noise_form, afs=dpmpp_afs, sigma_table=sigma_table,
                               prediction=solver.weighted_prediction)
    if not solver.unipc:
        return sample_fewstep(model, x, sigmas, extra_args, callback, disable, solver=solver.name,
                              finish=solver.finish, noise_form=solver.noise_form)
    return sample_unipc(model, x, sigmas, extra_args, callback, disable, order=solver.order, variant=solver.variant,
                        afs=solver.afs, finish=solver.finish, prediction=solver.prediction, sigma_table=sigma_table,
                        noise_form=solver.noise_form)


def sample_solver(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
                  disable: bool | None = None, solver: str = "dpmpp_1s", finish: str = FINISH_LAST_SIGMA,
                  sigma_table: torch.Tensor | None = None, noise_form: str = NOISE_FORM_EPS) -> torch.Tensor:
    """``sample`` with the solver by the name a recipe, a params text or the tuner gives it (SCHEDULE_SOLVERS),
    stepping in ``noise_form`` (``eps`` or ``const``)."""
    return sample(model, x, sigmas, extra_args, callback, disable, solver_named(solver, finish, noise_form=noise_form),
                  sigma_table)
