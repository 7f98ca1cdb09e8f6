"""The canonical warehouse schema (docs/contracts.md, "Warehouse") as SQLAlchemy Core tables.

Every vendor row is keyed by ``(source_id, external_id)`` with a surrogate
integer ``id``; ``row_hash`` is the digest of the canonical record and is how
upserts tell an unchanged row from a changed one without comparing columns.
The views (``learner_progress``, ``org_unit_paths``, ``compliance``) are created by the
migrations (see ``views.py``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, sqlite

from lms_sync.warehouse.types import JSONType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL/MySQL; INTEGER on SQLite so it is the rowid alias.
Id = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
SourceId = String(100)
# MariaDB/MySQL compare text case-, accent- and trailing-space-insensitively by default:
# vendor ids ``abc``, ``ABC`` and ``abc `` are three rows, as on PostgreSQL and SQLite.
# Migration 0003 sets the server's binary no-pad collation (MySQL 8: utf8mb4_0900_bin).
ExternalId = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb")
# MariaDB/MySQL FLOAT is 4 bytes (~7 digits: 195605.5 s read back as 195606); DOUBLE keeps
# what PostgreSQL and SQLite keep (migration 0003)
Number = Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")
# MariaDB/MySQL BLOB holds 64 KiB: 4,096 page digests; LONGBLOB as PostgreSQL's bytea
Digests = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _id() -> Column:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _source_fk() -> Column:
    return Column("source_id", SourceId, ForeignKey("sources.id"), nullable=False)


def _lifecycle() -> list[Column]:
    return [
        Column("raw", JSONType),
        Column("row_hash", String(40), nullable=False),
        Column("first_seen_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        Column("deleted_at", UTCDateTime()),
    ]


def _progress() -> list[Column]:
    return [
        Column("status", String(20), nullable=False),
        Column("passed", Boolean),
        Column("progress_pct", Number),
        Column("score", Number),
        Column("time_spent_seconds", Number),
        Column("enrolled_at", UTCDateTime()),
        Column("started_at", UTCDateTime()),
        Column("completed_at", UTCDateTime()),
        Column("due_at", UTCDateTime()),
        Column("expires_at", UTCDateTime()),
        Column("last_activity_at", UTCDateTime()),
        Column("is_overdue", Boolean),
        Column("vendor_status", String(100)),
    ]


sources = Table(
    "sources",
    metadata,
    Column("id", SourceId, primary_key=True),
    Column("kind", String(50), nullable=False),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("last_success_at", UTCDateTime()),
)

persons = Table(
    "persons",
    metadata,
    _id(),
    Column("primary_email", String(320)),
    Column("display_name", String(500)),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime()),
)

learners = Table(
    "learners",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("person_id", Id, ForeignKey("persons.id")),
    Column("email", String(320)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("display_name", String(500)),
    Column("hr_id", String(255)),
    Column("department", String(255)),
    Column("is_active", Boolean),
    Column("is_placeholder", Boolean, nullable=False, default=False),
    *_lifecycle(),
    # identity matching (warehouse/identity/; migration 0002): the normalized keys
    # this learner links by (NULL: never links that way) and when it was last matched
    Column("email_key", String(320)),
    Column("hr_key", String(255)),
    Column("matched_at", UTCDateTime()),
    UniqueConstraint("source_id", "external_id"),
    Index(None, "email"),
    Index(None, "hr_id"),
    Index(None, "person_id"),
    Index(None, "email_key"),
    Index(None, "hr_key"),
)

courses = Table(
    "courses",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("title", String(1000)),
    Column("category", String(255)),
    Column("description", Text),
    Column("duration_minutes", Number),
    Column("parent_course_id", Id, ForeignKey("courses.id")),
    *_lifecycle(),
    UniqueConstraint("source_id", "external_id"),
)

enrollments = Table(
    "enrollments",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("learner_id", Id, ForeignKey("learners.id"), nullable=False),
    Column("course_id", Id, ForeignKey("courses.id"), nullable=False),
    *_progress(),
    *_lifecycle(),
    # assignment and certificate (migration 0007); NULL where the vendor does not say
    Column("assigned", Boolean),
    Column("assigned_at", UTCDateTime()),
    Column("required", Boolean),
    Column("certificate_id", String(255)),
    Column("certificate_expires_at", UTCDateTime()),
    Column("credits", Number),
    UniqueConstraint("source_id", "external_id"),
    Index(None, "learner_id"),
    Index(None, "course_id"),
)

activity_progress = Table(
    "activity_progress",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("enrollment_id", Id, ForeignKey("enrollments.id")),
    Column("learner_id", Id, ForeignKey("learners.id"), nullable=False),
    Column("course_id", Id, ForeignKey("courses.id"), nullable=False),
    Column("activity_type", String(50)),
    *_progress(),
    *_lifecycle(),
    UniqueConstraint("source_id", "external_id"),
    Index(None, "learner_id"),
)

# departments, professions, groups (migration 0007); kind NULL: a stub (a membership named
# a unit its vendor did not list, e.g. an Absorb department list we may not read)
org_units = Table(
    "org_units",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("kind", String(20)),
    Column("name", String(500)),
    Column("parent_id", Id, ForeignKey("org_units.id")),
    *_lifecycle(),
    UniqueConstraint("source_id", "external_id"),
)

learner_org_units = Table(
    "learner_org_units",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("learner_id", Id, ForeignKey("learners.id"), nullable=False),
    Column("org_unit_id", Id, ForeignKey("org_units.id"), nullable=False),
    *_lifecycle(),
    UniqueConstraint("source_id", "external_id"),
    Index(None, "learner_id"),
    Index(None, "org_unit_id"),
)

enrollment_history = Table(
    "enrollment_history",
    metadata,
    _id(),
    Column("enrollment_id", Id, ForeignKey("enrollments.id"), nullable=False),
    Column("run_id", String(36)),
    Column("observed_at", UTCDateTime(), nullable=False),
    Column("status", String(20), nullable=False),
    Column("passed", Boolean),
    Column("progress_pct", Number),
    Column("completed_at", UTCDateTime()),
    Index(None, "enrollment_id"),
)

stat_snapshots = Table(
    "stat_snapshots",
    metadata,
    _id(),
    _source_fk(),
    Column("external_id", ExternalId, nullable=False),
    Column("metric", String(100), nullable=False),
    Column("subject_id", String(255)),
    Column("subject_title", String(1000)),
    Column("group_key", String(255), nullable=False),
    Column("as_of", UTCDateTime(), nullable=False),
    Column("value", Number),
    Column("figures", JSONType),
    *_lifecycle(),
    UniqueConstraint("source_id", "external_id", "as_of"),
    Index(None, "metric"),
)

person_merges = Table(
    "person_merges",
    metadata,
    _id(),
    Column("at", UTCDateTime(), nullable=False),
    Column("kept_person_id", Id, nullable=False),
    Column("merged_person_id", Id, nullable=False),
    Column("rule", String(100), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("detail", JSONType),
)

identity_overrides = Table(
    "identity_overrides",
    metadata,
    _id(),
    Column("learner_a_id", Id, ForeignKey("learners.id"), nullable=False),
    Column("learner_b_id", Id, ForeignKey("learners.id"), nullable=False),
    Column("action", String(10), nullable=False),
    Column("note", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("learner_a_id", "learner_b_id"),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    _id(),
    Column("run_id", String(36), nullable=False),
    Column("source_id", SourceId, ForeignKey("sources.id"), nullable=False),
    Column("stream", String(50), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("result", String(20), nullable=False),
    Column("records_read", Integer, nullable=False, default=0),
    Column("records_written", Integer, nullable=False, default=0),
    Column("records_skipped", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("cursor", JSONType),
    Column("vendor_total", Integer),  # the vendor's own count, where it reports one
    Column("distinct_read", Integer),  # distinct ids of that table this run read
    Column("records_excluded", Integer),  # rows of that total left out by design
    Index(None, "source_id", "stream", "started_at"),
    Index(None, "run_id"),
)

provision_actions = Table(
    "provision_actions",
    metadata,
    _id(),
    Column("run_id", String(36), nullable=False),
    Column("source_id", SourceId, ForeignKey("sources.id"), nullable=False),
    Column("action", String(20), nullable=False),  # create | update | deactivate
    Column("remote_id", String(255), nullable=False),  # the HR id the vendor keeps the user by
    Column("result", String(20), nullable=False),  # succeeded | failed
    Column("error", Text),  # the vendor's reason for a failed one
    Column("at", UTCDateTime(), nullable=False),
    Index(None, "source_id", "at"),
    Index(None, "run_id"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("source_id", SourceId, ForeignKey("sources.id"), primary_key=True),
    Column("stream", String(50), primary_key=True),
    Column("cursor", JSONType),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# the page digests of a stream's last clean run (connectors/skim.py): one row per stream
stream_pages = Table(
    "stream_pages",
    metadata,
    Column("source_id", SourceId, ForeignKey("sources.id"), primary_key=True),
    Column("stream", String(50), primary_key=True),
    Column("run_id", String(36), nullable=False),  # the run that saved them
    Column("fingerprint", String(32), nullable=False),  # of what shapes the records
    Column("pages", Integer, nullable=False),
    Column("digests", Digests, nullable=False),  # 16 bytes a page, in order
    Column("records_read", Integer, nullable=False),
    Column("distinct_read", Integer),
    Column("records_excluded", Integer, nullable=False),
    Column("saved_at", UTCDateTime(), nullable=False),
)

RECORD_TABLES: dict[str, Table] = {  # in the order a batch is written (referenced rows first)
    "learners": learners,
    "courses": courses,
    "org_units": org_units,
    "enrollments": enrollments,
    "activity_progress": activity_progress,
    "learner_org_units": learner_org_units,
    "stat_snapshots": stat_snapshots,
}
