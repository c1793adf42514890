# One command sets everything up on a fresh machine and runs the tests:  make test
# COMFYUI_PATH=/path/to/ComfyUI make test   runs them against another ComfyUI instead of PINNED.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: test test-sdxl demo bench-freeu clean

$(VENV)/.installed: requirements-dev.txt scripts/install_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH="$(TORCH)" bash scripts/install_env.sh
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Adds the full SDXL random-weight checkpoint load (about 20 GB RAM, 7 GB in the cache, minutes).
test-sdxl: $(VENV)/.installed
	FEWSTEP_SDXL_TEST=1 $(PY) -m pytest tests/test_random_checkpoint.py $(PYTEST_ARGS)

# Runs a bundled workflow on your checkpoint next to 20-step DPM++2M Karras (see scripts/demo.py --help)
demo: $(VENV)/.installed
	$(PY) scripts/demo.py $(DEMO_ARGS)

bench-freeu: $(VENV)/.installed
	$(PY) benchmarks/freeu_speed.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .comfyui
