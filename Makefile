# Targets shared by the team; add yours below (small, additive edits).

.PHONY: test check deploy-check deploy-tools checkov-venv packer

CHECKOV_VERSION := 3.3.30

# Every test, including the offline deploy checks (tests/test_deploy_*.py), whose tools
# deploy-tools installs first so none of them is skipped.
# (venv and lint first; pytest's exit 5, "no tests collected", fails the target too.)
# --durations: the 15 slowest tests at the end, so the next slow one is seen when it lands.
# Two workers (pytest-xdist), each test module on the worker of its local cloud (the groups:
# tests/conftest.py cloud_groups), so no cloud starts twice and the waits of one worker's
# end-to-end tests overlap the other's work. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: venv lint deploy-tools node-install-tools browser-tools published-spec
	.venv/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15

# Before every commit (target: 90 s in all): lint, then every test that needs no emulator, local
# cloud, browser or real ComfyUI, chosen by marker, less the offline deploy checks (their tools
# take a minute: `make deploy-check`); a test that starts the local cloud without its marker
# fails here (COMFYBURST_TESTS_NO_LOCALCLOUD).
CHECK_MARKERS := not emulator and not e2e and not slow and not real_comfyui and not browser
check: lint
	COMFYBURST_TESTS_NO_LOCALCLOUD=1 .venv/bin/pytest -q -m "$(CHECK_MARKERS)" \
		--ignore-glob='tests/test_deploy_*.py' --durations=10

# Only the offline deploy checks: HCL parses, terraform fmt, checkov, shellcheck,
# packer validate, the providers' and the Packer plugin's schemas, the pipeline's dry run,
# wiring between terraform, the image and the code.
deploy-check: deploy-tools
	.venv/bin/pytest tests/test_deploy_*.py

deploy-tools: checkov-venv packer

# checkov's dependencies replace python-hcl2's `hcl2` package: keep it in its own venv.
checkov-venv: .venv-checkov/bin/checkov

.venv-checkov/bin/checkov:
	python3 -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet checkov==$(CHECKOV_VERSION)

# Packer for `packer validate`: a Packer already on PATH (Cloud Build puts the pinned one in
# /workspace/bin), else Debian 12's 1.6.6 (Debian 13 has no packer package); tests/test_deploy_tools.py
# validates with either.
packer:
	@command -v packer >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q -o DPkg::Lock::Timeout=300 packer; }

# --- Foundation: venv, local cloud, lint, bench ---------------------------------------------

.PHONY: venv up down status lint bench demo chaos

PYTHON ?= python3
VENV_STAMP := .venv/.installed
# Every package mypy checks (`make lint`); strictness per module is in pyproject.toml.
MYPY_PATHS := functions/comfyburst functions/main.py gpu_image/worker/comfyburst_worker \
	comfy_node cli/comfyburst_cli localcloud tools

venv: $(VENV_STAMP)

# Reinstalled only when a requirement or package definition changes.
$(VENV_STAMP): requirements-dev.txt functions/requirements.txt pyproject.toml \
		functions/pyproject.toml functions/setup.py functions/core/pyproject.toml gpu_image/worker/pyproject.toml
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/pip install --quiet -r requirements-dev.txt
	.venv/bin/pip install --quiet --no-deps -e functions -e gpu_image/worker -e .
	touch $@

# The local cloud on fixed ports; `source .localcloud/env` to use it.
up: venv
	.venv/bin/python -m localcloud up

down:
	.venv/bin/python -m localcloud down

status:
	.venv/bin/python -m localcloud status

# node-core: the node imports its generated core copy (mypy reads it).
lint: venv node-core
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy $(MYPY_PATHS)

# Every tests/bench/bench_*.py as a module, then one combined report in .bench/.
bench: venv
	@failed=""; for f in tests/bench/bench_*.py; do \
		m=$$(basename $$f .py); echo "== $$m"; .venv/bin/python -m tests.bench.$$m || failed="$$failed $$m"; \
	done; \
	.venv/bin/python -m tests.bench._report; \
	if [ -n "$$failed" ]; then echo "benchmarks that did not finish:$$failed"; exit 1; fi

