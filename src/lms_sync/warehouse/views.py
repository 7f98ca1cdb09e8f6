"""The views: ``learner_progress`` (one flat row per live enrollment), ``org_unit_paths``
and ``compliance`` (docs/contracts.md, "Warehouse").

A migration creates the views of its time: ``LEARNER_PROGRESS_SQL_V1`` (0001) left in
the enrollments of soft-deleted learners and courses; ``LEARNER_PROGRESS_SQL_V2`` (0004)
did not; ``LEARNER_PROGRESS_SQL`` (0007 on) is the current one, with the learner's
primary org unit and the assignment and certificate columns. Date arithmetic and string
concatenation differ per database, so ``org_unit_paths_sql`` and ``compliance_sql`` take
the dialect name (``postgresql``, ``sqlite``, ``mysql``).
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
LEARNER_PROGRESS_SQL_V2 = LEARNER_PROGRESS_SQL_V1.replace(
    "WHERE e.deleted_at IS NULL",
    "WHERE e.deleted_at IS NULL AND l.deleted_at IS NULL AND c.deleted_at IS NULL")

# 0007: the primary org unit's path and the assignment/certificate columns, appended
# after the V2 columns (readers that select by position keep working). The primary unit
# of a learner account: its live memberships of live units, a unit of kind 'department'
# first, then the unit first seen (lowest id) -- a fixed, documented rule (README).
LEARNER_PROGRESS_SQL = LEARNER_PROGRESS_SQL_V2.replace("""    e.updated_at AS updated_at
FROM enrollments e""", """    e.updated_at AS updated_at,
    pp.path AS org_unit_path,
    e.assigned AS assigned,
    e.required AS required,
    e.certificate_expires_at AS certificate_expires_at
