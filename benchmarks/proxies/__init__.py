"""Trained proxy denoisers for the quality benchmark: small UNets on SD1.5's table, loadable as real ComfyUI models
(``models`` what each is, ``network`` the pure-torch net, ``data`` scikit-learn's data, ``comfy_model`` the loader)."""