# One job through the whole local cloud, narrated; outputs in ./demo-output/. COMFYUI_URL=…
# drives a real ComfyUI instead of the stand-in.
demo: venv
	.venv/bin/python -m localcloud.scenarios.demo

# 500 jobs on up to 8 Spot VMs made on demand (3 zones, 2 regions) under injected faults;
# table + .bench/chaos.json. CHAOS_ARGS="--jobs 50".
chaos: venv
	.venv/bin/python -m localcloud.scenarios.chaos $(CHAOS_ARGS)

# Three callers (one queues 10x the others) on two GPU classes, one full: per caller and class
# the wait to start (max, p50, p95) and lost jobs, under fair share and under the old FIFO order,
# side by side; table + .bench/fair_pool.json. FAIR_POOL_ARGS="--heavy-jobs 40 --work-s 1".
.PHONY: fair-pool
fair-pool: venv
	.venv/bin/python -m localcloud.scenarios.fair_pool $(FAIR_POOL_ARGS)

# --- The node in a browser (tests/test_comfy_node_browser.py, tools/screenshots.py) ----------

.PHONY: browser-tools

# Headless Chromium, Debian's package, driven over the DevTools protocol.
browser-tools:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -q && apt-get install -y -q chromium; }

# --- The ComfyUI node as users install it (tests/test_node_install.py) ------------------------

.PHONY: node-install-tools comfy-cli-venv node-core node-pack node-wheelhouse

COMFY_CLI_VERSION := 1.23.0

# The install test packs the node with comfy-cli and installs its requirements as a user's
# ComfyUI does, from wheels this step resolves from the package index pip is configured with
# (so every requirement is published; the test itself stays on this machine, --no-index).
node-install-tools: comfy-cli-venv node-core node-wheelhouse

# `comfy node pack` builds the registry's package; comfy-cli lives in its own venv (its pins
# are not ours).
comfy-cli-venv: .venv-comfycli/bin/comfy

.venv-comfycli/bin/comfy:
	python3 -m venv .venv-comfycli
	.venv-comfycli/bin/pip install --quiet comfy-cli==$(COMFY_CLI_VERSION)

# The node's requirements as the index resolves them today, and each at its floor (the ranges
# are honest), plus the numpy and pillow ComfyUI's environment has.
NODE_STANDIN_DEPS := $(shell grep -E '^(numpy|pillow)==' requirements-dev.txt)
NODE_FLOORS = $(shell sed -nE 's/^([A-Za-z0-9_.-]+)>=([^,]+),.*/\1==\2/p' comfy_node/requirements.txt)
node-wheelhouse: .wheelhouse/.stamp

.wheelhouse/.stamp: comfy_node/requirements.txt requirements-dev.txt
	.venv/bin/pip download --quiet -d .wheelhouse -r comfy_node/requirements.txt $(NODE_STANDIN_DEPS)
	.venv/bin/pip download --quiet -d .wheelhouse $(NODE_FLOORS)
	touch $@

# The core the node ships under a private name (comfy_node/_vendor/, git-ignored), generated
# from functions/comfyburst/ whenever a core module changes; the node imports it from there.
node-core: comfy_node/_vendor/__init__.py

