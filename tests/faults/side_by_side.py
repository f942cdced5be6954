"""Cases that only watch their own runs, run side by side to keep the battery short.

A case marked ``@side_by_side`` touches nothing but its own partitions, runs and AML-double faults (scoped
to its partition's job names), so it cannot disturb another such case. All the selected ones start
together, each in a thread, at the battery's first test; each case's pytest test then waits for its own
outcome and fails with its own assertion. Cases that stop a shared service, kill an Airflow component or
break a shared connection ask for ``alone`` instead: it waits until every side-by-side case has ended.

While they run, the edge_vm pool is widened through the REST API (as an operator would for a larger
VM): with its 2 slots the cases would wait on each other, and the pool's bound is proved by the e2e
backfill test, not here. It is restored when the last case ends.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

#: The cases, by test name, in the order their modules define them.
CASES: dict[str, Callable] = {}
#: Slots of the edge_vm pool while the cases run side by side.
WIDE_POOL_SLOTS = 16
CASE_TIMEOUT_S = 1500


def side_by_side(case: Callable) -> Callable:
    """Register ``case`` (a test body taking fixtures by name) and return the pytest test that waits
    for its outcome. The test keeps the case's name and docstring; its only fixture is the group."""
    CASES[case.__name__] = case

    def test(side_by_side_group: "SideBySideGroup") -> None:
        side_by_side_group.outcome(case.__name__)

    # Not functools.wraps: pytest would follow __wrapped__ and ask for the case's fixtures itself.
    test.__name__, test.__qualname__, test.__doc__ = case.__name__, case.__qualname__, case.__doc__
    test.__module__ = case.__module__
    return test


class SideBySideGroup:
    """The selected cases, started together; ``outcome`` re-raises a case's own failure in its test."""

    def __init__(self, selected: list[str], fixtures: dict, airflow, on_finish=None) -> None:
        self.selected = [name for name in CASES if name in selected]
        self.fixtures = fixtures
        self.airflow = airflow
        self._on_finish = on_finish
        self.futures: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._restore_slots: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if not self.selected or self.futures:
            return
        self._restore_slots = self.airflow.set_edge_vm_slots(WIDE_POOL_SLOTS)
        self._pool = ThreadPoolExecutor(max_workers=len(self.selected), thread_name_prefix="side-by-side")
        for name in self.selected:
            self.futures[name] = self._pool.submit(self._run, name)

    def _run(self, name: str) -> None:
        case = CASES[name]
        wanted = case.__code__.co_varnames[:case.__code__.co_argcount]
        missing = [arg for arg in wanted if arg not in self.fixtures]
        if missing:
            raise TypeError(f"side-by-side case {name} asks for {missing}: the group provides "
                            f"{sorted(self.fixtures)}")
        try:
            case(**{arg: self.fixtures[arg] for arg in wanted})
        except BaseException:
            print(f"side-by-side case {name} failed:\n{traceback.format_exc()}", flush=True)
            raise

    def outcome(self, name: str) -> None:
        if name not in self.futures:
            raise AssertionError(f"side-by-side case {name} was not started (not selected at collection)")
        self.futures[name].result(timeout=CASE_TIMEOUT_S)

    def finish(self) -> None:
        """Wait for every case, then give the pool its slots back and release what the cases shared (once)."""
        with self._lock:
            if self.futures:
                wait(list(self.futures.values()), timeout=CASE_TIMEOUT_S)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            if self._restore_slots is not None:
                self.airflow.set_edge_vm_slots(self._restore_slots)
                self._restore_slots = None
            if self._on_finish is not None:
                self._on_finish()
                self._on_finish = None

