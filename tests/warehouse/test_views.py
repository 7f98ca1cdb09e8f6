"""The learner_progress view on every database: one row per live enrollment."""

from __future__ import annotations

from sqlalchemy import select, text, update

from lms_sync.canonical import Course, Enrollment, Learner
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import courses, learners
from lms_sync.warehouse.upsert import BatchWriter


def test_enrollments_of_deleted_learners_and_courses_are_not_in_learner_progress(warehouse):
    records = [Learner(external_id=f"u{i}", email=f"u{i}@example.com") for i in range(3)]
    records += [Course(external_id="c1", title="One"), Course(external_id="c2", title="Two")]
    records += [Enrollment(external_id=f"u{i}:c{c}", learner_external_id=f"u{i}",
                           course_external_id=f"c{c}", status="in_progress")
                for i in range(3) for c in (1, 2)]
    with warehouse.engine.begin() as conn:
        ensure_source(conn, "src", "absorb")
        BatchWriter(conn, "src").write(records, now_utc())

    def shown() -> set[tuple[str, str]]:
        with warehouse.engine.connect() as conn:
            return set(conn.execute(text(
                "SELECT learner_external_id, course_external_id FROM learner_progress")).all())

    assert len(shown()) == 6
    with warehouse.engine.begin() as conn:  # u0 left; course c2 was removed
        conn.execute(update(learners).where(learners.c.external_id == "u0").values(deleted_at=now_utc()))
        conn.execute(update(courses).where(courses.c.external_id == "c2").values(deleted_at=now_utc()))
    assert shown() == {("u1", "c1"), ("u2", "c1")}
    with warehouse.engine.connect() as conn:  # the rows themselves are kept
        assert len(conn.execute(select(learners.c.id)).all()) == 3
