#!/bin/sh
# Run a Kafka command-line tool as the admin principal (SASL_SSL, PLAIN):
#   admin-client.sh kafka-topics.sh --list
# Its client properties are written from BROKER_ADMIN_PASSWORD into a private
# temporary file, removed afterwards; the password is never on a command line.
set -eu
props=$(mktemp)
trap 'rm -f "$props"' EXIT
cat > "$props" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${BROKER_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/tls/ca.pem
PROPERTIES
tool=$1
shift
"/opt/kafka/bin/$tool" --bootstrap-server kafka:9092 --command-config "$props" "$@"
