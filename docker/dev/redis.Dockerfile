# Redis for the chart's dev mode (`dev.redis.image`): Debian's redis-server.
#   docker build -f docker/dev/redis.Dockerfile -t driftline/dev-redis:dev .
# DEBIAN_IMAGE: any Debian bookworm image (apt-get over Debian's own mirrors).
# The chart runs it as `redis-server --save "" --appendonly no ...` with uid 10001 on
# a read-only root: Redis writes only to /data (an emptyDir there).
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE}
LABEL org.opencontainers.image.title="driftline-dev-redis" \
      org.opencontainers.image.description="Redis for Driftline's dev mode (not for production)" \
      org.opencontainers.image.licenses="Apache-2.0"
# policy-rc.d: the package's scripts start no server during the build.
# Debian's packages of the base's release, unpinned (a dev image: security fixes
# come with a rebuild).
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /usr/sbin/policy-rc.d \
 && groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /data --no-create-home driftline \
 && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=30s --timeout=3s CMD ["redis-cli", "ping"]
ENTRYPOINT ["redis-server"]
CMD ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
