"""The AML double's route families (devstack/aml/routes_*.py) and the app devstack/aml/asgi_app.py assembles
from them: each family registers the routes of its family and no other, the assembled table has no duplicate
(method, pattern), and the dispatcher in front of it (mounts, bearer check, fault injection, request log)
answers as before. In-process only: a Starlette TestClient, a SQLite file in tmp_path, no server."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from devstack.aml import config
from devstack.aml.asgi_app import ROUTE_FAMILIES, build_app, register_routes
from devstack.aml.http_core import AmlDouble
from devstack.aml.metadata_store import Store
from devstack.aml.routes_admin import AdminRoutes
from devstack.aml.routes_arm import ArmRoutes
from devstack.aml.routes_assets import AssetRoutes
from devstack.aml.routes_identity import IdentityRoutes
from devstack.aml.routes_jobs import JobRoutes
from devstack.aml.routes_studio import StudioRoutes

B = (f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/{config.RESOURCE_GROUP}/providers/"
     f"Microsoft.MachineLearningServices/workspaces/{config.WORKSPACE}")

ASSET_KINDS = {"codes": "code", "environments": "environment", "models": "model", "data": "data",
               "components": "component"}

#: (method, route key) of each family's table routes, in registration order.
TABLE = {
    IdentityRoutes: [("GET", "GET openid-configuration"), ("GET", "GET openid-configuration"),
                     ("POST", "POST token"), ("POST", "POST token")],
    ArmRoutes: [("GET", "GET discovery"), ("GET", "GET discovery"), ("GET", "GET workspace"),
                ("GET", "GET workspaces"), ("GET", "GET computes"), ("PUT", "PUT compute"),
                ("GET", "GET compute"), ("DELETE", "DELETE compute"), ("GET", "GET datastores"),
                ("PUT", "PUT datastore"), ("GET", "GET datastore"), ("DELETE", "DELETE datastore"),
                ("POST", "POST datastore secrets")],
    AssetRoutes: [route for kind, single in ASSET_KINDS.items() for route in (
        ("GET", f"GET {kind}"), ("GET", f"GET {single} container"), ("PUT", f"PUT {single} container"),
        ("GET", f"GET {single} versions"), ("GET", f"GET {single} version"), ("PUT", f"PUT {single} version"),
        ("DELETE", f"DELETE {single} version"))] + [("POST", "POST code startPendingUpload")],
    JobRoutes: [("GET", "GET jobs"), ("PUT", "PUT job"), ("GET", "GET job"), ("POST", "POST job cancel"),
                ("GET", "GET cancel operation"), ("GET", "GET run details"), ("GET", "GET run"),
                ("POST", "POST rundata"), ("GET", "GET run children")],
    StudioRoutes: [],
    AdminRoutes: [],
}

#: (exact paths, prefixes, request-log key) of each family's mounts.
MOUNTS = {
    IdentityRoutes: [], ArmRoutes: [], AssetRoutes: [],
    JobRoutes: [((), ("/_files/",), "GET file")],
    StudioRoutes: [((), ("/studio/", "/model/", "/runs/"), "GET studio")],
    AdminRoutes: [(("/healthz",), (), None), ((), ("/_admin/",), None)],
}


class FakeRunner:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.submitted: list[str] = []

    def submit(self, name):
        self.submitted.append(name)

    def log_path(self, name):
        return self.tmp_path / "logs" / name / "std_log.txt"

    def active_count(self):
        return 0


def new_double(tmp_path) -> AmlDouble:
    return AmlDouble(store=Store(path=tmp_path / "aml.sqlite"), endpoint="https://aml.test:1/", state_dir=tmp_path,
                     storage=None, runner=FakeRunner(tmp_path), files_secret=b"s" * 32, client_secret="secret")


def test_the_app_registers_every_family_in_order():
    assert list(ROUTE_FAMILIES) == list(TABLE) == list(MOUNTS)


@pytest.mark.parametrize("family", list(TABLE), ids=lambda f: f.__name__)
def test_each_family_registers_the_routes_of_its_family(family, tmp_path):
    double = new_double(tmp_path)
    family(double).register()
    assert [(method, key) for method, _, key, _ in double.routes] == TABLE[family]
    assert [(m.exact, m.prefixes, m.record_as) for m in double.mounts] == MOUNTS[family]
    assert all(isinstance(fn.__self__, family) for *_, fn in double.routes)


def test_the_assembled_table_has_no_duplicate_routes(tmp_path):
    double = new_double(tmp_path)
    app = build_app(double)
    assert len(app.routes) == 1  # one catch-all: the double dispatches itself
    table = [(method, pattern.pattern) for method, pattern, _, _ in double.routes]
    assert len(table) == len(set(table)) == sum(len(routes) for routes in TABLE.values())
    assert [(method, key) for method, _, key, _ in double.routes] == [r for routes in TABLE.values() for r in routes]
    prefixes = [p for m in double.mounts for p in (*m.exact, *m.prefixes)]
    assert len(prefixes) == len(set(prefixes))
    with pytest.raises(RuntimeError, match="registered already"):
        register_routes(double)


def test_dispatch_keeps_mounts_auth_faults_and_the_request_log(tmp_path):
    double = new_double(tmp_path)
    client = TestClient(build_app(double), base_url="https://aml.test:1")
    auth = {"Authorization": "Bearer x"}

    assert client.get("/healthz").json() == {"status": "ok", "service": "aml-double", "jobs_running": 0}
    assert client.get(B).status_code == 401
    assert client.get("/discovery").json()["history"] == "https://aml.test:1"
    assert client.get(B, headers=auth).json()["name"] == config.WORKSPACE
    assert client.get("/no/such/route", headers=auth).json()["error"]["code"] == "NoSuchRoute"
    assert client.get("/studio/jobs/nope").status_code == 404

    fault = client.post("/_admin/faults", json={"route": "GET workspace", "kind": "429", "count": 1}).json()
    answer = client.get(B, headers=auth)
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "1")
    assert client.get(B, headers=auth).status_code == 200
    assert client.delete(f"/_admin/faults/{fault['fault']['id']}").json() == {"faults": []}

    job = {"properties": {"jobType": "Command", "command": "true", "computeId": f"{B}/computes/edge-vm"}}
    assert client.put(f"{B}/jobs/j1", json=job, headers=auth).status_code == 201
    assert double.runner.submitted == ["j1"]
    log = double.runner.log_path("j1")
    log.parent.mkdir(parents=True)
    log.write_text("hello\n")
    url = client.get(f"/history/v1.0{B}/runs/j1/details", headers=auth).json()["logFiles"]["user_logs/std_log.txt"]
    assert client.get(url.removeprefix("https://aml.test:1")).text == "hello\n"
    assert client.get("/_files/j1/user_logs/std_log.txt?sig=bad").status_code == 403

    counts = client.get("/_admin/requests").json()["counts"]
    assert counts["GET workspace"] == 4 and counts["PUT job"] == 1 and counts["GET discovery"] == 1
    routes = [entry["route"] for entry in client.get("/_admin/requests").json()["recent"]]
    assert "GET studio" in routes and "GET file" in routes
