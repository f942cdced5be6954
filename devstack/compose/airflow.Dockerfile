# Airflow 3.3.2 with this project's pinned dependencies (the same lock as `make install`).
FROM apache/airflow:3.3.2-python3.11
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml /opt/edge-training/pyproject.toml
COPY plugins /opt/edge-training/plugins
# Installs the provider entry point (connection types, extra links); code is also mounted at run time.
RUN pip install --no-cache-dir --no-deps /opt/edge-training
