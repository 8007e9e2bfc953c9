# ozw in a container, driving the host's Docker engine through its socket:
#   docker build -t ozw .
#   docker run -d --name ozw -e WARP_API_KEY --stop-timeout 45 \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v "$PWD/config/worker.toml:/etc/ozw/worker.toml:ro" \
#     ozw
# ozw runs as the unprivileged user ozw (uid 10001) in the group docker (gid 999 by
# default, `--build-arg DOCKER_GID=...`); `--group-add` above gives it the group that
# owns the host's socket whatever its number. `docker stop` sends SIGTERM: ozw stops
# gracefully (keep --stop-timeout above shutdown_grace). /metrics and /healthz are
# served on port 9090, which the HEALTHCHECK asks.

# Only the docker client leaves this stage: Debian's docker.io package is unpacked,
# not installed, so neither dockerd nor containerd reaches the image. Same base as the
# final stage, so the client finds the C library it was built against.
FROM python:3.11-slim-bookworm AS docker-client
RUN apt-get update \
    && cd /tmp && apt-get download docker.io \
    && dpkg-deb --extract docker.io_*.deb /tmp/docker.io \
    && install -m 0755 /tmp/docker.io/usr/bin/docker /usr/local/bin/docker \
    && rm -rf /var/lib/apt/lists/* /tmp/docker.io*

FROM python:3.11-slim-bookworm
ARG DOCKER_GID=999

RUN apt-get update \
    && apt-get install -y --no-install-recommends git tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "$DOCKER_GID" docker \
    && useradd --system --uid 10001 --user-group --groups docker \
        --create-home --home-dir /home/ozw --shell /usr/sbin/nologin ozw

COPY --from=docker-client /usr/local/bin/docker /usr/local/bin/docker

WORKDIR /opt/ozw
COPY pyproject.toml README.md ./
COPY src ./src
COPY examples ./examples
RUN pip install --no-cache-dir . && ozw --version && docker --version

# Numeric (Kubernetes runAsNonRoot can verify it); without a group, so the
# supplementary group docker from /etc/group applies.
USER 10001
EXPOSE 9090
# /healthz answers 200 while connected to the dispatch server, 503 otherwise (urlopen
# raises on 503: the check fails). Running tasks carry on during a server outage, so
# the retries are generous before the container is marked unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=4)"]

# tini reaps orphans, so agent processes of the direct backend never linger as zombies.
ENTRYPOINT ["/usr/bin/tini", "--", "ozw"]
CMD ["--config", "/etc/ozw/worker.toml", "--metrics-addr", ":9090"]
STOPSIGNAL SIGTERM
