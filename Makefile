# Entry points. `make test` is what CI runs; it sets up everything it needs first.
SHELL := /bin/bash
PYTHON ?= python3
# Debian releases to test in Molecule: debian13 (the stable release) by default; `make matrix`
# runs all three (scenario day2 has a relay of each release in every run).
DISTROS ?= debian13
# Molecule scenarios to run (default: all of molecule/*/ but shared).
SCENARIOS ?=
export PATH := $(CURDIR)/.venv/bin:$(PATH)
timed = start=$$(date +%s); $(1); rc=$$?; echo "[test] $(2): $$(( $$(date +%s) - start )) s"; exit $$rc

.PHONY: setup lint unit molecule test matrix bench bench-converge demo demo-clean clean

setup: ## Debian packages, Docker daemon, .venv and the test images (no-op when in place)
	@$(call timed,$(PYTHON) -m tooling.setup.bootstrap --distros "$(DISTROS)",setup)

lint: setup ## yamllint, ansible-lint (production profile) and ruff
	@$(call timed,yamllint --strict . && ansible-lint && ruff check .,lint)

unit: setup ## pytest unit tests of the Python tooling
	@$(call timed,pytest tests,unit tests)

molecule: setup ## every Molecule scenario on $(DISTROS)
	@$(call timed,python -m tooling.setup.scenarios --distros "$(DISTROS)" $(SCENARIOS),molecule)

test: lint unit molecule ## everything CI runs

matrix: ## the whole suite on Debian 11, 12 and 13
	$(MAKE) test DISTROS="debian11 debian12 debian13"

bench: setup ## pacing benchmark (not part of test): drain time and logins, paced and unpaced
	python -m tooling.bench.pacing

bench-converge: setup ## converge benchmark (not part of test): fresh and re-run time, module executions, 10 relays
	python -m tooling.bench.converge

demo: setup ## a relay container and the fake QQ upstream: site.yml, a test mail, what QQ got
	python -m tooling.setup.demo up

demo-clean: ## remove the demo's containers and network
	python -m tooling.setup.demo down

clean: ## remove the venv and the scenario containers (images stay)
	-docker ps -aq --filter label=owner=molecule | xargs -r docker rm -f
	rm -rf .venv
