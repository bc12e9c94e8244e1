#!/bin/sh
# As the release's kafka-server-start.sh: kafka.Kafka
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"
