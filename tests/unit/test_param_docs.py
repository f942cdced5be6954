"""Every operator, sensor, trigger and notifier of the package documents each of its arguments (``:param name:``).

As the providers' operators do: a DAG author reads the class docstring (or the rendered API docs),
not the code, to learn what an argument means, its unit and whether it is templated. The classes are
found by walking the packages, so a new operator is held to the same rule without a list to update.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest
from airflow.sdk import BaseNotifier, BaseOperator, BaseSensorOperator
from airflow.triggers.base import BaseTrigger

PACKAGES = ("edge_training.operators", "edge_training.sensors", "edge_training.triggers",
            "edge_training.notifications")
BASES = (BaseOperator, BaseSensorOperator, BaseTrigger, BaseNotifier)

#: What the walk must find at least, so the test cannot pass by finding nothing.
EXPECTED = {
    "EdgeVMReadinessOperator",
    "StackHubPartitionOperator",
    "AzureMLSubmitJobOperator",
    "AzureMLRegisterModelOperator",
    "EvaluateGateOperator",
    "ModelImageBuildOperator",
    "ModelImagePushOperator",
    "AzureMLJobSensor",
    "AzureMLJobTrigger",
    "StackHubPartitionTrigger",
    "EdgeAlertNotifier",
}

# ":param name:" or Sphinx's typed ":param type name:".
_PARAM = re.compile(r"^\s*:param\s+(?:[^:\s]+\s+)?(\w+)\s*:", re.MULTILINE)
_NOT_ARGUMENTS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def package_classes() -> list[type]:
    """Public operator, sensor, trigger and notifier classes defined in the packages' modules."""
    found: dict[str, type] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, BASES)
                    and obj.__module__ == module.__name__
                    and not name.startswith("_")
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[key] for key in sorted(found)]


def init_arguments(cls: type) -> list[str]:
    """The keyword arguments of ``cls.__init__``: no self, no ``*args``/``**kwargs``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind not in _NOT_ARGUMENTS]


def documented(cls: type) -> list[str]:
    """The names of the ``:param name:`` entries in the class's own docstring."""
    return _PARAM.findall(cls.__dict__.get("__doc__") or "")


def param_doc_problems(cls: type) -> list[str]:
    """What is wrong with a class's ``:param:`` entries, as sentences; empty when nothing is."""
    # An __init__ inherited from Airflow's base class is documented there, not here.
    owner = next(c for c in cls.__mro__ if "__init__" in vars(c))
    own_init = owner.__module__.startswith("edge_training.")
    arguments = init_arguments(cls)
    names = documented(cls)
    problems = []
    if own_init:
        problems += [f"{cls.__name__}: argument {a!r} has no ':param {a}:'" for a in arguments if a not in names]
    problems += [f"{cls.__name__}: ':param {n}:' names no argument of __init__" for n in names if n not in arguments]
    repeated = sorted(n for n in set(names) if names.count(n) > 1)
    problems += [f"{cls.__name__}: ':param {n}:' appears {names.count(n)} times" for n in repeated]
    return problems


CLASSES = package_classes()


def test_the_walk_finds_every_operator_sensor_trigger_and_notifier():
    names = {cls.__name__ for cls in CLASSES}
    missing = EXPECTED - names
    assert not missing, f"expected the walk over {PACKAGES} to find {sorted(missing)}, found {sorted(names)}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_argument_is_documented_and_every_param_is_an_argument(cls):
    assert init_arguments(cls), f"{cls.__name__}: found no arguments in {inspect.signature(cls.__init__)}"
    problems = param_doc_problems(cls)
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_missing_an_unknown_and_a_repeated_param():
    class Sample(BaseOperator):
        """Sample.

        :param str documented: typed Sphinx form.
        :param gone: no such argument.
        :param documented: twice.
        """

        def __init__(self, *, documented: str, undocumented: int = 0, **kwargs):
            super().__init__(**kwargs)

    Sample.__module__ = "edge_training.operators.sample"  # as if defined in the package
    assert sorted(param_doc_problems(Sample)) == [
        "Sample: ':param documented:' appears 2 times",
        "Sample: ':param gone:' names no argument of __init__",
        "Sample: argument 'undocumented' has no ':param undocumented:'",
    ]
