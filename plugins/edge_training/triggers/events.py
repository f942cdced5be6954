"""The one vocabulary of this package's trigger events, for the triggers that send them and the tasks that read them.

Every event payload is a JSON object with:

- ``status``, one of
  - ``success`` (``EVENT_SUCCESS``): what was awaited happened (the AML job Completed; the partition is written);
  - ``failed`` (``EVENT_FAILED``): it ended and never will (the AML job Failed, was Canceled...);
  - ``timeout`` (``EVENT_TIMEOUT``): the trigger's deadline passed first;
  - ``error`` (``EVENT_ERROR``): the wait itself could not go on (a refused key, a bad name, a job
    that does not exist, transient errors beyond their budget);
- ``message``: one sentence saying what happened, for the task log and the task's error.

The rest names what was awaited, with the same key wherever the meaning is the same:

- AML job (``AzureMLJobTrigger``): ``job_name``; ``job_status``, the job's AML status when last seen
  (after the cancel, on a timeout; None if never seen); ``studio_url``; ``log_offset``;
  ``deadline_reason``; on a timeout also ``canceled`` (whether the trigger canceled the job).
- Stack Hub partition (``StackHubPartitionTrigger``): ``container`` and ``prefix``.

A task reading an event finishes on ``success``, raises the service's own error on ``failed``, its
timeout error on ``timeout`` and a retryable error on ``error`` or anything else.
"""

from __future__ import annotations

from typing import Any

from airflow.triggers.base import TriggerEvent

EVENT_SUCCESS = "success"
EVENT_FAILED = "failed"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_STATUSES = frozenset({EVENT_SUCCESS, EVENT_FAILED, EVENT_TIMEOUT, EVENT_ERROR})


def trigger_event(status: str, message: str, **details: Any) -> TriggerEvent:
    """An event in the vocabulary above; any other status is a bug in the trigger, so it raises."""
    if status not in EVENT_STATUSES:
        raise ValueError(f"trigger event status {status!r}: expected one of {sorted(EVENT_STATUSES)}")
    return TriggerEvent({"status": status, "message": message, **details})
