"""BatchWriter on every database: what a row holds after a write, and when it is written."""

from __future__ import annotations

from sqlalchemy import select

from lms_sync.canonical import ActivityProgress, Course, Enrollment, Learner, Snapshot
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import activity_progress, courses, enrollments, learners, stat_snapshots
from lms_sync.warehouse.upsert import BatchWriter


def write(wh, records, source: str = "src") -> None:
    with wh.engine.begin() as conn:
        ensure_source(conn, source, "absorb")
        BatchWriter(conn, source).write(records, now_utc())


def test_text_longer_than_its_column_is_cut_not_a_failed_batch(warehouse):
    """A 1,200-character course title used to fail the batch on PostgreSQL and MariaDB (on
    every run: the vendor sends it again), while SQLite kept it."""
    long = "Ä" + "t" * 1_199
    batch = [Course(external_id="c1", title=long, category="k" * 300),
             Learner(external_id="u1", first_name="f" * 400, department="d" * 300),
             Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1",
                        vendor_status="v" * 150),
             Snapshot(external_id="quiz:1:q:1", metric="academy.quiz_question",
                          subject_title="q" * 1_500, value=1.0)]
    write(warehouse, batch)
    with warehouse.engine.connect() as conn:
        title, category = conn.execute(select(courses.c.title, courses.c.category)).one()
        first = conn.execute(select(learners.c.first_name)).scalar()
        subject = conn.execute(select(stat_snapshots.c.subject_title)).scalar()
    assert title == long[: courses.c.title.type.length] and title.startswith("Ät")
    assert category == "k" * courses.c.category.type.length
    assert first == "f" * learners.c.first_name.type.length
    assert subject == "q" * stat_snapshots.c.subject_title.type.length
    with warehouse.engine.begin() as conn:  # the same records again: nothing to write
        stats = BatchWriter(conn, "src").write(batch, now_utc())
    assert stats.written == 0


def test_ids_differing_only_in_case_accent_or_trailing_space_are_rows_of_their_own(warehouse):
    ids = ["abc", "ABC", "é1", "e1", "x", "x "]
    batch = [Learner(external_id=i, email=f"{n}@example.com") for n, i in enumerate(ids)]
    write(warehouse, batch)
    with warehouse.engine.connect() as conn:
        stored = dict(conn.execute(select(learners.c.external_id, learners.c.email)).all())
    assert stored == {i: f"{n}@example.com" for n, i in enumerate(ids)}
    with warehouse.engine.begin() as conn:  # and a second write changes nothing
        assert BatchWriter(conn, "src").write(batch, now_utc()).written == 0


def test_numbers_read_back_as_written_and_add_no_history(warehouse):
    """MariaDB's FLOAT kept ~7 digits: 195605.5 s came back as 195606, and an unchanged
    progress of 33.333333 % looked changed, appending history rows."""
    course = Course(external_id="c1", duration_minutes=12.3456789)
    enrollment = Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1",
                            status="in_progress", progress_pct=33.333333, time_spent_seconds=195605.5,
                            score=16777217.0, raw={"n": 1})
    write(warehouse, [course, enrollment])
    again = enrollment.model_copy(update={"raw": {"n": 2}})  # a change outside the history fields
    with warehouse.engine.begin() as conn:
        stats = BatchWriter(conn, "src").write([again], now_utc())
    assert stats.written == 1 and stats.history == 0
    with warehouse.engine.connect() as conn:
        row = conn.execute(select(enrollments.c.progress_pct, enrollments.c.time_spent_seconds,
                                  enrollments.c.score)).one()
        minutes = conn.execute(select(courses.c.duration_minutes)).scalar()
    assert tuple(row) == (33.333333, 195605.5, 16777217.0) and minutes == 12.3456789


def test_an_activity_written_before_its_enrollment_gets_it_when_the_enrollment_arrives(warehouse):
    """An unchanged activity is never written again, so its enrollment_id, NULL while the
    enrollment was unknown, is filled in when the enrollment is written."""
    activity = ActivityProgress(external_id="u1:c1:l1", learner_external_id="u1",
                                course_external_id="c1", enrollment_external_id="u1:c1",
                                status="completed", progress_pct=100)
    other = ActivityProgress(external_id="u2:c1:l1", learner_external_id="u2",
                             course_external_id="c1", enrollment_external_id="u2:c1")
    write(warehouse, [activity, other])
    write(warehouse, [Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1"),
                      activity])  # the activity unchanged: skipped by its hash
    with warehouse.engine.connect() as conn:
        enrollment_id = conn.execute(select(enrollments.c.id)).scalar()
        linked = dict(conn.execute(select(activity_progress.c.external_id,
                                          activity_progress.c.enrollment_id)).all())
    assert linked == {"u1:c1:l1": enrollment_id, "u2:c1:l1": None}


def test_a_course_whose_parent_is_removed_loses_its_parent(warehouse):
    write(warehouse, [Course(external_id="p"), Course(external_id="c", parent_external_id="p")])
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(courses.c.parent_course_id)
                            .where(courses.c.external_id == "c")).scalar() is not None
    write(warehouse, [Course(external_id="c")])
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(courses.c.parent_course_id)
                            .where(courses.c.external_id == "c")).scalar() is None
