"""Pure logic of the stack runner: port checks, env-file quoting, the /etc/hosts block, certificates."""

from __future__ import annotations

import datetime as dt
import shlex
import socket
import subprocess

import pytest

from devstack.base import StackError
from devstack.services import base_image, hosts, pki
from devstack.util import (format_env_file, parse_env_file, port_conflicts, port_in_use,
                           quote_env_value)


def test_port_in_use_sees_a_listener_and_a_free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)


def test_port_conflicts_name_the_port_and_the_service_and_skip_ours():
    taken = {47101}
    wanted = {"azurite-stackhub": (47101,), "registry": (47150,), "hosts": ()}
    problems = port_conflicts(wanted, in_use=lambda p: p in taken)
    assert len(problems) == 1
    assert "47101" in problems[0] and "azurite-stackhub" in problems[0]
    assert port_conflicts(wanted, in_use=lambda p: p in taken, ours=["azurite-stackhub"]) == []


@pytest.mark.parametrize("value", [
    "plain", "", "with space", "it's", '{"json": "x", "n": [1, 2]}',
    "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=ab+/c==;EndpointSuffix=x:1",
    "$HOME `id` \\ back", "a'b\"c",
])
def test_env_values_survive_the_shell_and_the_parser(value):
    text = format_env_file({"KEY": value})
    assert parse_env_file(text) == {"KEY": value}
    # A real shell reads it back the same way.
    out = subprocess.run(["bash", "-c", f"set -a; {text}\nprintf %s \"$KEY\""], capture_output=True,
                         text=True, check=True).stdout
    assert out == value


def test_env_values_are_quoted_only_when_needed():
    assert quote_env_value("/work/main/.devstack/pki/ca.crt") == "/work/main/.devstack/pki/ca.crt"
    assert quote_env_value("a;b") == shlex.quote("a;b")


def test_env_file_rejects_multiline_values_and_bad_names():
    with pytest.raises(StackError, match="newline"):
        format_env_file({"KEY": "a\nb"})
    with pytest.raises(StackError, match="invalid variable name"):
        format_env_file({"1KEY": "a"})


def test_hosts_block_is_written_once_and_replaced_in_place():
    original = "127.0.0.1 localhost\n::1 ip6-localhost\n"
    once = hosts.with_block(original)
    assert once.startswith(original)
    assert once.count(hosts.BEGIN) == 1
    assert hosts.with_block(once) == once
    changed = hosts.with_block(once, ("only.example",))
    assert "only.example" in changed and "edgevm.local.azurestack.external" not in changed
    assert changed.count(hosts.END) == 1


def test_server_certificate_covers_every_stack_name_and_is_rejected_by_another_ca():
    now = dt.datetime.now(dt.timezone.utc)
    ca, ca_key = pki.make_ca(now)
    cert, _ = pki.make_server(ca, ca_key, now)
    assert pki.server_cert_problem(cert, ca, now) is None
    other_ca, _ = pki.make_ca(now)
    assert "not issued by" in pki.server_cert_problem(cert, other_ca, now) or \
        "does not verify" in pki.server_cert_problem(cert, other_ca, now)
    assert "expires" in pki.server_cert_problem(cert, ca, now + dt.timedelta(days=820))


def test_base_image_version_changes_with_the_package_list():
    v1 = base_image.content_version()
    assert v1 == base_image.content_version()
    assert base_image.content_version(packages=(*base_image.PACKAGES, "python3-scipy")) != v1
    # Order of the package list does not matter.
    assert base_image.content_version(packages=tuple(reversed(base_image.PACKAGES))) == v1


def test_the_one_stack_env_loader_reads_what_devstack_writes_and_never_overrides(tmp_path, monkeypatch):
    from devstack.util import export_stack_env, format_env_file, read_stack_env

    path = tmp_path / "stack.env"
    assert read_stack_env(path) == {}  # the stack was never brought up
    path.write_text(format_env_file({"EDGE_A": "x y", "EDGE_B": "it's"}, header="# test"))
    assert read_stack_env(path) == {"EDGE_A": "x y", "EDGE_B": "it's"}
    monkeypatch.setenv("EDGE_A", "set by the caller")
    monkeypatch.delenv("EDGE_B", raising=False)
    export_stack_env(read_stack_env(path))
    import os

    assert os.environ["EDGE_A"] == "set by the caller" and os.environ["EDGE_B"] == "it's"
