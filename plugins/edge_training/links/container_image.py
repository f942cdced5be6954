"""Extra link to the pushed model image, stored in XCom by the push operator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def image_url(registry: str, repository: str, digest: str, *, template: str | None = None) -> str:
    """Where a user can look at the image.

    With ``template`` (e.g. an Azure portal URL of the registry) the placeholders ``{registry}``,
    ``{repository}`` and ``{digest}`` are filled in; without it the registry's own manifest URL for the
    digest is used (distribution API: answers with the manifest to an authenticated client).
    """
    if template:
        return template.format(registry=registry, repository=repository, digest=digest)
    return f"https://{registry}/v2/{repository}/manifests/{digest}"


class ContainerImageLink(BaseOperatorLink):
    """The image the task pushed (or found already pushed), by digest."""

    name = "Container image"
    key: ClassVar[str] = "container_image_url"

    @property
    def xcom_key(self) -> str:
        return self.key

    @classmethod
    def persist(cls, context: Any, url: str | None) -> None:
        if url:
            context["ti"].xcom_push(key=cls.key, value=url)

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(key=self.key, ti_key=ti_key) or ""
