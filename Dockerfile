# driftwatch container image.
#
#   docker build -t driftwatch .
#   docker run --rm driftwatch --help
#
# Build stage: the release binary. librdkafka is compiled from source by
# rdkafka-sys (needs a C toolchain, make, pkg-config, OpenSSL and zlib
# headers); SASL PLAIN and SCRAM are built into librdkafka with OpenSSL.
FROM rust:1.85-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY schemas schemas
COPY config config
# Cargo.toml names the benchmarks; their sources must be present to parse it.
COPY benches benches
RUN cargo build --release --locked --bin driftwatch \
 && strip target/release/driftwatch

# Runtime stage: the binary, CA certificates, OpenSSL and zlib; no shell
# tools beyond Debian slim's, a non-root user, a read-only friendly layout.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin driftwatch
COPY --from=build /src/target/release/driftwatch /usr/local/bin/driftwatch
COPY config/example.toml /etc/driftwatch/driftwatch.toml
COPY schemas /usr/share/driftwatch/schemas
WORKDIR /usr/share/driftwatch
USER 10001:10001
EXPOSE 9464
ENV DRIFTWATCH_HTTP__LISTEN=0.0.0.0:9464
HEALTHCHECK --interval=10s --timeout=4s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/driftwatch", "healthcheck", "--url", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["/usr/local/bin/driftwatch"]
CMD ["run", "--config", "/etc/driftwatch/driftwatch.toml"]
