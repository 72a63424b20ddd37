#!/usr/bin/env bash
# Apache Kafka (KRaft, 1 or 3 nodes) on loopback, from the jars Maven fetches from Maven Central
# (cached in .scribe/kafka; needs Java 17+ and Maven). Stops exactly the processes it started.
#
#   scripts/kafka.sh up [--brokers 3] [--dir .scribe/kafka-cluster]   # prints export lines
#       (a SASL_SSL + SCRAM-SHA-512 listener too, SCRIBE_TEST_KAFKA_SASL_SSL_*; --no-sasl-ssl)
#   scripts/kafka.sh status|down [--dir ...] [--purge]
#   scripts/kafka.sh run [--brokers 3] -- COMMAND ...                 # fresh cluster for COMMAND
#   scripts/kafka.sh fetch                                            # only fetch the jars
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON_BIN:-$root/.venv/bin/python}"
if [ ! -x "$python" ]; then
    make install >&2
fi
exec "$python" -m devkit.stack.apache_kafka "$@"
