"""Operator arguments as rendered: checked for their type, never parsed back from text.

The DAG renders templates as native objects (``render_template_as_native_obj=True``) and passes
values between tasks as task outputs, so a flag arrives as a bool, a number as a number and a task's
result as the dict it returned. Text where one of those belongs means templates were rendered as
text; it is refused naming the task and the argument rather than guessed at (``bool("False")`` is
True, and ``"None"`` is not None).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from edge_training.exceptions import OperatorArgumentError

_TEXT_HINT = " (text: render the DAG's templates as native objects, render_template_as_native_obj=True)"


def _refuse(task: Any, name: str, expected: str, value: Any) -> OperatorArgumentError:
    hint = _TEXT_HINT if isinstance(value, str) else ""
    return OperatorArgumentError(
        f"task {getattr(task, 'task_id', task)!r}: argument {name!r} expected {expected}, "
        f"found {value!r} ({type(value).__name__}){hint}"
    )


def flag(task: Any, name: str, value: Any) -> bool:
    """A bool argument."""
    if isinstance(value, bool):
        return value
    raise _refuse(task, name, "a boolean", value)


def number(task: Any, name: str, value: Any, *, minimum: float | None = None) -> float:
    """A finite number argument, at least ``minimum`` when given."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if minimum is None or value >= minimum:
            return float(value)
        raise _refuse(task, name, f"a number of at least {minimum:g}", value)
    raise _refuse(task, name, "a finite number", value)


def seconds(task: Any, name: str, value: Any) -> float | None:
    """A duration argument: positive seconds or a timedelta; None means no limit."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise _refuse(task, name, "a positive duration (seconds or a timedelta) or None", value)


def mapping(task: Any, name: str, value: Any, *, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dict argument (typically an upstream task's output) holding ``keys``."""
    if isinstance(value, dict) and all(key in value for key in keys):
        return value
    expected = "a dict" + (f" with keys {list(keys)}" if keys else "")
    if isinstance(value, dict):
        expected += f" (missing {[k for k in keys if k not in value]})"
    raise _refuse(task, name, expected, value if not isinstance(value, str) else value[:200])


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, the default every deferrable operator here takes (as the
    providers' operators do); a DAG sets ``deferrable`` explicitly to choose per task or per run."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def identifier(task: Any, name: str, value: Any) -> str:
    """A name, version, fingerprint or commit. Native rendering turns a literal such as ``"3"`` (a model
    version) into the int 3; an int is taken back as its digits, anything else but text is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _refuse(task, name, "text (a name, version or fingerprint)", value)
