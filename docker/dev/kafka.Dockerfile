# Apache Kafka for the chart's dev mode (`dev.kafka.image`): one KRaft node, the
# jars of Apache Kafka's release resolved from Maven Central (kafka/pom.xml) on
# Debian's Java 17 runtime. Not for production: nothing is replicated.
#   docker build -f docker/dev/kafka.Dockerfile -t driftline/dev-kafka:dev .
# /opt/kafka/bin has the scripts the chart calls, as Apache Kafka's image has them:
# kafka-storage.sh, kafka-server-start.sh, kafka-topics.sh (logs to stdout only).
# DEBIAN_IMAGE: any Debian bookworm image (apt-get over Debian's own mirrors).
# BUILD_IMAGE: the build stage's base, DEBIAN_IMAGE unless given. A base that sets
# SSL_CERT_FILE to a CA bundle (a TLS-intercepting proxy to Maven Central) goes
# here: its certificates are added to Java's trust store in the build stage only.
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG BUILD_IMAGE=${DEBIAN_IMAGE}

FROM ${BUILD_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's packages of the base's release, unpinned (a dev image: security fixes
# come with a rebuild).
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && if [ -n "${SSL_CERT_FILE:-}" ]; then \
      mkdir -p /usr/local/share/ca-certificates/build \
      && csplit --quiet --elide-empty-files --prefix /usr/local/share/ca-certificates/build/ca- \
           --suffix-format '%03d.crt' "$SSL_CERT_FILE" '/-----BEGIN CERTIFICATE-----/' '{*}' \
      && update-ca-certificates >/dev/null; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless ca-certificates-java maven
COPY docker/dev/kafka/pom.xml /src/pom.xml
RUN mvn -q -B -f /src/pom.xml -Dmaven.repo.local=/tmp/m2 \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=/opt/kafka/libs \
 && ls /opt/kafka/libs/kafka_2.13-*.jar

FROM ${DEBIAN_IMAGE}
LABEL org.opencontainers.image.title="driftline-dev-kafka" \
      org.opencontainers.image.description="Apache Kafka (KRaft) for Driftline's dev mode (not for production)" \
      org.opencontainers.image.licenses="Apache-2.0"
# Debian's packages of the base's release, unpinned (a dev image: security fixes
# come with a rebuild).
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/sbin/policy-rc.d \
 && groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /var/lib/kafka --no-create-home driftline \
 && mkdir -p /var/lib/kafka/data && chown -R 10001:10001 /var/lib/kafka
COPY --from=build /opt/kafka/libs /opt/kafka/libs
COPY docker/dev/kafka/bin /opt/kafka/bin
COPY docker/dev/kafka/log4j2.properties /opt/kafka/config/log4j2.properties
ENV PATH=/opt/kafka/bin:$PATH HOME=/tmp
USER 10001:10001
WORKDIR /var/lib/kafka
EXPOSE 9092
# The chart formats the storage and starts the broker with its own server.properties;
# by itself the image prints its version.
CMD ["kafka-server-start.sh", "--version"]
