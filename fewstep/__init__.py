"""The few-step method in plain PyTorch: recipes, schedule, solvers and the FreeU filter.

Nothing in this package imports ComfyUI, so every piece can be tested and read on its own
against ../shared/RECIPES.md (the paper "Hyperparameters are all you need", arXiv 2510.02390).
"""
