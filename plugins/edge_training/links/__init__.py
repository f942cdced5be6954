"""Extra links: the AML job, the model and the image, stored in XCom as soon as they are known."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class XComUrlLink(BaseOperatorLink):
    """A link whose URL the operator pushes to XCom as soon as it knows it.

    Airflow 3 shows a link from the XCom under ``xcom_key``; pushing it early (before a deferral)
    makes the link work while the job still runs. Works without plugin registration.
    """

    key: ClassVar[str]

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
