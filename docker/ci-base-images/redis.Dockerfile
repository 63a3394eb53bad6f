# CI stand-in for redis:7.2-bookworm (the broker of the `celery` compose profile), built by
# .ci/prepare-base-images --celery on a machine with no image registry: Debian bookworm's
# redis-server (7.0), configured like the official image (all interfaces, no protected mode).
# Never pushed anywhere.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"]
