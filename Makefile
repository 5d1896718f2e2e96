# The two commands a newcomer runs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install tools images image-tools clean

# pip's output goes to a log (shown only when it fails), so the test output stays readable.
PIPLOG := $(VENV)/pip-install.log
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (CPU torch first, then the project with its extras); log: $(PIPLOG)"
	@$(PY) -m pip install -q --upgrade pip > $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	@# The CPU build first: an unpinned torch would pull a multi-GB CUDA build.
	@$(PY) -m pip install -q torch==2.13.0 >> $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	@$(PY) -m pip install -q -e '.[trainer,sandbox,test]' >> $(PIPLOG) 2>&1 || { cat $(PIPLOG); exit 1; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ftjob demo

# The monitoring tests run the real Prometheus and promtool (Debian's prometheus package).
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "make test needs promtool: install Debian's prometheus package (sudo apt-get install prometheus)"; exit 1; fi; }

test: $(STAMP) tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# The operator and trainer images (images/build.sh): docker build where a Docker engine runs; otherwise
# buildah without a daemon, on bases made locally with debootstrap when no registry can be reached.
image-tools:
	@{ command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; } || { command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null; \
	  else echo "make images needs Docker, or buildah and debootstrap (sudo apt-get install buildah debootstrap)"; exit 1; fi; }

images: image-tools
	images/build.sh

clean:
	rm -rf $(VENV) .sandbox
