# One command sets everything up on a fresh machine and runs the tests:  make test
# COMFYUI_PATH=/path/to/ComfyUI make test   runs them against another ComfyUI instead of PINNED.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: test test-fast demo bench bench-quality bench-flow bench-learned bench-speed bench-freeu bench-tuner train-proxies clean

# The venv holds the Python requirements of the ComfyUI it was made for (0.3.64 imports av, PINNED does not): one stamp
# per ComfyUI, PINNED or each COMFYUI_PATH, so that `COMFYUI_PATH=... make test` after `make test` installs what
# that ComfyUI needs instead of failing on an import.
INSTALLED := $(VENV)/.installed-$(if $(COMFYUI_PATH),$(shell printf '%s' '$(COMFYUI_PATH)' | cksum | cut -d' ' -f1),pinned)

$(INSTALLED): requirements-dev.txt scripts/install_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH="$(TORCH)" bash scripts/install_env.sh
	touch $@

# The e2e tests and the rest in two pytest processes at once (scripts/run_tests.py): on 2 cores PINNED 369 s against
# 490 s one after the other, 0.3.64 486 s against 843-904 s (2026-12-06, fresh clones); each prints its own summary,
# the exit status is the worse of the two.
test: $(INSTALLED)
	$(PY) scripts/run_tests.py $(PYTEST_ARGS)

# While editing: the tests that need no ComfyUI server and no full-size checkpoint (not marked e2e: the maths, the
# nodes on a tiny UNet inside ComfyUI, params, the tuner on analytic models, the workflows' JSON), on two workers.
test-fast: $(INSTALLED)
	$(PY) -m pytest tests -m "not e2e" -n 2 $(PYTEST_ARGS)

# Runs a bundled workflow on your checkpoint next to 20-step DPM++2M Karras; with no checkpoint, on random weights
# (timings and evaluation counts only). See scripts/demo.py --help.
demo: $(INSTALLED)
	$(PY) scripts/demo.py $(DEMO_ARGS)

# All benchmarks (CPU): the quality proxy (docs/quality.md, docs/quality.png; three analytic models and four trained
# proxies, tuned and learned rows: 26 min on PINNED, 27 min on 0.3.64, each alone on 2 cores, 2026-12-06), speed
# (docs/speed.md, 6-8 min) and the FreeU filter table. Each prints its tables.
bench: bench-quality bench-speed
	$(PY) benchmarks/freeu_speed.py --filters-only --threads 1 $(BENCH_ARGS)

bench-quality: $(INSTALLED)
	$(PY) benchmarks/quality.py $(QUALITY_ARGS)

# The quality benchmark on flow-matching models (docs/quality_flow.md, docs/quality_flow.png): SD3- and Flux-form
# analytic models and the trained photo_flow against every core pair on their own model sampling. Needs ComfyUI 0.3.64
# or later (PINNED has no flow model sampling): COMFYUI_PATH=/path/to/ComfyUI make bench-flow. Not in `bench`.
bench-flow: $(INSTALLED)
	$(PY) benchmarks/quality_flow.py $(FLOW_ARGS)

bench-speed: $(INSTALLED)
	$(PY) benchmarks/speed.py $(SPEED_ARGS)

# The tuner's search, new against old (docs/tuner_search.md; 7-19 min on 2 shared cores, 2026-12-02). Not in `bench`.
bench-tuner: $(INSTALLED)
	$(PY) benchmarks/tuner_search.py --no-trained $(TUNER_ARGS)

# The learned solver weights and model times (issue 24) on the trained proxies photo_eps and digits_cond (cfg 5), NFE
# 5 / 6 / 8, against the schedule alone: FD / RMS on 1024 noises used by no tuning and the DPM++2M Karras steps with
# equal FD / RMS (docs/learned.md, measured on all four proxies with LEARNED_ARGS="--models photo_eps digits_cond_cfg5
# photo_v_zsnr digits_cond_cfg1 --learn-seconds 60": 47 min on 2 shared cores). Not in `bench`.
bench-learned: $(INSTALLED)
	$(PY) benchmarks/learned.py $(LEARNED_ARGS)

# Retrains the quality benchmark's proxy denoisers (benchmarks/proxies/README.md) from their fixed seed on CPU and
# rewrites benchmarks/proxies/weights/ (safetensors + manifest.json with their SHA-256): a few minutes per proxy on 2 cores.
train-proxies: $(INSTALLED)
	$(PY) scripts/train_proxies.py $(TRAIN_ARGS)

bench-freeu: $(INSTALLED)
	$(PY) benchmarks/freeu_speed.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .comfyui
