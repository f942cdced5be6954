"""The AML double's ASGI app: every route family registered on one ``AmlDouble``, behind one catch-all
Starlette route (the double dispatches itself: mounts first, then the route table, first match wins).

The order of ``ROUTE_FAMILIES`` is the order of the route table.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from devstack.aml.http_core import AmlDouble, RouteFamily
from devstack.aml.routes_admin import AdminRoutes
from devstack.aml.routes_arm import ArmRoutes
from devstack.aml.routes_assets import AssetRoutes
from devstack.aml.routes_identity import IdentityRoutes
from devstack.aml.routes_jobs import JobRoutes
from devstack.aml.routes_studio import StudioRoutes

ROUTE_FAMILIES: tuple[type[RouteFamily], ...] = (
    IdentityRoutes, ArmRoutes, AssetRoutes, JobRoutes, StudioRoutes, AdminRoutes,
)


def register_routes(double: AmlDouble) -> None:
    """Add every family's routes and mounts to ``double`` (once)."""
    if double.routes or double.mounts:
        raise RuntimeError("the AML double's routes are registered already")
    for family in ROUTE_FAMILIES:
        family(double).register()


def build_app(double: AmlDouble) -> Starlette:
    register_routes(double)
    methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]
    return Starlette(routes=[Route("/{rest:path}", double.dispatch, methods=methods)])
