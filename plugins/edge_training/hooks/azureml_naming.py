"""AML job names: deterministic names from DAG, partition and data fingerprint, and their attempt suffixes.

Kept apart from the hook because the name is what makes submission idempotent (a retry finds the job an
earlier try submitted), and it is pure: no SDK, no connection.
"""

from __future__ import annotations

import hashlib
import re

from edge_training.exceptions import AzureMLError

# AML job names: letters, digits, '-' and '_', starting with a letter or digit, at most 255 long.
JOB_NAME_MAX = 255
_JOB_NAME_BAD = re.compile(r"[^a-z0-9_-]+")
_ATTEMPT_SUFFIX = re.compile(r"^(?P<base>.+)-a(?P<n>\d+)$")
#: Room kept for the attempt suffix ("-a2" ... "-a999") when a base name is truncated.
_SUFFIX_ROOM = 5
_FINGERPRINT_CHARS = 16


def sanitize_job_name(text: str) -> str:
    """Lower-case, map every run of disallowed characters to '-', trim separators at both ends."""
    cleaned = _JOB_NAME_BAD.sub("-", text.lower()).strip("-_")
    return re.sub(r"-{2,}", "-", cleaned)


def build_job_name(dag_id: str, partition: str, data_fingerprint: str) -> str:
    """Deterministic AML job name for one DAG, one partition and one version of its data.

    The same inputs always give the same name, so a retry, a cleared task or a re-run backfill
    finds the job it (or an earlier try) submitted. A long DAG id is cut, and a hash of the full
    identity is added so two cut names cannot collide.
    """
    if not dag_id or not partition or not data_fingerprint:
        raise AzureMLError(
            "AML job name needs a dag_id, a partition and a data fingerprint; found "
            f"dag_id={dag_id!r}, partition={partition!r}, data_fingerprint={data_fingerprint!r}"
        )
    fingerprint = sanitize_job_name(data_fingerprint)[:_FINGERPRINT_CHARS]
    stem = sanitize_job_name(f"{dag_id}-{partition}")
    name = f"{stem}-{fingerprint}"
    limit = JOB_NAME_MAX - _SUFFIX_ROOM
    if len(name) > limit:
        identity = hashlib.sha256(f"{dag_id}\0{partition}\0{data_fingerprint}".encode()).hexdigest()[:8]
        keep = limit - len(fingerprint) - len(identity) - 2
        name = f"{stem[:keep].rstrip('-_')}-{identity}-{fingerprint}"
    if not name[0].isalnum():
        name = f"j{name}"[:limit]
    return name


def attempt_name(base: str, attempt: int) -> str:
    """Name of the n-th attempt: the base name first, then ``base-a2``, ``base-a3``..."""
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, found {attempt}")
    return base if attempt == 1 else f"{base}-a{attempt}"
