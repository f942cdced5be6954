#!/bin/sh
# Start the VM's Docker engine, install the pinned host key and the client's public key, run sshd.
set -eu
S=/opt/devstack-secrets
dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 >/var/log/dockerd.log 2>&1 &
install -m 600 "$S/ssh/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 644 "$S/ssh/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 700 -o edgeops -g edgeops /home/edgeops/.ssh
install -m 600 -o edgeops -g edgeops "$S/ssh/edge_vm_key.pub" /home/edgeops/.ssh/authorized_keys
cat > /etc/ssh/sshd_config.d/edge.conf <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PubkeyAuthentication yes
CONF
exec /usr/sbin/sshd -D -e
