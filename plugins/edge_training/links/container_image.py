"""Extra link to the pushed model image, stored in XCom by the push operator."""

from __future__ import annotations

from typing import ClassVar

from edge_training.links import XComUrlLink


def image_url(registry: str, repository: str, digest: str, *, template: str | None = None) -> str:
    """Where a user can look at the image.

    With ``template`` (e.g. an Azure portal URL of the registry) the placeholders ``{registry}``,
    ``{repository}`` and ``{digest}`` are filled in; without it the registry's own manifest URL for the
    digest is used (distribution API: answers with the manifest to an authenticated client).
    """
    if template:
        return template.format(registry=registry, repository=repository, digest=digest)
    return f"https://{registry}/v2/{repository}/manifests/{digest}"


class ContainerImageLink(XComUrlLink):
    """The image the task pushed (or found already pushed), by digest."""

    name = "Container image"
    key: ClassVar[str] = "container_image_url"
