"""BatchWriter on every database: what a row holds after a write, and when it is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import func, select, update

from lms_sync.canonical import ActivityProgress, Course, Enrollment, Learner, Snapshot
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import (
    activity_progress,
    courses,
    enrollment_history,
    enrollments,
    learners,
    stat_snapshots,
)
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


def _old_hash(record) -> str:
    """The row hash before Record.encoded(): sha1 of the stdlib JSON of model_dump."""
    import hashlib

    from lms_sync.canonical import stable_json

    return hashlib.sha1(stable_json(record.model_dump(mode="json")).encode()).hexdigest()


def _count(wh, table) -> int:
    with wh.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_row_hashed_the_old_way_is_rewritten_once_with_no_history(warehouse):
    """After the upgrade every row's stored hash differs from the record's: the row gets the new
    hash, once, and a change of the hash alone is no change of status (no history row)."""
    enrollment = Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1",
                            status="in_progress", progress_pct=40.0, raw={"b": 1, "a": [1, 2]})
    snapshot = Snapshot(external_id="s1", metric="m", value=2.5, figures={"x": 1}, raw={"v": 1})
    write(warehouse, [enrollment, snapshot])
    assert _count(warehouse, enrollment_history) == 1
    with warehouse.engine.begin() as conn:  # what an older version stored
        conn.execute(update(enrollments).values(row_hash=_old_hash(enrollment)))
        conn.execute(update(stat_snapshots).values(row_hash=_old_hash(snapshot)))
    again = [enrollment.model_copy(), snapshot.model_copy()]
    with warehouse.engine.begin() as conn:
        stats = BatchWriter(conn, "src").write(again, now_utc())
    assert (dict(stats.updated), stats.history) == ({"enrollments": 1}, 0)
    assert dict(stats.unchanged) == {"stat_snapshots": 1} and not stats.inserted
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(enrollments.c.row_hash)).scalar() == enrollment.content_hash()
        assert conn.execute(select(stat_snapshots.c.row_hash)).scalar() == snapshot.content_hash()
    assert _count(warehouse, enrollment_history) == 1 and _count(warehouse, stat_snapshots) == 1
    with warehouse.engine.begin() as conn:  # and then it is unchanged
        assert BatchWriter(conn, "src").write(again, now_utc()).written == 0


def test_what_a_batch_wrote_is_counted_alike_on_every_database(warehouse):
    """inserted / updated / unchanged / stubs / history: the batch.written and sync.finished
    figures, and the learner ids identity re-examines."""
    first = [Learner(external_id="u1", email="a@x.org"), Learner(external_id="u2"),
             Course(external_id="c1", parent_external_id="p0"),
             Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1"),
             Enrollment(external_id="u3:c2", learner_external_id="u3", course_external_id="c2"),
             ActivityProgress(external_id="u4:c1:l1", learner_external_id="u4", course_external_id="c1",
                              enrollment_external_id="u1:c1")]
    with warehouse.engine.begin() as conn:
        ensure_source(conn, "src", "absorb")
        writer = BatchWriter(conn, "src", "run-1")
        stats = writer.write(first, now_utc())
        learner_ids = dict(conn.execute(select(learners.c.external_id, learners.c.id)).all())
    assert dict(stats.inserted) == {"learners": 2, "courses": 1, "enrollments": 2, "activity_progress": 1}
    assert dict(stats.stubs) == {"courses": 2, "learners": 2}  # p0, c2; u3, u4
    assert stats.history == 2 and not stats.updated and not stats.unchanged
    assert writer.learner_ids == {learner_ids["u1"], learner_ids["u2"]}
    with warehouse.engine.connect() as conn:
        stub = conn.execute(select(learners).where(learners.c.external_id == "u3")).one()
        parent = conn.execute(select(courses.c.id, courses.c.kind, courses.c.row_hash)
                              .where(courses.c.external_id == "p0")).one()
        child = conn.execute(select(courses.c.parent_course_id).where(courses.c.external_id == "c1")).scalar()
        activity = conn.execute(select(activity_progress.c.enrollment_id,
                                       activity_progress.c.learner_id)).one()
        enrollment_id = conn.execute(select(enrollments.c.id)
                                     .where(enrollments.c.external_id == "u1:c1")).scalar()
        run_ids = set(conn.execute(select(enrollment_history.c.run_id)).scalars())
    assert (stub.row_hash, stub.is_placeholder, stub.raw) == ("", False, None)
    assert (parent.kind, parent.row_hash, child) == ("course", "", parent.id)
    assert activity == (enrollment_id, learner_ids["u4"]) and run_ids == {"run-1"}
    second = [Learner(external_id="u1", email="a@x.org"),  # unchanged
              Learner(external_id="u3", first_name="Three"),  # fills its stub
              Course(external_id="p0", title="Parent"),
              Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1",
                         status="completed", progress_pct=100.0),
              Enrollment(external_id="u3:c2", learner_external_id="u3", course_external_id="c2",
                         raw={"seen": 2})]  # changed, not in its history fields
    with warehouse.engine.begin() as conn:
        writer = BatchWriter(conn, "src", "run-2")
        stats = writer.write(second, now_utc())
    assert dict(stats.updated) == {"learners": 1, "courses": 1, "enrollments": 2}
    assert dict(stats.unchanged) == {"learners": 1} and not stats.inserted and not stats.stubs
    assert stats.history == 1 and stats.written == 4 and writer.learner_ids == {learner_ids["u3"]}
    assert stats.by_table() == {"learners": 1, "courses": 1, "enrollments": 2, "enrollment_history": 1}


def test_a_soft_deleted_row_comes_back_when_read_again(warehouse):
    learner = Learner(external_id="u1", email="a@x.org")
    write(warehouse, [learner])
    with warehouse.engine.begin() as conn:
        conn.execute(update(learners).values(deleted_at=now_utc()))
    with warehouse.engine.begin() as conn:
        stats = BatchWriter(conn, "src").write([learner], now_utc())
    assert dict(stats.updated) == {"learners": 1}
    with warehouse.engine.connect() as conn:
        assert conn.execute(select(learners.c.deleted_at)).scalar() is None


def test_stored_values_and_raw_read_back_alike_on_every_database(warehouse):
    """Binary COPY on PostgreSQL, executemany elsewhere: the same values come back."""
    when = datetime(2024, 3, 1, 12, 30, 15, 123456)  # naive: taken as UTC
    raw = {"z": [1, 2.5, None, True], "a": {"ü": "é", "n": None}, "t": "x\ty\n\"q\""}
    enrollment = Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1",
                            status="failed", passed=False, progress_pct=12.5, score=0.0,
                            started_at=when, completed_at=when.replace(tzinfo=UTC).astimezone(
                                timezone(timedelta(hours=-5))), vendor_status="Failed",
                            certificate_id="cert", credits=1.5, raw=raw)
    write(warehouse, [enrollment, Course(external_id="c1", kind="lesson", raw=None)])
    with warehouse.engine.connect() as conn:
        row = conn.execute(select(enrollments)).one()._mapping
        course = conn.execute(select(courses.c.kind, courses.c.raw)).one()
    assert row["started_at"] == row["completed_at"] == when.replace(tzinfo=UTC)
    assert (row["status"], row["passed"], row["progress_pct"], row["score"]) == ("failed", False, 12.5, 0.0)
    assert (row["vendor_status"], row["certificate_id"], row["credits"]) == ("Failed", "cert", 1.5)
    assert row["raw"] == raw and row["deleted_at"] is None and row["row_hash"] == enrollment.content_hash()
    assert tuple(course) == ("lesson", None)


def test_a_snapshot_series_gains_a_row_only_when_its_figures_change(warehouse):
    first, later = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    one = Snapshot(external_id="s1", metric="m", subject_id="x", value=1.0, figures={"a": 1, "b": [1]})
    other = Snapshot(external_id="s2", metric="m", value=None, raw={"k": "v"})
    with warehouse.engine.begin() as conn:
        ensure_source(conn, "src", "udemy")
        stats = BatchWriter(conn, "src").write([one, other], now_utc(), as_of=first)
    assert dict(stats.inserted) == {"stat_snapshots": 2}
    changed = one.model_copy(update={"figures": {"a": 2, "b": [1]}})
    with warehouse.engine.begin() as conn:
        stats = BatchWriter(conn, "src").write([changed, other.model_copy()], now_utc(), as_of=later)
    assert (dict(stats.inserted), dict(stats.unchanged)) == ({"stat_snapshots": 1}, {"stat_snapshots": 1})
    with warehouse.engine.connect() as conn:
        rows = conn.execute(select(stat_snapshots.c.external_id, stat_snapshots.c.as_of,
                                   stat_snapshots.c.first_seen_at, stat_snapshots.c.figures,
                                   stat_snapshots.c.raw)
                            .order_by(stat_snapshots.c.external_id, stat_snapshots.c.as_of)).all()
    assert [tuple(r) for r in rows] == [("s1", first, first, {"a": 1, "b": [1]}, None),
                                       ("s1", later, later, {"a": 2, "b": [1]}, None),
                                       ("s2", first, first, {}, {"k": "v"})]
