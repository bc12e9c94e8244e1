#!/bin/sh
# As the release's kafka-storage.sh: kafka.tools.StorageTool
exec /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool "$@"
