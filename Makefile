# Streamfirst — the two commands of the README's quick start, and their helpers.
#   make demo   runs the main job on the embedded broker
#   make test   runs every test (what .ci/run calls)
# Both install what is missing first (Debian packages, a Python venv for the interop client).

SHELL := /bin/bash
SWIFT ?= swift
VENV := .venv
# What the build and the demo need (libjs-chart.js: the dashboard's chart library).
APT_PACKAGES := librdkafka-dev kcat pkg-config python3-venv libjs-chart.js
# What only the tests need: a headless browser for the dashboard test, an MQTT broker and its
# clients for the MQTT source's tests, openssl for their throw-away TLS CA.
TEST_APT_PACKAGES := chromium chromium-driver mosquitto mosquitto-clients openssl

.PHONY: bench-deps format lint json-schema-suite test-deps deps-test-system demo test test-asan test-tsan bench bench-alloc fuzz fuzz-build deps deps-system deps-python deps-postgres build build-release clean

deps: deps-system deps-python

test-deps: deps-test-system deps-python json-schema-suite

# Installs the Debian packages of $(1) that are missing (apt-get update first, once).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps-system:
	$(call apt_install,$(APT_PACKAGES))

deps-test-system: deps-system
	$(call apt_install,$(TEST_APT_PACKAGES))

deps-python:
	@if ! $(VENV)/bin/python -c 'import confluent_kafka.schema_registry.avro, kubernetes_validate, fastavro' >/dev/null 2>&1; then \
	  echo "installing the interop client (confluent-kafka with its Schema Registry serializers), the independent Avro codec (fastavro) and the Kubernetes manifest validator (kubernetes-validate) from PyPI into $(VENV)"; \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install -q 'confluent-kafka[avro,schemaregistry]>=2.3' 'fastavro>=1.9' 'kubernetes-validate>=1.31'; \
	fi

# The Python baseline of `streamfirst-bench stage` (scripts/bench-python-relay.py): orjson and
# fastjsonschema beside confluent-kafka, from PyPI.
bench-deps: deps-python
	@if ! $(VENV)/bin/python -c 'import orjson, fastjsonschema' >/dev/null 2>&1; then \
	  echo "installing the Python baseline's JSON libraries (orjson, fastjsonschema) from PyPI into $(VENV)"; \
	  $(VENV)/bin/pip install -q 'orjson>=3.9' 'fastjsonschema>=2.19'; \
	fi

# The official JSON-Schema-Test-Suite, from PyPI (python-jsonschema's sdist, pinned by version and
# hash) into .build/json-schema-test-suite, where the tests and `streamfirst conformance` look.
json-schema-suite: deps-python
	@bash scripts/fetch-json-schema-suite.sh .build/json-schema-test-suite $(VENV)/bin/python

build: deps-system
	$(SWIFT) build

build-release: deps-system
	$(SWIFT) build -c release

# Builds every executable (the demo starts the broker and the four workers as separate processes).
demo: build
	.build/debug/streamfirst demo

# PostgreSQL from Debian for the PostgreSQL sink's tests (installs and starts it if needed).
deps-postgres:
	@bash scripts/ensure-postgres.sh >/dev/null

# Formatting: .swift-format (swift-format ships with the toolchain as `swift format`). `make format`
# rewrites the sources in place; `make lint` (the first step of `make test`) fails on any file that
# `make format` would change, on any swift-format rule finding, and on any line over 140 columns
# (swift-format cannot break a long string literal or comment, so that check is ours), and on a
# broken link between the docs (scripts/check-doc-links.py).
FORMAT_PATHS := Package.swift Sources Tests
format:
	$(SWIFT) format format --in-place --recursive --parallel $(FORMAT_PATHS)

lint:
	$(SWIFT) format lint --strict --recursive --parallel $(FORMAT_PATHS)
	@long=$$(LC_ALL=C.UTF-8 grep -rnE --include='*.swift' '^.{141,}' Sources Tests | cut -c1-100); \
	if [ -n "$$long" ]; then echo "$$long"; echo "lines over 140 columns: break them (make lint)"; exit 1; fi
	@python3 scripts/check-doc-links.py

