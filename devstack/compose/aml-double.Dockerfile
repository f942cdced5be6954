# The AML double: the HTTPS control plane azure-ai-ml talks to in the local stack.
FROM python:3.11-slim-bookworm
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock
WORKDIR /app
COPY devstack /app/devstack
