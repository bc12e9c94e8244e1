#!/bin/sh
# Runs a class of Apache Kafka's jars, as the release's script of this name does,
# reduced to what a container needs: logs to stdout, settings from the environment
# (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS), nothing written to disk.
set -e
# shellcheck disable=SC2086 # the option variables hold several words
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent} \
  -Djava.awt.headless=true \
  "-Dlog4j2.configurationFile=${KAFKA_LOG4J_CONFIG:-/opt/kafka/config/log4j2.properties}" \
  ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*' "$@"
