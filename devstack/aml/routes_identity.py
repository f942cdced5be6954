"""Identity routes of the AML double: the OpenID configuration and the token endpoint a
ClientSecretCredential asks for (client_credentials only; the client id and secret are checked). Public:
no bearer token needed."""

from __future__ import annotations

import base64
import hmac
import json
import time
from urllib.parse import parse_qs

from starlette.responses import JSONResponse, Response

from devstack.aml import config
from devstack.aml.http_core import Req, RouteFamily


class IdentityRoutes(RouteFamily):
    def register(self) -> None:
        r = self.double.route
        r("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "GET openid-configuration")(
            self.openid_configuration)
        r("GET", r"/(?P<tenant>[^/]+)/\.well-known/openid-configuration", "GET openid-configuration")(
            self.openid_configuration)
        r("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "POST token")(self.token)
        r("POST", r"/(?P<tenant>[^/]+)/oauth2/token", "POST token")(self.token)

    def openid_configuration(self, req: Req) -> dict:
        base = f"{self.endpoint}/{req.params['tenant']}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "tenant_region_scope": "local",
            "response_types_supported": ["code", "id_token", "token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
        }

    def token(self, req: Req) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.raw.decode()).items()}
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type",
                                 "error_description": "the AML double issues tokens for client_credentials "
                                                      f"only; got grant_type={form.get('grant_type')!r}"},
                                status_code=400)
        secret = self.double.client_secret
        if client_id != config.CLIENT_ID or not hmac.compare_digest(form.get("client_secret", ""), secret):
            return JSONResponse({"error": "invalid_client",
                                 "error_description": f"AADSTS7000215: client {client_id!r} is unknown or its "
                                                      "secret is wrong (see AIRFLOW_CONN_AZUREML_DEFAULT)"},
                                status_code=401)
        now = int(time.time())
        claims = {"aud": form.get("scope", "").replace("/.default", ""), "iss": f"{self.endpoint}/"
                  f"{req.params['tenant']}/", "iat": now, "nbf": now, "exp": now + 3600,
                  "appid": client_id, "oid": client_id, "sub": client_id, "tid": req.params["tenant"],
                  "idtyp": "app", "ver": "1.0"}
        enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
        token = f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"
        return JSONResponse({"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                             "access_token": token})
