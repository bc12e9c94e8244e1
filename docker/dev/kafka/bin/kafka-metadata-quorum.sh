#!/bin/sh
# As the release's kafka-metadata-quorum.sh: org.apache.kafka.tools.MetadataQuorumCommand
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.MetadataQuorumCommand "$@"