FROM enrollments e""").replace("""LEFT JOIN persons p ON p.id = l.person_id
""", """LEFT JOIN persons p ON p.id = l.person_id
LEFT JOIN (
    SELECT ranked.learner_id, ranked.org_unit_id FROM (
        SELECT m.learner_id, m.org_unit_id,
               ROW_NUMBER() OVER (PARTITION BY m.learner_id ORDER BY
                   CASE WHEN u.kind = 'department' THEN 0 ELSE 1 END, u.id) AS n
        FROM learner_org_units m
        JOIN org_units u ON u.id = m.org_unit_id
        WHERE m.deleted_at IS NULL AND u.deleted_at IS NULL
    ) ranked WHERE ranked.n = 1
) pu ON pu.learner_id = l.id
LEFT JOIN org_unit_paths pp ON pp.org_unit_id = pu.org_unit_id
""")

DROP_LEARNER_PROGRESS_SQL = "DROP VIEW IF EXISTS learner_progress"

# per dialect: (a unit's name as the start of a path, joining parent path and child name)
_PATH_SQL = {
    "postgresql": ("CAST(COALESCE(u.name, '(unnamed)') AS TEXT)",
                   "t.path || ' / ' || COALESCE(c.name, '(unnamed)')"),
    "sqlite": ("CAST(COALESCE(u.name, '(unnamed)') AS TEXT)",
               "t.path || ' / ' || COALESCE(c.name, '(unnamed)')"),
    # MariaDB types a recursive column by its first SELECT: room for the deepest path
    "mysql": ("CAST(COALESCE(u.name, '(unnamed)') AS CHAR(4000))",
              "CONCAT(t.path, ' / ', COALESCE(c.name, '(unnamed)'))"),
}
PATH_DEPTH = 30
"""Deepest tree level a path is built for (a guard: vendors' trees are a few levels)."""


def org_unit_paths_sql(dialect: str) -> str:
    """``org_unit_paths``: every live org unit with its path from the top ("Operations /
    Kitchen"). A unit under a soft-deleted (or missing) parent starts its own path; units
    in a parent cycle (bad vendor data) have no row; a stub unit (never listed) shows as
    ``(unnamed)``."""
    start, step = _PATH_SQL[dialect]
    return f"""
CREATE VIEW org_unit_paths AS
WITH RECURSIVE tree (org_unit_id, path, depth) AS (
    SELECT u.id, {start}, 0
    FROM org_units u
    LEFT JOIN org_units up ON up.id = u.parent_id AND up.deleted_at IS NULL
    WHERE u.deleted_at IS NULL AND up.id IS NULL
    UNION ALL
    SELECT c.id, {step}, t.depth + 1
    FROM tree t
    JOIN org_units c ON c.parent_id = t.org_unit_id
    WHERE c.deleted_at IS NULL AND t.depth < {PATH_DEPTH}
)
SELECT org_unit_id, path, depth FROM tree
"""


# per dialect: now, and now + 90 days (columns hold UTC: timestamptz on PostgreSQL, naive
# UTC text/DATETIME on SQLite/MariaDB, compared with the database's UTC clock)
_NOW_SQL = {
    "postgresql": ("CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP + INTERVAL '90 days'"),
    "sqlite": ("strftime('%Y-%m-%d %H:%M:%f', 'now')",
               "strftime('%Y-%m-%d %H:%M:%f', 'now', '+90 days')"),
    "mysql": ("UTC_TIMESTAMP(6)", "UTC_TIMESTAMP(6) + INTERVAL 90 DAY"),
}
OPEN_STATUSES = "('completed', 'not_applicable', 'withdrawn', 'expired')"
"""Statuses that are never overdue: done, exempt, or no longer asked of the learner."""


def compliance_sql(dialect: str) -> str:
    """``compliance``: one row per live org unit and course that a live member of the unit
    (direct membership only: a department's sub-departments are rows of their own) has a
    live enrollment in. Counts are of those enrollments: ``enrolled`` all; ``assigned`` /
    ``required`` where the vendor says so; ``completed``; ``overdue`` (not completed, and
    the vendor says overdue or the due date has passed); ``certificates_expiring_90d``
    (a certificate expiring from now to 90 days on)."""
    now, soon = _NOW_SQL[dialect]
    return f"""
CREATE VIEW compliance AS
SELECT
    u.id AS org_unit_id,
    u.source_id AS source_id,
    u.external_id AS org_unit_external_id,
    u.name AS org_unit_name,
    u.kind AS org_unit_kind,
    pp.path AS org_unit_path,
    c.id AS course_id,
    c.external_id AS course_external_id,
    c.title AS course_title,
    COUNT(*) AS enrolled,
    COUNT(CASE WHEN e.assigned THEN 1 END) AS assigned,
    COUNT(CASE WHEN e.required THEN 1 END) AS required,
    COUNT(CASE WHEN e.status = 'completed' THEN 1 END) AS completed,
    COUNT(CASE WHEN e.status NOT IN {OPEN_STATUSES}
               AND (e.is_overdue OR e.due_at < {now}) THEN 1 END) AS overdue,
    COUNT(CASE WHEN e.certificate_expires_at >= {now}
               AND e.certificate_expires_at < {soon} THEN 1 END) AS certificates_expiring_90d
FROM learner_org_units m
JOIN org_units u ON u.id = m.org_unit_id
JOIN learners l ON l.id = m.learner_id
JOIN enrollments e ON e.learner_id = l.id
JOIN courses c ON c.id = e.course_id
LEFT JOIN org_unit_paths pp ON pp.org_unit_id = u.id
WHERE m.deleted_at IS NULL AND u.deleted_at IS NULL AND l.deleted_at IS NULL
  AND e.deleted_at IS NULL AND c.deleted_at IS NULL
GROUP BY u.id, u.source_id, u.external_id, u.name, u.kind, pp.path, c.id, c.external_id, c.title
"""


DROP_ORG_UNIT_PATHS_SQL = "DROP VIEW IF EXISTS org_unit_paths"
DROP_COMPLIANCE_SQL = "DROP VIEW IF EXISTS compliance"
