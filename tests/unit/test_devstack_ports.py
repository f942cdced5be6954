"""devstack.ports keeps the stack's ports from being handed out as clients' own ports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devstack import ports

REPO = Path(__file__).resolve().parents[2]

# Run in a network namespace of its own (its sysctls are its own): an ephemeral range around the stack's
# ports, every port the kernel hands to bind(port 0) before and after ports.reserve().
HANDED_OUT = """
import json, socket, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from devstack import ports
Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("47090 47209")

def handed_out():
    socks = []
    while True:
        sock = socket.socket()
        try:
            sock.bind(("0.0.0.0", 0))
        except OSError:
            sock.close()
            break
        socks.append(sock)
    found = sorted(s.getsockname()[1] for s in socks)
    for sock in socks:
        sock.close()
    return found

before = handed_out()
message = ports.reserve()
print(json.dumps({"before": before, "after": handed_out(), "message": message}))
"""


def test_reserved_stack_ports_are_not_handed_out_and_the_rest_still_are():
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", HANDED_OUT, str(REPO)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    stack = set(ports.STACK_PORTS)
    assert stack <= set(seen["before"])  # without the reservation the kernel hands them out
    assert not stack & set(seen["after"]), seen["message"]
    assert set(seen["after"]) == set(range(47090, 47210)) - stack


def test_the_setting_keeps_what_was_reserved_before():
    assert ports.with_stack_ports("") == "47100-47199"
    assert ports.with_stack_ports("8080,9000-9010\n") == "8080,9000-9010,47100-47199"
    assert ports.with_stack_ports("8080,47000-47999") == "8080,47000-47999"
    assert ports.parse_ranges("8080,47100-47199\n") == [(8080, 8080), (47100, 47199)]


def test_reserve_writes_once_and_says_so(tmp_path):
    setting = tmp_path / "ip_local_reserved_ports"
    setting.write_text("8080\n")
    assert "reserved 47100-47199" in ports.reserve(setting)
    assert setting.read_text() == "8080,47100-47199\n"
    assert "47100-47199 reserved" in ports.reserve(setting)
    assert setting.read_text() == "8080,47100-47199\n"


def test_a_setting_that_cannot_be_written_is_named_and_not_fatal(tmp_path):
    message = ports.reserve(tmp_path / "missing" / "ip_local_reserved_ports")
    assert "could not reserve 47100-47199" in message and "TIME_WAIT" not in message
    assert "ephemeral port may hold one of them" in message


def test_waits_out_a_time_wait_but_not_a_listener():
    answers = iter([True, True, False])
    assert ports.wait_for_time_wait(47150, in_use=lambda port: next(answers), listening=lambda port: False)
    assert ports.wait_for_time_wait(47150, in_use=lambda port: True, listening=lambda port: True) is False
    assert ports.wait_for_time_wait(47150, timeout=0, in_use=lambda port: True,
                                    listening=lambda port: False) is False


def test_every_port_the_stack_and_its_airflows_listen_on_is_in_the_reserved_range():
    from devstack import airflow_local, scale
    from devstack.aml import config as aml_config
    from devstack.stack import load_services

    listened = {port for service in load_services()[0] for port in service.ports}
    listened |= {scale.PG_PORT, scale.REDIS_PORT, airflow_local.API_PORT, aml_config.PORT}
    # the tests' and the benchmarks' own Airflow API servers
    listened |= {47181, 47182, 47191, 47193, 47195, 47197}
    assert listened <= set(ports.STACK_PORTS), sorted(listened - set(ports.STACK_PORTS))


def test_stack_up_waits_out_a_time_wait_on_its_port_instead_of_refusing(tmp_path):
    """A closed client connection that had the port as its own (as before the reservation): its TIME_WAIT
    keeps the port from being bound for 60 s, and stack-up's port check waits it out. Slow (60 s) by nature."""
    import socket
    import time

    from devstack.base import Service, StackContext
    from devstack.stack import _refuse_taken_ports
    from devstack.util import port_in_use

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.socket()
    client.bind(("127.0.0.1", port))
    client.connect(server.getsockname())
    accepted, _ = server.accept()
    client.close()  # the client closes first: the TIME_WAIT is on its port
    time.sleep(0.2)
    accepted.close()
    server.close()
    assert port_in_use(port), "no TIME_WAIT: the case is not set up"

    class Probe(Service):
        name = "probe"
        ports = (port,)

    started = time.monotonic()
    assert _refuse_taken_ports(StackContext(state=tmp_path), [Probe()]) is False
    assert not port_in_use(port)
    assert time.monotonic() - started > 5  # it did wait
