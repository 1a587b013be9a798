#!/usr/bin/env bash
# A single-node Apache Kafka for the tests (KRaft, broker and controller in
# one process), run from the jars Maven fetches for scripts/kafka/pom.xml.
#
# As a command:  scripts/kafka-broker.sh fetch|init|start|stop|kill9|version|run CLASS ARGS...
# Sourced:       the same as functions: kafka_fetch, kafka_init, kafka_start, ...
#
# Every command but fetch works on one broker's directory, KAFKA_WORK:
# server.properties, the formatted log directory (data/), the logs (logs/)
# and `env`, which init writes:
#   KAFKA_BOOTSTRAP       the PLAINTEXT listener (always there)
#   KAFKA_SASL_BOOTSTRAP  the SCRAM listener, when KAFKA_SCRAM_USERS is set
#
# Environment:
#   KAFKA_WORK          the broker's directory (required by init and later)
#   KAFKA_LIBS          the jar cache (default: .tools/kafka-<version>/libs)
#   KAFKA_SCRAM_USERS   "user:password ..." made SCRAM-SHA-512 users when the
#                       storage is formatted; adds a SASL listener that takes
#                       SCRAM-SHA-512 only
#   KAFKA_TLS_KEYSTORE  a PEM file (unencrypted PKCS#8 key, then the
#                       certificate chain): the SASL listener becomes SASL_SSL
#   KAFKA_TLS_TRUSTSTORE  a PEM file of the CAs whose client certificates the
#                       SASL_SSL listener accepts; a client certificate is required
#   KAFKA_HEAP          the broker's heap flags (default: -Xms256m -Xmx512m)
#   KAFKA_READY_TIMEOUT seconds start waits for the broker (default: 120)
#   JAVA                the java binary (default: java)
#
# Start is stop-safe: the broker runs in its own session with its pid in
# KAFKA_WORK/kafka.pid; kill9 sends SIGKILL and start brings it back on the
# same ports and log directory.

_kafka_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_kafka_root=$(cd "$_kafka_scripts/.." && pwd)
KAFKA_POM=${KAFKA_POM:-$_kafka_scripts/kafka/pom.xml}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
KAFKA_LIBS=${KAFKA_LIBS:-$_kafka_root/.tools/kafka-$KAFKA_VERSION/libs}
KAFKA_HEAP=${KAFKA_HEAP:--Xms256m -Xmx512m}
KAFKA_READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-120}
JAVA=${JAVA:-java}
# The short-lived tool JVMs (storage format, console clients): small, quick to start.
KAFKA_TOOL_OPTS=${KAFKA_TOOL_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}

_klog() { echo "kafka-broker: $*" >&2; }
_kdie() {
  _klog "ERROR: $*"
  return 1
}

# Fetches the jars once; again only when the pom changes (its hash is kept
# beside them).
kafka_fetch() {
  local stamp="$KAFKA_LIBS/.pom.sha256" want tmp
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return 0; fi
  command -v mvn >/dev/null || { _kdie "mvn not found (install Maven)"; return 1; }
  tmp="$KAFKA_LIBS.tmp.$$"
  rm -rf "$tmp"
  _klog "fetching Apache Kafka $KAFKA_VERSION with Maven into $KAFKA_LIBS"
  mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >&2 ||
    { rm -rf "$tmp"; _kdie "mvn dependency:copy-dependencies failed"; return 1; }
  echo "$want" >"$tmp/.pom.sha256"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  mv "$tmp" "$KAFKA_LIBS"
}

_kwork() { [[ -n ${KAFKA_WORK:-} ]] || { _kdie "KAFKA_WORK is not set"; return 1; }; }

# Runs a Kafka class (a console client, a tool) with warnings to stderr.
kafka_run() {
  local cls=$1
  shift
  # shellcheck disable=SC2086
  "$JAVA" $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$_kafka_scripts/kafka/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$cls" "$@"
}

