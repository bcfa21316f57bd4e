# mpidask: `make run` and `make test` are all a user needs on a fresh Debian machine.
#
#   make run              build and run the Monte-Carlo Pi example (the seed's dask.array
#                         workload, 1 and 10 GB) under mpirun -np 4
#   make test             the whole suite (unit, doc, and integration tests under mpirun, on
#                         one node and across 3 imitated ones), then the integration tests
#                         again over TCP and under MPICH (test-tcp, test-mpich)
#   make bench            every benchmark (median of 5 runs each, baselines and the Python
#                         peers in the same run; figures also in target/bench/results.json);
#                         `make bench BENCH=tasks_per_s` for one
#   make bench-smoke      every benchmark once at tiny sizes, answers checked (part of make test)
#   make deps             install Open MPI, MPICH, libclang, pkg-config, OpenBLAS, libhdf5 and libnetcdf with apt-get if missing
#                         (make test-deps adds Chromium, which a test renders the report in)
#   make lint             rustfmt, clippy and rustdoc checks (part of make test)
#   make install PREFIX=/opt/mpidask
#                         install the mpidask command and a modulefile (Lmod or Tcl
#                         modules: module use $(PREFIX)/modulefiles; module load mpidask)
#   make nodes            imitate NODES (3) cluster nodes on this machine (network and UTS
#                         namespaces on a private bridge) for the multi-node tests (nodes-stop)
#   make slurm            start a local Slurm for the batch tests: one node, plus a slurmd
#                         on each imitated node when they are up (slurm-stop)
#   make fuzz             fuzz the message and file decoders for FUZZ_SECONDS (default 60)

SHELL := /bin/bash
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
CARGO ?= cargo
NP ?= 4
BENCH ?=
FUZZ_SECONDS ?= 60
NODES ?= 3
PI_ARGS ?= --sizes-gb 1,10
# A Python with numpy, used by the test that reads arrays stored with to_npy_dir.
PYENV := $(CURDIR)/target/pyenv
export MPIDASK_TEST_PYTHON := $(PYENV)/bin/python

# Open MPI refuses to run as root without these; more ranks than cores need oversubscription.
ifeq ($(shell id -u),0)
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
endif
export OMPI_MCA_rmaps_base_oversubscribe := 1

APT_PACKAGES := openmpi-bin libopenmpi-dev mpich libmpich-dev libclang-dev clang pkg-config libopenblas-dev \
  libhdf5-dev libnetcdf-dev
# Only the tests need these: Chromium renders the HTML report, `script` gives a terminal,
# environment-modules loads the installed modulefile.
TEST_PACKAGES := chromium bsdutils environment-modules
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all install deps test-deps test-install pyenv nodes nodes-stop slurm slurm-stop build run test test-tcp test-mpich lint bench bench-smoke fuzz peers clean

all: build

# $(call apt_install,PACKAGES): apt-get install the packages that are missing.
define apt_install
	@missing=""; \
	for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q $$missing || \
	    { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }; \
	fi
endef

deps:
	$(call apt_install,$(APT_PACKAGES))
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

test-deps: deps
	$(call apt_install,$(TEST_PACKAGES))

# NODES imitated nodes node1..nodeN (tests/multinode.rs; docs/multinode.md).
nodes:
	$(SUDO) bash scripts/start-nodes.sh $(NODES)

nodes-stop:
	$(SUDO) bash scripts/stop-nodes.sh

# A local Slurm (munge, slurmctld, slurmd from Debian packages) for tests/slurm.rs; its
# node advertises 8 CPUs so 4-rank jobs fit on a 2-core machine. With the imitated nodes
# up, each gets a slurmd of its own too (partition `nodes`).
slurm:
	$(SUDO) env LOCAL_SLURM_CPUS=8 LOCAL_SLURM_NODES=$$(cat $${MPIDASK_NODES_DIR:-/run/mpidask-nodes}/count 2>/dev/null || echo 0) \
	  bash scripts/start-local-slurm.sh

