# One image for every stage: the worker is chosen by the command (ingest, validate, process,
# persist, dashboard — which serves Chart.js from Debian's libjs-chart.js) and configured by --pipeline / PIPELINE plus environment variables (KAFKA_BROKERS, …).
#   docker build -t streamfirst .
#   docker run --rm -e KAFKA_BROKERS=kafka:9092 streamfirst validate

# --- build: the Swift toolchain and librdkafka's headers ---------------------------------------
FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends librdkafka-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Resolve dependencies in their own layer so that source edits do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib \
      --product ingest --product validate --product process --product persist --product dashboard --product streamfirst \
 && mkdir /out \
 && for exe in ingest validate process persist dashboard streamfirst; do cp .build/release/$exe /out/; done

# --- runtime: Debian slim, librdkafka's shared library, an unprivileged user ------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends librdkafka1 libjs-chart.js ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/streamfirst streamfirst
COPY --from=build /out/ /usr/local/bin/
COPY pipelines /etc/streamfirst/pipelines
USER streamfirst
WORKDIR /var/lib/streamfirst
ENV PIPELINE=/etc/streamfirst/pipelines/iot-sensors.yaml \
    STREAMFIRST_STATE_DIR=/var/lib/streamfirst/state \
    LOG_FORMAT=json
# Health, readiness, Prometheus metrics and /stats; the stage's default port is overridden here so
# every container listens on the same one.
# Workers bind their HTTP endpoints to loopback unless told otherwise; in a container they must
# be reachable by the orchestrator and Prometheus.
ENV HTTP_PORT=9100 HTTP_HOST=0.0.0.0
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["streamfirst", "probe", "http://127.0.0.1:9100/healthz"]
CMD ["streamfirst", "--help"]
