#!/bin/sh
# Provisions Casebridge's topics and ACLs on the compose profile's Kafka (run once by
# the kafka-init container; safe to run again). The services never create topics
# there (kafka_topic_creation=never) and may do only what acls.txt grants them.
set -eu
here=$(dirname "$0")
rules=$(grep -v '^[[:space:]]*#' "$here/acls.txt" | awk 'NF == 4')

for topic in $(printf '%s\n' "$rules" | awk '$3 == "topic" {print $4}' | sort -u); do
    sh "$here/admin-client.sh" kafka-topics.sh --create --if-not-exists --topic "$topic" \
        --partitions "${TOPIC_PARTITIONS:?}" --replication-factor "${TOPIC_REPLICATION_FACTOR:?}"
done

printf '%s\n' "$rules" | while read -r principal operation resource name; do
    sh "$here/admin-client.sh" kafka-acls.sh --add --allow-principal "User:$principal" \
        --operation "$operation" "--$resource" "$name"
done
echo "kafka-init: topics and ACLs in place"
