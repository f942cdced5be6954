# The edge VM: Debian with sshd (key-only, no root login) and its own Docker engine, like the
# Stack Hub Ubuntu VM of the seed pattern. Runs privileged (Docker in Docker).
FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server docker.io python3 \
        ca-certificates curl debootstrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --shell /bin/bash --groups docker edgeops \
    && mkdir -p /run/sshd
COPY devstack/compose/edge-vm-entrypoint.sh /usr/local/bin/edge-vm-entrypoint
EXPOSE 22
ENTRYPOINT ["/usr/local/bin/edge-vm-entrypoint"]
