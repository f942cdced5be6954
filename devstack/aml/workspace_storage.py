"""The double's own access to the AML workspace storage account (the second Azurite).

Used for the code upload flow (a fresh container and a SAS per pending upload, as AML does), for
reading code snapshots to stage them on the VM, and for listing job outputs and logs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    generate_container_sas,
)


def parse_connection_string(conn: str) -> dict[str, str]:
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    return parts


class WorkspaceStorage:
    def __init__(self, *, connection_string: str, ca_file: str | None) -> None:
        parts = parse_connection_string(connection_string)
        self.account = parts["AccountName"]
        self.key = parts["AccountKey"]
        self.suffix = parts.get("EndpointSuffix", "core.windows.net")
        self.account_url = f"https://{self.account}.blob.{self.suffix}"
        self.ca_file = ca_file
        self._client = BlobServiceClient(
            account_url=self.account_url,
            credential={"account_name": self.account, "account_key": self.key},
            connection_verify=ca_file or True,
        )

    def container_url(self, container: str) -> str:
        return f"{self.account_url}/{container}"

    def ensure_container(self, container: str) -> None:
        client = self._client.get_container_client(container)
        if not client.exists():
            try:
                client.create_container()
            except Exception as exc:  # noqa: BLE001 - a parallel create is fine
                if "ContainerAlreadyExists" not in str(exc):
                    raise

    def new_upload_container(self) -> tuple[str, str]:
        """A fresh container for one pending upload: (container URL, SAS URL with write/list rights)."""
        container = str(uuid.uuid4())
        self.ensure_container(container)
        sas = generate_container_sas(
            account_name=self.account,
            container_name=container,
            account_key=self.key,
            permission=ContainerSasPermissions(read=True, write=True, list=True, create=True, add=True,
                                               delete=True),
            expiry=datetime.now(timezone.utc) + timedelta(hours=8),
        )
        url = self.container_url(container)
        return url, f"{url}?{sas}"

    def list_blobs(self, container: str, prefix: str) -> list[tuple[str, int]]:
        client = self._client.get_container_client(container)
        if not client.exists():
            return []
        return [(b.name, b.size) for b in client.list_blobs(name_starts_with=prefix)]

    def read_blob(self, container: str, name: str) -> bytes:
        return self._client.get_blob_client(container, name).download_blob().readall()

    def write_blob(self, container: str, name: str, data: bytes) -> None:
        self._client.get_blob_client(container, name).upload_blob(data, overwrite=True)

    def read_range(self, container: str, name: str, offset: int) -> bytes:
        return self._client.get_blob_client(container, name).download_blob(offset=offset).readall()
