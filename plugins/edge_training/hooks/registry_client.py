"""The registry's HTTP API (distribution v2): the few calls the image hook needs, with Basic or token
(Bearer) auth as the registry asks.

Reading the registry directly makes pushes verifiable (the digest a tag resolves to equals the pushed
one) and lets the hook find an image already holding a model from its config's labels, without Docker.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from edge_training.exceptions import ContainerImageError, RegistryAuthError, RegistryPushError

if TYPE_CHECKING:
    import requests

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


@dataclass
class Manifest:
    digest: str
    media_type: str
    raw: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.raw)


class RegistryClient:
    """The few registry API calls the hook needs, with Basic or token (Bearer) auth as the registry asks."""

    def __init__(self, *, server: str, username: str, password: str, verify: str | bool = True,
                 timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.base = self.server if "://" in self.server else f"https://{self.server}"
        self._auth = (username, password)
        self.username = username
        self.verify = verify
        self.timeout = timeout
        self._tokens: dict[str, str] = {}

    @cached_property
    def session(self) -> requests.Session:
        import requests

        return requests.Session()

    def _request(self, method: str, path: str, *, scope: str | None = None, **kwargs: Any) -> requests.Response:
        import requests

        url = f"{self.base}{path}"
        headers = dict(kwargs.pop("headers", {}) or {})
        token = self._tokens.get(scope or "")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            # verify per request: a session-level verify loses to REQUESTS_CA_BUNDLE in requests.
            response = self.session.request(method, url, headers=headers, timeout=self.timeout,
                                            verify=self.verify, auth=None if token else self._auth, **kwargs)
            if response.status_code == 401:
                scheme, params = parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))
                if scheme == "bearer" and not token:
                    self._tokens[scope or ""] = self._fetch_token(params, scope)
                    headers["Authorization"] = f"Bearer {self._tokens[scope or '']}"
                    response = self.session.request(method, url, headers=headers, timeout=self.timeout,
                                                    verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ContainerImageError(
                f"registry {self.server}: TLS verification failed ({exc}); give the registry's CA file as "
                "the registry connection's extra 'ca_bundle' or the operator's registry_ca_bundle"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise ContainerImageError(f"registry {self.server} is not reachable at {url}: {exc}") from None
        if response.status_code == 401:
            raise RegistryAuthError(
                f"registry {self.server} refused the credentials of user {self.username!r} "
                f"({method} {path}: HTTP 401). Check the registry connection's login and password."
            )
        if response.status_code == 403:
            raise RegistryAuthError(
                f"registry {self.server}: user {self.username!r} may not {method} {path} (HTTP 403)"
            )
        return response

    def _fetch_token(self, params: dict[str, str], scope: str | None) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {self.server} asked for a Bearer token without a realm")
        query = {"service": params.get("service", "")}
        if scope or params.get("scope"):
            query["scope"] = scope or params["scope"]
        response = self.session.get(realm, params=query, auth=self._auth, timeout=self.timeout, verify=self.verify)
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"registry {self.server} refused the credentials of user {self.username!r} at its token "
                f"endpoint (HTTP {response.status_code}). Check the registry connection's login and password."
            )
        response.raise_for_status()
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryAuthError(f"registry {self.server}: token endpoint returned no token")
        return token

    def close(self) -> None:
        if "session" in self.__dict__:
            self.__dict__.pop("session").close()

    def check_auth(self) -> None:
        """Raise RegistryAuthError unless the registry accepts the credentials."""
        response = self._request("GET", "/v2/")
        if response.status_code != 200:
            raise ContainerImageError(
                f"registry {self.server}: expected HTTP 200 from /v2/ (the distribution API), "
                f"found {response.status_code}"
            )

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest a tag or digest resolves to, or None if the repository or tag does not exist."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ContainerImageError(
                f"registry {self.server}: GET manifest {repository}:{reference} returned "
                f"HTTP {response.status_code}: {response.text[:300]}"
            )
        raw = response.content
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        header = response.headers.get("Docker-Content-Digest")
        if header and header != computed:
            raise RegistryPushError(
                f"registry {self.server}: manifest {repository}:{reference} has Docker-Content-Digest "
                f"{header} but its content hashes to {computed}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Manifest(digest=computed, media_type=media_type or json.loads(raw).get("mediaType", ""), raw=raw)

    def image_labels(self, repository: str, manifest: Manifest) -> dict[str, str]:
        """The labels in the image config a manifest points to (the first image of an index)."""
        if manifest.media_type in INDEX_TYPES:
            entries = manifest.json.get("manifests") or []
            if not entries:
                return {}
            inner = self.get_manifest(repository, entries[0]["digest"])
            if inner is None:
                return {}
            manifest = inner
        config_digest = (manifest.json.get("config") or {}).get("digest")
        if not config_digest:
            return {}
        response = self._request("GET", f"/v2/{repository}/blobs/{config_digest}",
                                 scope=f"repository:{repository}:pull")
        if response.status_code != 200:
            raise ContainerImageError(
                f"registry {self.server}: GET config blob {config_digest} of {repository} returned "
                f"HTTP {response.status_code}"
            )
        return (response.json().get("config") or {}).get("Labels") or {}

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Point ``tag`` at an existing manifest (a re-tag without Docker). Returns the digest."""
        response = self._request(
            "PUT", f"/v2/{repository}/manifests/{tag}",
            scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": manifest.media_type}, data=manifest.raw,
        )
        if response.status_code not in (200, 201):
            raise RegistryPushError(
                f"registry {self.server}: PUT manifest {repository}:{tag} returned HTTP "
                f"{response.status_code}: {response.text[:300]}"
            )
        return response.headers.get("Docker-Content-Digest") or manifest.digest
