# The two commands for a fresh machine: `make demo` and `make test`. Everything else is a step of them.
PY ?= python3
CI_PY = .envs/ci/bin/python
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup data noise demo test test-common bench clean help

help:
	@echo "make demo   - set up, build the digits data, train every recipe briefly, print banners + summary"
	@echo "make test   - set up and run every test suite (common/ and each recipe's tests/)"
	@echo "make setup  - build .envs/{ci,tf,torch,mindspore} (cached; a second run takes seconds)"
	@echo "make data   - write data/digits in CIFAR-10, CIFAR-100 and ImageNet-folder formats"
	@echo "make bench  - benchmark every recipe, write BENCHMARKS.md"

setup:
	$(PY) ci/setup_envs.py

data: setup
	$(CI_PY) ci/make_data.py

noise: setup
	$(CI_PY) ci/make_data.py --noise

demo: setup data
	$(CI_PY) ci/demo.py

test: setup data
	$(PY) ci/run_tests.py

test-common: setup
	$(PY) ci/run_tests.py common

bench: setup
	$(CI_PY) ci/bench.py

clean:
	rm -rf data demo_output bench_output */test/output
