# One command sets everything up on a fresh machine and runs the tests:  make test
# COMFYUI_PATH=/path/to/ComfyUI make test   runs them against another ComfyUI instead of PINNED.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: test bench-freeu clean

$(VENV)/.installed: requirements-dev.txt scripts/install_env.sh
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH="$(TORCH)" bash scripts/install_env.sh
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench-freeu: $(VENV)/.installed
	$(PY) benchmarks/freeu_speed.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .comfyui
