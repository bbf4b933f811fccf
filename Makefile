# Thin wrappers over CMake and the scripts in tools/. `make run` and `make test` are all a new
# user types: both install missing dependencies first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1

.PHONY: all deps configure build run test bench experiment1 experiment2 clean

all: build

deps:
	@tools/install-deps

$(BUILD)/CMakeCache.txt:
	@tools/install-deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

run: deps build
	tools/run-demo $(BUILD)/opd

experiment1: deps build
	tools/experiment1 --opd $(BUILD)/opd --out $(BUILD)/experiment1

experiment2: deps build
	tools/experiment2 --opd $(BUILD)/opd --out $(BUILD)/experiment2

bench: build
	$(BUILD)/opd bench model

clean:
	rm -rf $(BUILD)
