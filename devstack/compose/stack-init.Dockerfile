# Generates the stack's CA, server certificate, SSH keys, registry and storage credentials and the
# Airflow connections file into the shared devstack-secrets volume (idempotent).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openssl openssh-client apache2-utils \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir cryptography==50.0.2 bcrypt==5.0.0
WORKDIR /app
COPY devstack /app/devstack
