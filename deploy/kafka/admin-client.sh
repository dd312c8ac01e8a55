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
case "$tool" in
    kafka-console-consumer.sh) config=--consumer.config ;;
    kafka-console-producer.sh) config=--producer.config ;;
    *) config=--command-config ;;
esac
"/opt/kafka/bin/$tool" --bootstrap-server "${BROKER_BOOTSTRAP:?}" "$config" "$props" "$@"