_kfree_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# KAFKA_WORK made fresh (other files there are kept): free ports,
# server.properties, formatted storage.
kafka_init() {
  _kwork || return 1
  kafka_fetch || return 1
  if kafka_running; then _kdie "a broker runs from $KAFKA_WORK (pid $(kafka_pid))"; return 1; fi
  rm -rf "$KAFKA_WORK/data" "$KAFKA_WORK/logs" "$KAFKA_WORK/env"
  mkdir -p "$KAFKA_WORK/data" "$KAFKA_WORK/logs"
  local bport cport sport
  read -r bport cport sport <<<"$(_kfree_ports 3)"
  local listeners="PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$bport"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  local secure="" sasl_bootstrap=""
  if [[ -n ${KAFKA_SCRAM_USERS:-} ]]; then
    local name=SASL_PLAINTEXT
    [[ -n ${KAFKA_TLS_KEYSTORE:-} ]] && name=SASL_SSL
    local lower=${name,,}
    listeners+=",$name://127.0.0.1:$sport"
    advertised+=",$name://127.0.0.1:$sport"
    protocols+=",$name:$name"
    sasl_bootstrap="127.0.0.1:$sport"
    secure="sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.$lower.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.$lower.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    if [[ $name == SASL_SSL ]]; then
      secure+="
listener.name.$lower.ssl.keystore.type=PEM
listener.name.$lower.ssl.keystore.location=$KAFKA_TLS_KEYSTORE
listener.name.$lower.ssl.truststore.type=PEM
listener.name.$lower.ssl.truststore.location=${KAFKA_TLS_TRUSTSTORE:?KAFKA_TLS_TRUSTSTORE must name the client CA}
listener.name.$lower.ssl.client.auth=required"
    fi
  fi
  cat >"$KAFKA_WORK/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$KAFKA_WORK/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
$secure
EOF
  local scram=() user
  for user in ${KAFKA_SCRAM_USERS:-}; do
    scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%:*},password=${user#*:}]")
  done
  local cluster
  cluster=$(kafka_run kafka.tools.StorageTool random-uuid) || { _kdie "random-uuid failed"; return 1; }
  kafka_run kafka.tools.StorageTool format -t "$cluster" -c "$KAFKA_WORK/server.properties" \
    --standalone "${scram[@]}" >"$KAFKA_WORK/logs/format.out" 2>&1 ||
    { cat "$KAFKA_WORK/logs/format.out" >&2; _kdie "formatting the storage failed"; return 1; }
  cat >"$KAFKA_WORK/env" <<EOF
KAFKA_BOOTSTRAP=127.0.0.1:$bport
KAFKA_SASL_BOOTSTRAP=$sasl_bootstrap
EOF
}

kafka_pid() { [[ -f ${KAFKA_WORK:-}/kafka.pid ]] && cat "$KAFKA_WORK/kafka.pid"; }
kafka_running() {
  local p
  p=$(kafka_pid) || return 1
  kill -0 "$p" 2>/dev/null
}

# Starts the broker of KAFKA_WORK and waits until it has started and its
# PLAINTEXT listener takes connections.
kafka_start() {
  _kwork || return 1
  # shellcheck disable=SC1091
  . "$KAFKA_WORK/env" || { _kdie "no $KAFKA_WORK/env: init first"; return 1; }
  if kafka_running; then return 0; fi
  local mark
  mark=$(wc -l 2>/dev/null <"$KAFKA_WORK/logs/server.log" || echo 0)
  cat >"$KAFKA_WORK/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $KAFKA_WORK/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
EOF
  # shellcheck disable=SC2086
  setsid "$JAVA" $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_WORK/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_WORK/server.properties" \
    >>"$KAFKA_WORK/logs/kafka.out" 2>&1 </dev/null &
  echo $! >"$KAFKA_WORK/kafka.pid"
  local deadline=$((SECONDS + KAFKA_READY_TIMEOUT)) port=${KAFKA_BOOTSTRAP##*:}
  until tail -n +"$((mark + 1))" "$KAFKA_WORK/logs/server.log" 2>/dev/null | grep -q 'Kafka Server started' &&
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kafka_running; then
      tail -n 40 "$KAFKA_WORK/logs/kafka.out" "$KAFKA_WORK/logs/server.log" >&2 2>/dev/null
      _kdie "the broker exited while starting (logs in $KAFKA_WORK/logs)"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      _kdie "the broker did not start in ${KAFKA_READY_TIMEOUT}s (logs in $KAFKA_WORK/logs)"
      return 1
    fi
    sleep 0.2
  done
}

# SIGTERM (a clean shutdown), SIGKILL after 30 s.
kafka_stop() {
  local p i
  p=$(kafka_pid) || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"
    for ((i = 0; i < 300; i++)); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
  fi
  rm -f "$KAFKA_WORK/kafka.pid"
}

# SIGKILL: the broker gets no chance to flush or close anything.
kafka_kill9() {
  local p
  p=$(kafka_pid) || return 0
  kill -KILL "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
  rm -f "$KAFKA_WORK/kafka.pid"
}

# The version of the jars, as the broker reports it.
kafka_version() { kafka_run org.apache.kafka.tools.TopicCommand --version; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  cmd=${1:-}
  shift || true
  case $cmd in
  fetch | init | start | stop | kill9 | version) "kafka_$cmd" ;;
  run) kafka_fetch && kafka_run "$@" ;;
  *)
    echo "usage: $0 fetch|init|start|stop|kill9|version|run CLASS ARGS..." >&2
    exit 2
    ;;
  esac
fi
