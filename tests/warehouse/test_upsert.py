"""BatchWriter on every database: what a row holds after a write, and when it is written."""

from __future__ import annotations

from sqlalchemy import select

from lms_sync.canonical import Course, Enrollment, Learner, Snapshot
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import courses, learners, stat_snapshots
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
