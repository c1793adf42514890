"""Run a plan's solver over a schedule: DPM++ (``solvers.py``) or UniPC (``unipc.py``), k-diffusion signature.

``model(x, sigma * s_in, **extra_args)`` returns the data prediction D (guidance applied), as ComfyUI's
KSAMPLER gives it.
"""

from __future__ import annotations

import torch

from .plan import Solver, solver_named
from .solver_names import FINISH_LAST_SIGMA
from .solvers import sample_fewstep
from .unipc import sample_unipc


def sample(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
           disable: bool | None = None, solver: Solver = Solver(), sigma_table: torch.Tensor | None = None
           ) -> torch.Tensor:
    """Run ``solver`` over ``sigmas``. ``sigma_table``, the model's sigma at each training timestep, places the
    AFS midpoint of UniPC with ``afs`` (default: the standard SD1.x / SDXL table)."""
    if not solver.unipc:
        return sample_fewstep(model, x, sigmas, extra_args, callback, disable, solver=solver.name,
                              finish=solver.finish)
    table = {} if sigma_table is None else {"sigma_table": sigma_table}
    return sample_unipc(model, x, sigmas, extra_args, callback, disable, order=solver.order, variant=solver.variant,
                        afs=solver.afs, finish=solver.finish, prediction=solver.prediction, **table)


def sample_solver(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None, callback=None,
                  disable: bool | None = None, solver: str = "dpmpp_1s", finish: str = FINISH_LAST_SIGMA,
                  sigma_table: torch.Tensor | None = None) -> torch.Tensor:
    """``sample`` with the solver by the name a recipe, a params text or the tuner gives it (SCHEDULE_SOLVERS)."""
    return sample(model, x, sigmas, extra_args, callback, disable, solver_named(solver, finish), sigma_table)
