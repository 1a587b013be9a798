#!/usr/bin/env bash
# The test command of the README, and all that CI runs (.ci/run calls it).
# On a fresh machine it installs what the build needs and the test broker,
# then checks format and lints, and runs every test against the broker.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
pkg-config --exists zlib 2>/dev/null || need_apt+=(zlib1g-dev)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
# The test broker, Apache Kafka: a Java runtime, and Maven to fetch its jars.
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# The SASL/TLS tests make their certificates with openssl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# promtool checks and unit-tests the Prometheus rules (tests/deploy.rs).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing build dependencies: ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
# The integration tests run against a real broker: Apache Kafka, fetched and
# started here, or the one DRIFTWATCH_TEST_BOOTSTRAP names.
# shellcheck source=scripts/test-broker.sh
source scripts/test-broker.sh
# shellcheck source=scripts/test-tools.sh
source scripts/test-tools.sh

echo "== cargo test (broker: $DRIFTWATCH_TEST_BOOTSTRAP)"
cargo test --all-targets
