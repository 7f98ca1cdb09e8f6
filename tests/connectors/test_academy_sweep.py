"""SweepUsers: the Monotree user list the sweep keeps for a run, as columns."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime

from lms_sync.connectors.academy_records import onboarding_enrollment
from lms_sync.connectors.academy_sweep import SweepState, SweepUsers

ROWS = [
    {"id": 30, "type": "employee", "last_active_on": "2026-11-20", "created_at": "2026-01-02T10:00:00Z",
     "registered_at": "2026-01-03T09:30:00.123456+02:00", "hired_at": "2025-12-01", "name": "C"},
    {"id": 10, "type": "kiosk", "last_active_on": None, "created_at": "2025-05-05T00:00:00Z",
     "registered_at": None, "hired_at": None},
    {"id": 20, "type": None, "last_active_on": "not a date", "created_at": "2025-06-06T00:00:00Z",
     "registered_at": "yesterday-ish", "hired_at": None},
    {"id": "x"}, {"name": "no id"}, "not a row",
]


def test_columns_give_back_every_field_the_sweep_reads():
    users = SweepUsers.of(ROWS)
    assert list(users.ids) == [10, 20, 30]  # rows without an integer id are left out; id order
    kiosk, odd, employee = users
    assert employee.type == "employee" and employee.last_active_on == date(2026, 11, 20)
    assert employee.created_on == date(2026, 1, 2)
    assert employee.registered_on == date(2026, 1, 3)  # the day as the vendor wrote it
    assert employee.registered_at == datetime(2026, 1, 3, 7, 30, 0, 123456, tzinfo=UTC)
    assert employee.hired_at == datetime(2025, 12, 1, tzinfo=UTC)
    assert (kiosk.type, kiosk.last_active_on, kiosk.registered_at, kiosk.hired_at) == (
        "kiosk", None, None, None)
    assert odd.type is None and odd.last_active_on == date.max  # unreadable: treated as recent
    assert odd.registered_at == "yesterday-ish" and odd.registered_on == date.max
    assert list(SweepUsers.of(ROWS, ["Kiosk"]).ids) == [20, 30]  # types the sweep skips
    assert users.position_after(None) == 0 and users.position_after(20) == 2


def test_onboarding_enrollment_is_the_same_from_the_columns_as_from_the_row():
    onboarding = {"onboarding_days": 5, "onboarding_completed_at": None, "is_overdue": False}
    user = SweepUsers.of(ROWS)[2]
    from_columns = onboarding_enrollment(user._asdict(), onboarding, date(2026, 11, 24))
    from_row = onboarding_enrollment(ROWS[0], onboarding, date(2026, 11, 24))
    assert from_columns.content_hash() == from_row.content_hash()
    assert from_columns.enrolled_at == datetime(2025, 12, 1, tzinfo=UTC)


def test_a_user_costs_a_few_dozen_bytes():
    users = SweepUsers()
    for i in range(20_000):
        users.add({"id": i, "type": "employee", "last_active_on": "2026-11-20",
                   "created_at": "2026-01-02T10:00:00Z", "registered_at": f"2026-01-03T09:{i % 60:02d}:00Z",
                   "hired_at": "2025-12-01"})
    arrays = [users.ids, users._type, *users._days, *users._times]
    assert sum(sys.getsizeof(a) for a in arrays) < 20_000 * 45  # as NamedTuples: ~210 bytes a user


def test_the_cursor_groups_open_onboardings_by_due_day_and_reads_the_older_shape():
    st = SweepState(due={7: date(2026, 11, 30), 3: date(2026, 11, 30), 5: date(2026, 12, 1)})
    cursor = st.to_cursor()
    assert cursor["due"] == {"2026-11-30": [3, 7], "2026-12-01": [5]}
    assert SweepState.from_cursor(cursor).due == st.due
    older = {"due": {"7": "2026-11-30", "3": "2026-11-30", "5": "2026-12-01", "x": "2026-12-02",
                     "9": "not a day"}}
    assert SweepState.from_cursor(older).due == st.due
    odd = {"due": {"2026-11-30": [3, "7", True], "garbage": [5], "2026-12-01": "5"}}
    assert SweepState.from_cursor(odd).due == {3: date(2026, 11, 30)}
