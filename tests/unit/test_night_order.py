"""A backfill runs its nights side by side; each night waits for the earlier ones."""

from __future__ import annotations

from dataclasses import dataclass

from recsys import pipeline


@dataclass
class _Run:
    run_id: str


class _TaskInstance:
    """Answers get_previous_dagrun as the Task SDK does: the latest earlier run in a state."""

    def __init__(self, earlier: dict[str, str]):
        self.earlier = earlier  # run_id -> state, oldest first

    def get_previous_dagrun(self, state=None):
        matching = [run_id for run_id, s in self.earlier.items() if state is None or s == state]
        return _Run(matching[-1]) if matching else None


def test_a_night_waits_while_an_earlier_night_runs_or_is_queued():
    assert pipeline.wait_for_earlier_nights(_TaskInstance({"backfill__2026-03-08": "running"})) is False
    assert pipeline.wait_for_earlier_nights(_TaskInstance({"backfill__2026-03-08": "queued"})) is False


def test_a_night_goes_once_every_earlier_night_has_finished():
    finished = {"backfill__2026-03-07": "success", "backfill__2026-03-08": "failed"}
    assert pipeline.wait_for_earlier_nights(_TaskInstance(finished)) is True
    assert pipeline.wait_for_earlier_nights(_TaskInstance({})) is True
