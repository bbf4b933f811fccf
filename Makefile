# Thin wrappers over CMake and the scripts in tools/. `make run` and `make test` are all a new
# user types: both install missing dependencies first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1

.PHONY: all deps configure build run test test-asan fuzz bench experiment1 experiment1-sweep experiment1-plain experiment2 clean

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

# AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU code, running the unit, model and
# e2e tests. Leak checking is off: Open MPI and HDF5 keep allocations until exit by design.
ASAN_BUILD ?= build-asan
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DOPD_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS="$(SANITIZE)" -DCMAKE_EXE_LINKER_FLAGS="$(SANITIZE)"
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest -L "unit|model|e2e" --output-on-failure -j $(JOBS) --timeout 900

# Every libFuzzer target of tests/fuzz for FUZZ_SECONDS each (clang build in $(BUILD)/fuzz); prints
# runs, corpus size and findings per target. `make test` runs each for 6 s (ctest label fuzz).
FUZZ_SECONDS ?= 60
fuzz: deps
	tools/fuzz --build $(BUILD)/fuzz --seconds $(FUZZ_SECONDS)

# `make run` builds only the binary it runs: on the CPU (DEVICE=cpu, the default) without CUDA, in
# a build folder of its own, so a fresh clone compiles no test and no CUDA object before its result.
DEVICE ?= cpu
RUN_BUILD = $(if $(filter cuda,$(DEVICE)),$(BUILD),$(BUILD)-cpu)
RUN_CMAKE_FLAGS = $(if $(filter cuda,$(DEVICE)),,-DOPD_CUDA=OFF)
run: deps
	cmake -S . -B $(RUN_BUILD) $(RUN_CMAKE_FLAGS) $(CMAKE_FLAGS)
	cmake --build $(RUN_BUILD) -j $(JOBS) --target opd
	DEVICE=$(DEVICE) tools/run-demo $(RUN_BUILD)/opd

# Experiment 1: every method at its chosen learning rate, seed 1 (README). The sweep (three
# learning rates per method, then three seeds of each best) is the separate, hours-long target; the
# plain-arith comparison on the shipped pair is kept as the negative control.
experiment1: deps build
	tools/experiment1 --opd $(BUILD)/opd --out $(BUILD)/experiment1

experiment1-sweep: deps build
	tools/experiment1 --opd $(BUILD)/opd --out $(BUILD)/experiment1-sweep --sweep

experiment1-plain: deps build
	tools/experiment1-plain --opd $(BUILD)/opd --out $(BUILD)/experiment1-plain

experiment2: deps build
	tools/experiment2 --opd $(BUILD)/opd --out $(BUILD)/experiment2

bench: build
	$(BUILD)/opd bench model

clean:
	rm -rf $(BUILD) $(BUILD)-cpu $(ASAN_BUILD)