# The test run is watched (scripts/test-watchdog.sh): a hang fails after STREAMFIRST_TEST_TIMEOUT
# seconds (default 2400) naming the tests that never finished, with every thread's stack on file.
test: lint test-deps deps-postgres
	$(SWIFT) build --build-tests
	STREAMFIRST_PYTHON=$(CURDIR)/$(VENV)/bin/python \
	STREAMFIRST_POSTGRES_URL=$$(bash scripts/ensure-postgres.sh) \
	bash scripts/test-watchdog.sh $(SWIFT) test --skip-build --no-parallel
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

bench: deps-system bench-deps
	$(SWIFT) build -c release
	.build/release/streamfirst-bench client

# malloc calls and time per record on the hot path (ordo-one/malloc-interposer), only built with
# STREAMFIRST_BENCH=1, so the plain build and CI never fetch or compile the interposer. Same build
# folder: only the interposer and the benchmark executable are (re)built; the next plain build
# relinks the benchmark without it.
bench-alloc: deps-system
	STREAMFIRST_BENCH=1 $(SWIFT) build -c release --product streamfirst-bench
	.build/release/streamfirst-bench alloc $(ALLOC_ARGS)

# The whole test suite with AddressSanitizer (workers and broker included: the tests start the
# executables built next to them, in .build-asan). Not part of `make test` (it doubles the build).
test-asan: test-deps deps-postgres
	$(SWIFT) build --build-path .build-asan --build-tests -Xswiftc -sanitize=address
	ASAN_OPTIONS=detect_leaks=0 STREAMFIRST_PYTHON=$(CURDIR)/$(VENV)/bin/python \
	STREAMFIRST_POSTGRES_URL=$$(bash scripts/ensure-postgres.sh) \
	$(SWIFT) test --build-path .build-asan --skip-build --no-parallel

# ThreadSanitizer over the suites that do not load librdkafka: under TSan, Debian's uninstrumented
# librdkafka 2.0.2 crashes as soon as a client or the mock cluster starts (SEGV inside the TSan
# runtime), so the Kafka client, broker and worker-process suites cannot run here.
TSAN_SUITES := StreamCoreTests|ProcessingTests|ValidationTests|SQLiteSinkTests|PostgresSinkTests|NDJSONSinkTests|HTTPSourceTests|TailSourceTests|FileSourceTests|GeneratorSourceTests|PipelineTestRunnerTests|HostileInputTests|PipelineSpecTests
# Swift 5 language mode here only: under -sanitize=thread, Swift 6.3 rejects swift-otel 1.6.0's
# OTelBatchLogRecordProcessor ("sending 'logger' risks causing data races", a region-isolation
# error that the plain, release and ASan builds do not raise), and a dependency's sources cannot be
# changed. Our code is built in Swift 6 mode with zero warnings everywhere else.
TSAN_SWIFTC := -Xswiftc -sanitize=thread -Xswiftc -swift-version -Xswiftc 5
test-tsan: test-deps deps-postgres
	$(SWIFT) build --build-path .build-tsan --build-tests $(TSAN_SWIFTC)
	TSAN_OPTIONS=halt_on_error=1 STREAMFIRST_POSTGRES_URL=$$(bash scripts/ensure-postgres.sh) \
	$(SWIFT) test --build-path .build-tsan --skip-build --no-parallel --filter '$(TSAN_SUITES)'

# libFuzzer targets (Sources/Fuzz) built with -sanitize=fuzzer,address in .build-fuzz.
# `make fuzz` runs each target FUZZ_SECONDS (default 20: what CI runs); longer by
# `make fuzz FUZZ_SECONDS=600`. Corpora live in .build-fuzz/corpus (seeded from the repository),
# findings (crash-*, leak-*, oom-*) in .build-fuzz/findings; any finding fails the run.
FUZZ_TARGETS := json schema expression csv config avro avro-schema
FUZZ_SECONDS ?= 20
fuzz-build: deps-system
	STREAMFIRST_FUZZ=1 $(SWIFT) build --build-path .build-fuzz -c release -Xswiftc -sanitize=fuzzer,address --product streamfirst-fuzz

fuzz: fuzz-build
	@bash scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf .build .build-fuzz .build-asan .build-tsan $(VENV)
