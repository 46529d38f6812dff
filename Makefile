# The two commands for a fresh machine: `make demo` and `make test`. Everything else is a step of them.
PY ?= python3
CI_PY = .envs/ci/bin/python
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup setup-npu data noise demo test test-common test-ci smoke bench gpu-check clean help

help:
	@echo "make demo   - set up, build the digits data, train every recipe briefly, print banners + summary"
	@echo "make test   - set up and run every test suite (common/ and each recipe's tests/)"
	@echo "make setup  - build .envs/{ci,tf,torch,mindspore} (cached; a second run takes seconds)"
	@echo "make setup-npu - on an Ascend host with CANN: build .envs/torch-npu (README: On Ascend)"
	@echo "make data   - write data/digits in CIFAR-10, CIFAR-100 and ImageNet-folder formats"
	@echo "make smoke  - one short training + eval + export per recipe on the digits (smoke-<recipe>: one recipe)"
	@echo "make bench  - benchmark every recipe, write BENCHMARKS.md"
	@echo "make gpu-check - on a GPU machine: resnet50_cifar_pt speed vs the original + tests (prepare here first:"
	@echo "               bash ci/gpu_check.sh --prepare; carry ci/gpu_wheels/)"

setup:
	$(PY) ci/setup_envs.py

# torch + torch_npu for resnet50_cifar_pt; the TF adapter and MindSpore on Ascend are installed as README says
setup-npu:
	$(PY) ci/setup_envs.py torch-npu

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

test-ci: setup
	$(PY) ci/run_tests.py ci

# the environment each recipe's smoke needs (a per-directory CI job builds only that one and .envs/ci)
ENV_cspnet_tf1 = tf
ENV_cutmix_tf2 = tf
ENV_resnet50_cifar_pt = torch
ENV_sppnet_ms = mindspore
ENV_tinydarknet_ms = mindspore

smoke: setup data
	$(CI_PY) ci/smoke.py

smoke-%:
	@test -n "$(ENV_$*)" || { echo "make: no recipe '$*' (smoke-cspnet_tf1, smoke-cutmix_tf2, ...)"; exit 2; }
	$(PY) ci/setup_envs.py ci $(ENV_$*)
	$(CI_PY) ci/make_data.py
	$(CI_PY) ci/smoke.py $*

bench: setup
	$(CI_PY) ci/bench.py

# runs on the GPU machine, which has no registry: nothing from setup or data, only ci/gpu_wheels/
gpu-check:
	bash ci/gpu_check.sh

clean:  # measured records the docs cite live in docs/, which this never touches
	rm -rf data demo_output smoke_output bench_output */test/output
