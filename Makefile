# Three environments, kept apart: Airflow side (.venv), dbt (.venv-dbt), training image (.venv-train).
PYTHON ?= python3.11
RECSYS_HOME ?= $(CURDIR)/.recsys
export RECSYS_HOME

VENV := .venv
DBT_VENV := .venv-dbt
TRAIN_VENV := .venv-train
MANIFEST := dbt/target/manifest.json

.PHONY: help venvs test test-unit test-training demo serve bench lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venvs: $(VENV)/.ok $(DBT_VENV)/.ok $(TRAIN_VENV)/.ok $(MANIFEST)  ## create the three environments

$(VENV)/.ok: requirements/airflow.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements/airflow.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

$(DBT_VENV)/.ok: requirements/dbt.txt
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install --quiet -r requirements/dbt.txt
	touch $@

$(TRAIN_VENV)/.ok: training_image/requirements-cpu.txt training_image/requirements-test.txt training_image/pyproject.toml
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install --quiet -r training_image/requirements-cpu.txt -r training_image/requirements-test.txt
	$(TRAIN_VENV)/bin/pip install --quiet --no-deps -e training_image
	touch $@

# Cosmos renders the DAG from dbt's manifest, so parsing the DAG stays fast.
$(MANIFEST): $(DBT_VENV)/.ok $(shell find dbt \( -name '*.sql' -o -name '*.yml' \) -not -path 'dbt/target/*')
	cd dbt && ../$(DBT_VENV)/bin/dbt parse --profiles-dir . --quiet
	touch $@

test: venvs  ## run every test (unit, integration, training image, end to end)
	$(VENV)/bin/pytest tests --ignore=tests/training_image
	$(TRAIN_VENV)/bin/pytest tests/training_image

test-unit: venvs  ## the fast tests only
	$(VENV)/bin/pytest tests/unit
	$(TRAIN_VENV)/bin/pytest tests/training_image

demo: venvs  ## one nightly run on local defaults (DATE=YYYY-MM-DD to pick the day)
	$(VENV)/bin/python -m recsys.demo $(if $(DATE),--date $(DATE))

serve: venvs  ## serve the current champion of RECSYS_HOME on port 8081
	mkdir -p $(RECSYS_HOME)/endpoint
	$(TRAIN_VENV)/bin/serve --port 8081 --model-dir $(RECSYS_HOME)/endpoint/current

bench: venvs  ## model quality against the oracle and the popularity baseline, serving latency
	$(VENV)/bin/python -m recsys.bench

lock:  ## re-resolve requirements/*.txt from requirements/*.in
	$(PYTHON) -m venv /tmp/recsys-lock && /tmp/recsys-lock/bin/pip install --quiet -r requirements/airflow.in \
	  && /tmp/recsys-lock/bin/pip freeze > requirements/airflow.txt && rm -rf /tmp/recsys-lock

clean:  ## remove the demo's state (RECSYS_HOME) and dbt's build output
	rm -rf $(RECSYS_HOME) dbt/target dbt/logs