slurm-stop:
	$(SUDO) bash scripts/stop-local-slurm.sh

# NumPy, Dask, Zarr, h5py, netCDF4, xarray and scikit-learn for the tests that compare with them (the versions of the peers'
# venv, ../shared/peers/requirements.txt).
PYENV_PACKAGES := numpy==2.4.6 dask==2026.8.0 toolz==1.2.0 cloudpickle==3.1.3 \
  fsspec==2026.9.0 partd==1.4.2 locket==1.0.0 PyYAML==6.0.4 packaging==26.4 click==8.5.1 \
  importlib_metadata==10.2.0 zipp==4.1.2 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
  google-crc32c==1.9.0 typing_extensions==4.16.0 h5py==3.16.0 netCDF4==1.7.5.1.post1 \
  cftime==1.6.6.1 certifi==2026.10.19.post1 xarray==2026.9.0 pandas==3.1.1 \
  python-dateutil==4.0.0 tzdata==2026.6 scikit-learn==1.9.1 scipy==1.17.1 joblib==1.6.0 \
  threadpoolctl==3.8.0

pyenv:
	@$(PYENV)/bin/python -c 'import numpy, dask.array, zarr, h5py, netCDF4, xarray, sklearn' 2>/dev/null || \
	  { python3 -m venv $(PYENV) && $(PYENV)/bin/pip install -q $(PYENV_PACKAGES); }

build: deps
	$(CARGO) build --release --bins --examples

# The source goes to PREFIX/share/mpidask/source as `cargo package` lists it (the crate a
# registry would get): what `mpidask new` projects depend on.
install: build
	install -d $(PREFIX)/bin $(PREFIX)/modulefiles/mpidask $(PREFIX)/share/mpidask
	install -m 0755 target/release/mpidask $(PREFIX)/bin/mpidask
	$(CARGO) package --no-verify --allow-dirty --offline --quiet
	rm -rf $(PREFIX)/share/mpidask/source && mkdir -p $(PREFIX)/share/mpidask/source
	tar -xzf target/package/mpidask-$(VERSION).crate --strip-components=1 -C $(PREFIX)/share/mpidask/source
	sed -e 's|@PREFIX@|$(abspath $(PREFIX))|g' -e 's|@VERSION@|$(VERSION)|g' \
	  jobscripts/modulefile.tcl > $(PREFIX)/modulefiles/mpidask/$(VERSION)
	@echo "installed: module use $(abspath $(PREFIX))/modulefiles && module load mpidask"

run: build
	mpirun -np $(NP) target/release/examples/pi $(PI_ARGS)

# The library is linted twice: with every target (tests and benches turn the `internals`
# feature on) and alone, as users build it; its documentation must build without warnings.
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --lib -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --release --no-deps

# A test binary that exits early with code 0 would pass unnoticed: every binary cargo runs
# must also report its result line.
test: test-deps pyenv nodes slurm lint
	@mkdir -p target
	set -o pipefail; $(CARGO) test --release 2>&1 | tee target/test.log
	@started=$$(grep -cE '^running [0-9]+ tests?$$' target/test.log); \
	reported=$$(grep -c '^test result: ' target/test.log); \
	[ "$$started" = "$$reported" ] || \
	  { echo "$$started test runs started but $$reported reported a result: one exited early (see target/test.log)"; exit 1; }
	$(MAKE) test-install bench-smoke test-tcp test-mpich
	@# The imitated nodes go; Slurm stays, with its one node.
	$(MAKE) nodes-stop slurm

