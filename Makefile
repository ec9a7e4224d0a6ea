# The README's two commands. Both set everything up from scratch on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test venv lint clean bench bench-serve bench-detection bench-explain

$(STAMP): pyproject.toml hydra_plugins/visionauto_sweeper/__init__.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m visionauto.demo

test: $(STAMP)
	$(PY) -m pytest -m "not gpu and not network"

lint: $(STAMP)
	$(VENV)/bin/ruff check visionauto hydra_plugins tests scripts
	$(VENV)/bin/ruff format --check visionauto hydra_plugins tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_classification.py
	$(PY) scripts/bench_sweep.py

bench-serve: $(STAMP)
	$(PY) scripts/bench_serve.py

# Fridge photos (10 min budget per model), evaluation speed, instance segmentation; ~45 min.
# bf16-mixed pays off on CPUs with AVX512-BF16 or AMX (drop it elsewhere).
bench-detection: $(STAMP)
	$(PY) scripts/bench_detection_eval.py
	$(PY) scripts/bench_detection.py
	$(PY) scripts/bench_detection.py --model yolov5 --epochs 85 training.model_size=small trainer.precision=bf16-mixed
	$(PY) scripts/bench_detection.py --model yolov5 --epochs 170 training.model_size=nano trainer.precision=bf16-mixed
	$(PY) scripts/bench_detection.py --model yolov5_efficientnet_lite0 --epochs 55 training.model_size=small trainer.precision=bf16-mixed
	$(PY) scripts/bench_segmentation.py

bench-explain: $(STAMP)
	$(PY) scripts/bench_explain.py

clean:
	rm -rf $(VENV) outputs multirun