comfy_node/_vendor/__init__.py: tools/vendor_core.py functions/core/pyproject.toml \
		$(wildcard functions/comfyburst/*.py)
	python3 -m tools.vendor_core

# The registry's package, comfy_node/node.zip: a fresh core copy (no caches), then the pack.
node-pack: comfy-cli-venv
	python3 -m tools.vendor_core
	cd comfy_node && ../.venv-comfycli/bin/comfy --skip-prompt --no-enable-telemetry node pack

# --- Bake rehearsal: the image's scripts and units in a fresh Debian root (root; ~15 min) ----

.PHONY: bake-rehearsal bake-tools

# COMFYUI_SRC=/path/to/ComfyUI uses a local checkout instead of the ComfyUI stand-in;
# BAKE_OLD_WORKER=1 runs the pre-fix 04-worker.sh (the rehearsal must fail then).
bake-rehearsal: venv bake-tools
	.venv/bin/python -m tests.bake.rehearsal

bake-tools:
	@for t in debootstrap patchelf nft; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then apt-get update -q && apt-get install -y -q -o DPkg::Lock::Timeout=300 debootstrap patchelf nftables; fi

# --- The Cloud Build pipeline's steps (deploy/*.sh), the same scripts cloudbuild.yaml runs ------

.PHONY: pipeline-dry-run bootstrap image schema-check provider-schema

# Every step in --dry-run mode, in the pipeline's order (prints what would talk to Google Cloud):
#   make pipeline-dry-run PROJECT_ID=my-project TF_STATE_BUCKET=my-project-tfstate
PIPELINE_ENV = PROJECT_ID=$(PROJECT_ID) NAME_PREFIX=$(or $(NAME_PREFIX),comfyburst) \
	REGION=$(or $(REGION),us-central1) ZONES=$(or $(ZONES),us-central1-a,us-central1-b) \
	TF_STATE_BUCKET=$(TF_STATE_BUCKET) API_INVOKERS=$(API_INVOKERS) \
	WORKSPACE=$(CURDIR)/build/pipeline
pipeline-dry-run:
	$(PIPELINE_ENV) sh deploy/packer-binary.sh --dry-run
	$(PIPELINE_ENV) sh deploy/terraform-binary.sh --dry-run
	$(PIPELINE_ENV) sh deploy/test.sh --dry-run
	$(PIPELINE_ENV) sh deploy/image-decision.sh --dry-run
	$(PIPELINE_ENV) sh deploy/terraform-init.sh --dry-run
	$(PIPELINE_ENV) sh deploy/terraform-bootstrap.sh --dry-run
	$(PIPELINE_ENV) sh deploy/bake.sh --dry-run
	$(PIPELINE_ENV) sh deploy/terraform-plan.sh --dry-run
	$(PIPELINE_ENV) sh deploy/terraform-apply.sh --dry-run

# First deployment: only what the image build needs (docs/DEPLOY.md, step 3).
bootstrap:
	$(PIPELINE_ENV) sh deploy/terraform-bootstrap.sh

# Bake the GPU image from a workstation exactly as the pipeline does (docs/DEPLOY.md, step 5).
image:
	$(PIPELINE_ENV) BUILD_IMAGE=true sh deploy/image-decision.sh
	$(PIPELINE_ENV) sh deploy/bake.sh

# Every argument and block of terraform/ against the pinned providers' schemas (offline).
schema-check: venv
	.venv/bin/python -m tests.deploy.provider_schema

# Regenerate tests/deploy/provider_schema.json after moving a provider pin (downloads the
# prebuilt provider packages with pip).
provider-schema: venv
	.venv/bin/python -m tests.deploy.extract_provider_schema

# --- The published Comfy API v2 contract (tests/test_api_v2_published.py) --------------------

.PHONY: published-spec

# spec/openapi.yaml ships only in the source distribution of the pinned comfy-sdk: pip fetches
# that pin, the file is extracted to .published-spec/ (ignored); nothing of it is committed.
COMFY_SDK_PIN = $(shell grep -E '^comfy-sdk==' requirements-dev.txt)
published-spec: .published-spec/openapi.yaml

.published-spec/openapi.yaml: requirements-dev.txt
	rm -rf .published-spec && mkdir -p .published-spec
	.venv/bin/pip download --quiet --no-deps --no-binary :all: -d .published-spec $(COMFY_SDK_PIN)
	tar -xmzf .published-spec/comfy_sdk-*.tar.gz -C .published-spec --strip-components=2 \
		--wildcards '*/spec/openapi.yaml'
	test -s $@
