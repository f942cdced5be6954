"""SQLite state of the double: assets (computes, datastores, environments, codes, models) and jobs.

Everything the double knows lives here, so a restart loses nothing. One connection guarded by a lock:
the double's traffic is small and writes must not interleave.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (kind, name, version)
);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
    runtime TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
"""


class Store:
    def __init__(self, *, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    # -- assets ---------------------------------------------------------------------------------
    def put_asset(self, kind: str, name: str, body: dict, version: str = "") -> dict:
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "SELECT created FROM assets WHERE kind=? AND name=? AND version=?", (kind, name, version)
            ).fetchone()
            created = row[0] if row else now
            self._db.execute(
                "INSERT OR REPLACE INTO assets (kind, name, version, body, created, updated) VALUES (?,?,?,?,?,?)",
                (kind, name, version, json.dumps(body), created, now),
            )
        return {"body": body, "created": created, "updated": now}

    def get_asset(self, kind: str, name: str, version: str = "") -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body, created, updated FROM assets WHERE kind=? AND name=? AND version=?",
                (kind, name, version),
            ).fetchone()
        if row is None:
            return None
        return {"body": json.loads(row[0]), "created": row[1], "updated": row[2]}

    def list_assets(self, kind: str, name: str | None = None) -> list[dict]:
        query = "SELECT name, version, body, created, updated FROM assets WHERE kind=?"
        args: list[Any] = [kind]
        if name is not None:
            query += " AND name=?"
            args.append(name)
        query += " ORDER BY created"
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [
            {"name": r[0], "version": r[1], "body": json.loads(r[2]), "created": r[3], "updated": r[4]}
            for r in rows
        ]

    def delete_asset(self, kind: str, name: str, version: str = "") -> bool:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM assets WHERE kind=? AND name=? AND version=?", (kind, name, version)
            )
        return cur.rowcount > 0

    # -- jobs -----------------------------------------------------------------------------------
    def create_job(self, name: str, spec: dict, status: str, runtime: dict) -> dict:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (name, spec, status, runtime, created, updated) VALUES (?,?,?,?,?,?)",
                (name, json.dumps(spec), status, json.dumps(runtime), now, now),
            )
        return self.get_job(name)  # type: ignore[return-value]

    def get_job(self, name: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, spec, status, runtime, created, updated FROM jobs WHERE name=?", (name,)
            ).fetchone()
        return self._job_row(row) if row else None

    def list_jobs(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, spec, status, runtime, created, updated FROM jobs ORDER BY created DESC"
            ).fetchall()
        return [self._job_row(r) for r in rows]

    def update_job(self, name: str, *, status: str | None = None, spec: dict | None = None,
                   **runtime: Any) -> dict:
        """Merge ``runtime`` keys into the job's runtime; set status/spec when given."""
        with self._lock:
            job = self.get_job(name)
            if job is None:
                raise KeyError(name)
            merged = {**job["runtime"], **runtime}
            self._db.execute(
                "UPDATE jobs SET status=?, spec=?, runtime=?, updated=? WHERE name=?",
                (status or job["status"], json.dumps(spec if spec is not None else job["spec"]),
                 json.dumps(merged), time.time(), name),
            )
            return self.get_job(name)  # type: ignore[return-value]

    @staticmethod
    def _job_row(row: tuple) -> dict:
        return {
            "name": row[0], "spec": json.loads(row[1]), "status": row[2],
            "runtime": json.loads(row[3]), "created": row[4], "updated": row[5],
        }
