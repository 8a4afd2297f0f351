"""The chaos campaign's schedule and records are pure functions of its seed."""

from __future__ import annotations

from chaos.schedule import KINDS, POISON, records, schedule
from streamtrain.data.events import InvalidEvent, decode_event
from streamtrain.models.problem import Problem


def test_the_same_seed_gives_the_same_campaign() -> None:
    assert schedule(12, 60) == schedule(12, 60)
    assert records(12, 500) == records(12, 500)
    assert schedule(12, 60) != schedule(13, 60)
    assert records(12, 500) != records(13, 500)


def test_the_schedule_fits_its_time_box_and_draws_every_kind_over_five_minutes() -> None:
    faults = schedule(1, 300)
    assert all(6.0 <= f.at < 295.0 for f in faults)
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    assert {f.kind for f in faults} == set(KINDS)


def test_every_poison_record_is_refused_by_the_decoder() -> None:
    for value in POISON:
        try:
            decode_event(value, Problem.CLASSIFICATION)
        except InvalidEvent:
            continue
        raise AssertionError(f"{value!r} decodes")
