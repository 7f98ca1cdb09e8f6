"""The ``learner_progress`` view: one flat row per live enrollment (docs/contracts.md,
"Warehouse").

A migration creates the view of its time: ``LEARNER_PROGRESS_SQL_V1`` (0001) left in
the enrollments of soft-deleted learners and courses; ``LEARNER_PROGRESS_SQL`` (0004
on) is the current one.
"""

LEARNER_PROGRESS_SQL_V1 = """
CREATE VIEW learner_progress AS
SELECT
    e.id AS enrollment_id,
    p.id AS person_id,
    p.primary_email AS person_email,
    p.display_name AS person_name,
    l.id AS learner_id,
    e.source_id AS source_id,
    s.kind AS source_kind,
    l.external_id AS learner_external_id,
    l.email AS learner_email,
    l.hr_id AS hr_id,
    l.first_name AS first_name,
    l.last_name AS last_name,
    c.id AS course_id,
    c.external_id AS course_external_id,
    c.kind AS course_kind,
    c.title AS course_title,
    c.category AS course_category,
    e.status AS status,
    e.passed AS passed,
    e.progress_pct AS progress_pct,
    e.score AS score,
    e.time_spent_seconds AS time_spent_seconds,
    e.enrolled_at AS enrolled_at,
    e.started_at AS started_at,
    e.completed_at AS completed_at,
    e.due_at AS due_at,
    e.expires_at AS expires_at,
    e.last_activity_at AS last_activity_at,
    e.is_overdue AS is_overdue,
    e.vendor_status AS vendor_status,
    e.updated_at AS updated_at
FROM enrollments e
JOIN learners l ON l.id = e.learner_id
JOIN courses c ON c.id = e.course_id
JOIN sources s ON s.id = e.source_id
LEFT JOIN persons p ON p.id = l.person_id
WHERE e.deleted_at IS NULL
"""

# an enrollment is live only while its learner account and its course are: a deleted
# account (someone who left) must not count as enrolled, overdue or not started
LEARNER_PROGRESS_SQL = LEARNER_PROGRESS_SQL_V1.replace(
    "WHERE e.deleted_at IS NULL",
    "WHERE e.deleted_at IS NULL AND l.deleted_at IS NULL AND c.deleted_at IS NULL")

DROP_LEARNER_PROGRESS_SQL = "DROP VIEW IF EXISTS learner_progress"
