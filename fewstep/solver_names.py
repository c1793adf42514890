"""The solver names and finish modes that recipes, params texts and the sampler nodes use.

They are public (saved in workflows and params texts). They live here, apart from the solvers, so that the
DPM++ and UniPC modules and the plan all import them from one place, one way.
"""

from __future__ import annotations

SOLVERS = ("dpmpp_1s", "dpmpp_2m")  # Few-Step DPM++ Sampler's choices
# UniPC as the F-scheduler recipes run it (noise form, bh1, order auto), without / with the analytical first step
UNIPC_SOLVERS = ("unipc", "unipc_afs")
SCHEDULE_SOLVERS = (*SOLVERS, *UNIPC_SOLVERS)  # what a recipe, the tuner and a params string can name
FINISH_LAST_SIGMA = "last_sigma"
FINISH_DENOISED = "denoised"
FINISHES = (FINISH_LAST_SIGMA, FINISH_DENOISED)