# make install into a scratch prefix, then `module load mpidask` and run the command.
INSTALL_CHECK := $(CURDIR)/target/install-check
test-install: test-deps
	rm -rf $(INSTALL_CHECK)
	$(MAKE) install PREFIX=$(INSTALL_CHECK)
	bash -c 'source /usr/share/modules/init/bash && module use $(INSTALL_CHECK)/modulefiles && \
	  module load mpidask && [ "$$(command -v mpidask)" = $(INSTALL_CHECK)/bin/mpidask ] && \
	  [ "$$MPIDASK_HOME" = $(INSTALL_CHECK) ] && mpidask exit-codes | grep "^ *9 " >/dev/null' && \
	  echo "test-install: module load mpidask gives $(INSTALL_CHECK)/bin/mpidask"
	rm -rf $(INSTALL_CHECK)/new && mkdir -p $(INSTALL_CHECK)/new
	cd $(INSTALL_CHECK)/new && env -u MPIDASK_SOURCE $(INSTALL_CHECK)/bin/mpidask new demo >/dev/null && \
	  grep -qF 'path = "$(INSTALL_CHECK)/share/mpidask/source"' demo/Cargo.toml && \
	  echo "test-install: mpidask new depends on the installed source"

# The integration tests with Open MPI's shared-memory transport off: every byte between
# ranks goes over TCP, as between nodes.
test-tcp: test-deps
	OMPI_MCA_btl=self,tcp $(CARGO) test --release --test mpi --test bad_input

# The integration tests with the project built against MPICH (its own target directory)
# and launched by MPICH's mpiexec, without the default features (no test it runs reads a
# store or a frame, so Polars, zarrs and HDF5 are not built twice). Only the examples those
# tests launch are built.
test-mpich: test-deps
	MPICC=mpicc.mpich $(CARGO) build --release --target-dir target-mpich --no-default-features \
	  --example pi --example pi_futures --example wordcount
	MPICC=mpicc.mpich MPIDASK_TEST_MPI=mpich $(CARGO) test --release --target-dir target-mpich --no-default-features --test mpi --test bad_input
	@# Not the lost node: Hydra's mpiexec fails at once (exit 255) and kills every rank
	@# (docs/multinode.md).
	MPICC=mpicc.mpich MPIDASK_TEST_MPI=mpich $(CARGO) test --release --target-dir target-mpich --no-default-features --test multinode -- --skip lost_node

# The peers (dask-mpi, mpi4py) come from the shared folder's venv, made if missing.
BENCH_RESULTS := $(CURDIR)/target/bench/results.json
bench: deps peers nodes
	@mkdir -p target/bench && rm -f $(BENCH_RESULTS)
	@# The dataframe bench's Polars baseline is a program of its own.
	$(CARGO) build --profile bench --example taxi_polars
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench runtime -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench scheduler -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench pi -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench bags -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench arrays -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench numerics -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench ml -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench futures -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench multinode -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench stores -- $(BENCH)
	MPIDASK_BENCH_RESULTS=$(BENCH_RESULTS) $(CARGO) bench --bench dataframes -- $(BENCH)
	@echo "figures: $(BENCH_RESULTS)"

# Each benchmark once at tiny sizes (seconds): the bench code and its answer checks run, so
# they cannot rot; no speed is asserted. The peers are not needed. Built with the release
# profile the tests use (not the bench profile's one codegen unit), so nothing is built twice.
SMOKE_RESULTS := $(CURDIR)/target/bench/smoke.json
bench-smoke: deps nodes
	@mkdir -p target/bench && rm -f $(SMOKE_RESULTS)
	$(CARGO) build --release --example taxi_polars
	for b in runtime scheduler pi bags arrays numerics ml futures multinode stores dataframes; do \
	  MPIDASK_BENCH_SMOKE=1 MPIDASK_BENCH_RESULTS=$(SMOKE_RESULTS) $(CARGO) bench --profile release --bench $$b || exit 1; \
	done

# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode -- -max_total_time=$(FUZZ_SECONDS)

# The Python peers (dask-mpi, mpi4py) that the benchmarks compare against, if the shared
# folder is there.
peers:
	../shared/peers/setup-peers.sh

clean:
	$(CARGO) clean
