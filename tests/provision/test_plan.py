"""The provisioning plan from plain data: who should exist, and what to send."""

from __future__ import annotations

from lms_sync.provision.plan import (
    LearnerRow,
    RemoteUser,
    Wanted,
    make_plan,
    refusal,
    wanted_people,
)
from lms_sync.warehouse.identity import normalize_hr_id as key


def account(pid, source="hr", hr="E1", first="Jane", last="Doe", active=True, deleted=False,
            lid=None, display=None):
    return LearnerRow(lid or pid, pid, source, hr, first, last, display, active, deleted)


def user(rid, first="Jane", last="Doe", active=True, uid=None):
    return RemoteUser(uid or f"id-{rid}", rid, first, last, active)


def test_a_person_with_a_live_account_is_wanted_active_under_their_hr_id():
    wanted, no_hr = wanted_people([account(1, hr=" E1 "), account(2, hr=None),
                                   account(3, hr="n/a")], ["hr"], key)
    assert wanted == [Wanted("E1", "Jane", "Doe", True)]
    assert no_hr == 2  # no HR id, and a placeholder one: skipped, counted


def test_a_person_whose_accounts_are_all_deleted_or_inactive_has_left():
    rows = [account(1, hr="E1", deleted=True), account(1, source="lms", hr="E1", deleted=True, lid=9),
            account(2, hr="E2", active=False)]
    wanted, _ = wanted_people(rows, ["hr", "lms"], key)
    assert sorted(wanted, key=lambda w: w.remote_id) == [Wanted("E1", "Jane", "Doe", False),
                                                         Wanted("E2", "Jane", "Doe", False)]
    # one live account anywhere in the from_sources keeps them
    wanted, _ = wanted_people([*rows, account(1, source="lms", hr="E1", lid=10)], ["hr", "lms"], key)
    assert Wanted("E1", "Jane", "Doe", True) in wanted


def test_the_id_and_name_come_from_the_live_account_of_the_first_source():
    rows = [account(1, source="lms", hr="L-7", first="J.", lid=1),
            account(1, source="hr", hr="E7", first="Jane", lid=2),
            account(1, source="hr", hr="E-OLD", first="Old", deleted=True, lid=3),
            account(2, hr="E8", first=None, last=None, display="Aino Virtanen Jr")]
    wanted, _ = wanted_people(rows, ["hr", "lms"], key)
    assert sorted(wanted, key=lambda w: w.remote_id) == [
        Wanted("E7", "Jane", "Doe", True), Wanted("E8", "Aino", "Virtanen Jr", True)]


def test_plan_kinds():
    wanted = [Wanted("E1", "Jane", "Doe", True),      # no user yet: create
              Wanted("E2", "Jane", "Smith", True),    # name changed: update
              Wanted("E3", "Jane", "Doe", True),      # deactivated by hand, works here: update
              Wanted("E4", "Jane", "Doe", True),      # in step
              Wanted("E5", "Jane", "Doe", False),     # left: deactivate
              Wanted("E6", "Jane", "Doe", False),     # left, already inactive
              Wanted("E7", "Jane", "Doe", False)]     # left, never had a user
    remote = [user("E2"), user("e3 ", active=False), user("E4"), user("E5"), user("E6", active=False),
              user(None, uid="hand-made"), user("X-99")]
    plan = make_plan(wanted, remote, key)
    assert [w.remote_id for w in plan.create] == ["E1"]
    assert [(c.user, c.before.remote_id) for c in plan.update] == [
        (Wanted("E2", "Jane", "Smith", True), "E2"),
        (Wanted("e3 ", "Jane", "Doe", True), "e3 ")]  # named by the vendor's own remoteId
    assert [u.remote_id for u in plan.deactivate] == ["E5"]
    assert (plan.unchanged, plan.absent, plan.untouched) == (2, 1, 2)
    assert (plan.remote_users, plan.active_remote) == (7, 5)


def test_users_without_a_remote_id_or_unknown_to_hr_are_never_touched():
    remote = [user(None, uid="a"), user("", uid="b"), user("CONTRACTOR-1")]
    plan = make_plan([], remote, key)
    assert (plan.create, plan.update, plan.deactivate, plan.untouched) == ([], [], [], 3)


def test_deactivations_held_or_off():
    wanted, remote = [Wanted("E5", "Jane", "Doe", False)], [user("E5")]
    held = make_plan(wanted, remote, key, hold=True)
    assert held.deactivate == [] and [u.remote_id for u in held.held] == ["E5"]
    off = make_plan(wanted, remote, key, deactivate=False)
    assert off.deactivate == off.held == [] and off.unchanged == 1


def test_a_name_hr_lacks_is_kept_not_blanked():
    plan = make_plan([Wanted("E1", "", "", True)], [user("E1", "Jane", "Doe")], key)
    assert plan.update == [] and plan.unchanged == 1


def test_refusal_past_the_fraction_of_active_users():
    remote = [user(f"E{i}") for i in range(100)] + [user(f"I{i}", active=False) for i in range(50)]
    leavers = [Wanted(f"E{i}", "Jane", "Doe", False) for i in range(10)]
    plan = make_plan(leavers, remote, key)
    assert refusal(plan, 0.05) == ("would deactivate 10 of 100 active users (10.0%), more than "
                                   "max_deactivate_fraction 0.05")
    assert refusal(plan, 0.10) is None  # exactly the cap is allowed
    assert refusal(make_plan(leavers[:5], remote, key), 0.05) is None
