"""The tests' metadata Postgres (devstack/scale.py) as the tests' Airflow uses it."""

from __future__ import annotations

from pathlib import Path

from devstack import scale
from devstack.util import port_listening


def test_postgres_serves_loopback_tcp_and_leaves_no_socket_in_the_shared_tmp(airflow):
    """Its Unix socket's lock file in /tmp, left by a Postgres killed with its machine, is one a later
    start could trip over; every client here connects over TCP on loopback."""
    assert port_listening(scale.PG_PORT)
    assert scale._psql("SELECT 1").stdout.strip() == "1"
    assert not sorted(Path("/tmp").glob(f".s.PGSQL.{scale.PG_PORT}*"))
