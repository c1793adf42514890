"""The few-step method in plain PyTorch: recipes, schedule, solvers, the FreeU filter, the plan that ties them
together for one request (``plan.py``) and the schedule tuner (see ../docs/ARCHITECTURE.md).

Nothing in this package imports ComfyUI, so every piece can be tested and read on its own
against ../shared/RECIPES.md (the paper "Hyperparameters are all you need", arXiv 2510.02390).
"""
