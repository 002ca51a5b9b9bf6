# The workflows, by name. `make demo` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data

.PHONY: dev demo serve test unit integration e2e model finetune views detector eval vgg16-baseline bench-search clean layers synth infra-tests cold-start deploy

$(BIN)/.installed: pyproject.toml setup.py layers/shazzam/_l1kernel.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

dev: $(BIN)/.installed  ## install the library, its CLI and the test tools into .venv

demo: dev  ## the whole pipeline on the bundled sample shop, a search, then the API (DEMO_ARGS=--no-serve to exit)
	$(BIN)/shazzam demo $(DEMO_ARGS)

serve: dev  ## the API on 127.0.0.1:8000 with the schedules running
	$(BIN)/shazzam serve

# The CDK CLI from npm (package-lock.json) for the `cdk synth` test, installed wherever npm is;
# without it that test skips (fails in CI, where npm is part of the contract).
NPM_SETUP := $(if $(shell command -v npm 2>/dev/null),node_modules/.installed)

test: dev $(VENV)-train/.installed $(NPM_SETUP)  ## every test: unit, integration (MariaDB, moto), end to end, browser, CDK (synth with the CLI too), the training scripts
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: dev
	$(BIN)/python -m pytest -q tests/unit

integration: dev
	$(BIN)/python -m pytest -q tests/integration

e2e: dev
	$(BIN)/python -m pytest -q tests/e2e

$(VENV)-train/.installed: training/requirements.txt
	$(PYTHON) -m venv $(VENV)-train
	$(VENV)-train/bin/pip install -q torch==2.13.0
	$(VENV)-train/bin/pip install -q -r training/requirements.txt
	$(VENV)-train/bin/pip install -q --no-deps efficientnet-lite-pytorch==0.1.0
	$(VENV)-train/bin/pip install -q --no-deps -e .
	touch $@

model: $(VENV)-train/.installed  ## rebuild layers/models/garment_v0.tflite (torch lives only in .venv-train; a rebuild that differs from it is refused, EXPORT_ARGS=--replace)
	$(VENV)-train/bin/python training/export_embedder.py --data $(DATA)/clothing-dataset-small --out layers/models $(EXPORT_ARGS)

# A rebuild is a new network with vectors of its own, so it is exported under a new name (the index
# re-embeds only when the model's name changes; the export refuses a name already taken by another network).
GARMENT_NAME ?= garment_v6
# EXPORT_ARGS=--replace overwrites a model of that name that another run exported.
finetune: $(VENV)-train/.installed  ## train garment_v5's recipe and export it as layers/models/$(GARMENT_NAME).* (about 40 minutes on 2 cores; serve it with SHAZZAM_MODEL=$(GARMENT_NAME))
	$(VENV)-train/bin/python training/train_embedder.py --data $(DATA)/clothing-dataset-small --run-dir build/$(GARMENT_NAME)
	$(VENV)-train/bin/python training/train_embedder.py --run-dir build/$(GARMENT_NAME) --export layers/models --name $(GARMENT_NAME) $(EXPORT_ARGS)

views: dev  ## compare the serving views of the garment model on CCP garment crops it never saw (about 4 minutes)
	$(BIN)/python training/choose_views.py --ccp $(DATA)/ccp --data $(DATA)/clothing-dataset-small

# detector_v2's recipe: the CPU one (the encoder's blocks 0-10 frozen and cached), seed 20261129.
DETECTOR_ARGS ?= --frozen-blocks 11 --epochs 16 --weight-power 0.25 --product-views 1 --clothing-weight 0.1 --seed 20261129
DETECTOR_NAME ?= detector_v3
detector: $(VENV)-train/.installed  ## train detector_v2's recipe and export it as layers/models/$(DETECTOR_NAME).* (1-2 hours on 2 cores; serve it with SHAZZAM_DETECTOR=$(DETECTOR_NAME))
	$(VENV)-train/bin/python training/train_detector.py --ccp $(DATA)/ccp --clothing $(DATA)/clothing-dataset-small --run-dir build/$(DETECTOR_NAME) $(DETECTOR_ARGS)
	$(VENV)-train/bin/python training/train_detector.py --run-dir build/$(DETECTOR_NAME) --export layers/models --name $(DETECTOR_NAME) $(EXPORT_ARGS)

VGG16_BASELINE ?= build/vgg16_fc7.tflite

$(VGG16_BASELINE): training/export_vgg16_baseline.py | $(VENV)-train/.installed
	$(VENV)-train/bin/python training/export_vgg16_baseline.py --out $@

vgg16-baseline: $(VGG16_BASELINE)  ## the VGG16 fc7 .tflite (random weights, ~540 MB, ignored by git) that `shazzam eval` times against

eval: dev $(VGG16_BASELINE)  ## the serving model vs garment_v0 on the test split: retrieval, classifier, robustness, speed, size vs the targets (EVAL_ARGS=--json ...)
	$(BIN)/shazzam eval --data $(DATA)/clothing-dataset-small --ccp $(DATA)/ccp --vgg16 $(VGG16_BASELINE) --out build/eval $(EVAL_ARGS)


bench-search: dev  ## exact L1 search: ours vs the original's method vs FAISS (10k, 100k, 1M items)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/shazzam bench search $(BENCH_ARGS)

layers: dev  ## build the Lambda layers in build/layers (library + C kernel, deps from cdk/requirements-lambda.txt for Python 3.12, models) and print their sizes; LAYERS_ARGS=--lock refreshes the lock
	$(BIN)/python cdk/build_layers.py $(LAYERS_ARGS)

node_modules/.installed: package.json package-lock.json
	npm ci --no-fund --no-audit
	touch $@

synth: layers node_modules/.installed  ## `cdk synth` offline into cdk.out (with cdk-nag), then cfn-lint the template
	npx cdk synth --quiet
	$(BIN)/cfn-lint --ignore-checks W3005 -- cdk.out/Shazzam.template.json

infra-tests: dev $(NPM_SETUP)  ## the template, cdk-nag and cfn-lint tests, and `cdk synth` with the CLI (tests/infrastructure)
	$(BIN)/python -m pytest -q tests/infrastructure

cold-start: layers  ## each handler's cold import and the search function's first request, from the built layers
	$(BIN)/python cdk/measure_cold_start.py $(COLD_START_ARGS)

deploy: synth  ## deploy to the AWS account of the current credentials (cdk bootstrap once per account/region first)
	npx cdk deploy --require-approval broadening $(DEPLOY_ARGS)

clean:
	rm -rf .shazzam .pytest_cache
