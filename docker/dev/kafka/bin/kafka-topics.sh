#!/bin/sh
# As the release's kafka-topics.sh: org.apache.kafka.tools.TopicCommand
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.TopicCommand "$@"
