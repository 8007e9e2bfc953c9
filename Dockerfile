# ozw in a container, driving the host's Docker engine through its socket:
#   docker build -t ozw .
#   docker run -d --name ozw -e WARP_API_KEY \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v "$PWD/config/worker.toml:/etc/ozw/worker.toml:ro" \
#     ozw --config /etc/ozw/worker.toml
# `docker stop` sends SIGTERM: ozw stops gracefully (set --stop-timeout above shutdown_grace).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends docker.io git tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ozw
COPY pyproject.toml README.md ./
COPY src ./src
COPY examples ./examples
RUN pip install --no-cache-dir . && ozw --version

# tini reaps orphans, so agent processes of the direct backend never linger as zombies.
ENTRYPOINT ["/usr/bin/tini", "--", "ozw"]
CMD ["--config", "/etc/ozw/worker.toml"]
STOPSIGNAL SIGTERM
