"""Locality policy for Stack Hub storage endpoints: the data must stay on premises.

Split out of the blob hook so the rule that decides whether an account endpoint may be contacted
(inside the configured Stack Hub domain; no public Azure suffix, look-alike domain or user info in
the URL) is one pure module, with no SDK in sight, run before any sync or async client is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from edge_training.exceptions import LocalityPolicyError

# Public Azure clouds' blob endpoint suffixes (global, China, US Gov, Germany, the DNS-zone
# endpoints, and the air-gapped clouds). A Stack Hub account never lives under these.
PUBLIC_BLOB_SUFFIXES = (
    "core.windows.net",
    "core.chinacloudapi.cn",
    "core.usgovcloudapi.net",
    "core.cloudapi.de",
    "storage.azure.net",
    "core.microsoft.scloud",
    "core.eaglex.ic.gov",
)


def public_suffix_of(host: str) -> str | None:
    """Return the public Azure suffix ``host`` belongs to, or None."""
    host = host.lower().rstrip(".")
    for suffix in PUBLIC_BLOB_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return suffix
    return None


def check_locality(
    endpoint_url: str,
    *,
    stack_hub_domain: str | None,
    allow_public_endpoint: bool = False,
    allowed_hosts: Iterable[str] = (),
) -> str:
    """Refuse an account endpoint outside the Stack Hub domain; return its host when allowed.

    A Stack Hub blob endpoint is ``<account>.blob.<region>.<fqdn>``; ``stack_hub_domain`` is
    ``<region>.<fqdn>`` (``local.azurestack.external`` on the ASDK and the devstack). Hosts listed
    in ``allowed_hosts`` (e.g. a path-style loopback endpoint) are accepted as they are.
    """
    parts = urlsplit(endpoint_url)
    if "@" in parts.netloc:
        # https://user@a.blob.core.windows.net@b.blob.<stack hub> reads as one host to a person and
        # another to a parser: user info has no place in a storage endpoint, so it is never accepted.
        raise LocalityPolicyError(
            f"storage endpoint {endpoint_url!r} carries user info (text before '@' in its authority): "
            "expected https://<account>.blob.<stack hub domain>[:port] with no user info"
        )
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise LocalityPolicyError(f"storage endpoint {endpoint_url!r} has no host name")
    allowed = {h.lower() for h in allowed_hosts}
    public = public_suffix_of(host)
    if public:
        if allow_public_endpoint:
            return host
        raise LocalityPolicyError(
            f"storage endpoint {host} is a public Azure cloud endpoint (*.{public}): expected an account "
            f"inside the Stack Hub domain *.blob.{stack_hub_domain or '<stack_hub_domain>'}; the data must "
            "not leave the premises (set allow_public_endpoint=True only if the policy allows it)"
        )
    if host in allowed:
        return host
    if not stack_hub_domain:
        raise LocalityPolicyError(
            f"storage endpoint {host}: no Stack Hub domain is configured (connection extra "
            "'stack_hub_domain', e.g. 'local.azurestack.external'), so locality cannot be verified"
        )
    domain = stack_hub_domain.lower().strip(".")
    suffix = ".blob." + domain
    account = host[: -len(suffix)] if host.endswith(suffix) else ""
    if not account or "." in account:
        raise LocalityPolicyError(
            f"storage endpoint {host} is outside the Stack Hub domain: expected <account>{suffix}"
        )
    return host
