"""Udemy Business rows -> canonical records: pure, no I/O (tested value by value).

The Reporting API has no row ids: keys come from the lower-case email (learner ``<email>``,
enrollment ``<email>|<course_id>``); an anonymized row is a placeholder learner of its own,
keyed by a digest of its identifying fields. Status tables are data: the first field set
decides (docs/contracts.md, "Warehouse"). docs/vendors/udemy.md has the reasoning. Records
are built from the validated row models without validating again (:func:`construct`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, Field

from lms_sync import canonical
from lms_sync.canonical import ActivityProgress, Course, CourseKind, Enrollment, Learner, Snapshot
from lms_sync.canonical import EnrollmentStatus as S
from lms_sync.canonical import normalize_email as email
from lms_sync.connectors.construct import construct
from lms_sync.connectors.rest import Number, Text, VendorModel, When

ANONYMIZED = "anonymized user"
ACTIVITY_METRIC = "udemy.user_activity"

# docs/contracts.md, "Warehouse", udemy row: the first field that is set decides; else not_started.
ENROLLMENT_STATUS_RULES = (("course_completion_date", S.COMPLETED),
                           ("course_first_completion_date", S.COMPLETED),
                           ("completion_ratio", S.IN_PROGRESS), ("course_start_date", S.IN_PROGRESS))
ITEM_STATUS_RULES = (("item_completion_time", S.COMPLETED), ("item_completion_ratio", S.IN_PROGRESS),
                     ("item_start_time", S.IN_PROGRESS))
ITEM_KINDS = {"lecture": "lecture", "video lecture": "lecture", "nonvideo lecture": "lecture",
              "non-video lecture": "lecture", "quiz": "quiz", "practice test": "quiz",
              "coding exercise": "quiz", "assignment": "quiz"}
ASSIGNED = {"yes": True, "no": False}  # is_assigned (case, spaces ignored); else unknown (None)
USER_FIELDS = ("lms_user_id",)  # user-level fields without the user_ prefix
ANON_KEY_FIELDS = ("id", "lms_user_id", "course_id", "item_type", "item_id", "report_date",
                   "course_enroll_date", "course_start_date", "item_start_time", "user_joined_date")


def status_of(row: BaseModel, rules: tuple[tuple[str, S], ...]) -> S:
    for name, status in rules:
        if getattr(row, name, None):
            return status
    return S.NOT_STARTED


def _pct(value: float | None) -> float | None:
    return None if value is None else min(100.0, max(0.0, float(value)))


def _score(text: str | None) -> float | None:
    """A quiz's final result as a number: ``80``, ``80%``, ``8/10`` (-> 80); else None."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:%|/\s*(\d+(?:\.\d+)?))?\s*", text or "")
    if not m or not m.group(2):
        return float(m.group(1)) if m else None
    return float(m.group(1)) / float(m.group(2)) * 100 if float(m.group(2)) else None


class UdemyCourse(VendorModel):
    id: int
    title: Text = None
    description: Text = None
    estimated_content_length: Number = None
    categories: list[str] = Field(default_factory=list)


class UserRow(VendorModel):  # the user part of a Reporting row, the same in every stream
    user_email: str
    user_name: Text = None
    user_surname: Text = None
    user_external_id: Text = None
    user_is_deactivated: bool | None = None

    def key(self, anon: str | None = None) -> str:
        return anon or self.user_email.strip().lower()

    @property
    def name(self) -> str | None:
        return " ".join(p for p in (self.user_name, self.user_surname) if p) or None


class CourseActivity(UserRow):
    course_id: int
    completion_ratio: Number = None
    num_video_consumed_minutes: Number = None
    course_enroll_date: When = None
    course_start_date: When = None
    course_completion_date: When = None
    course_first_completion_date: When = None
    course_last_accessed_date: When = None
    is_assigned: Text = None


class UserProgress(UserRow):
    course_id: int
    item_id: Decimal
    item_type: Text = None
    item_start_time: When = None
    item_completion_time: When = None
    # The vendor's table swaps two descriptions: this is the item's % complete (docs/vendors/udemy.md).
    item_completion_ratio: Number = None
    final_result: Text = Field(None, validation_alias=AliasChoices("item_final_result",
                                                                   "Item_final_result"))


class UserActivity(UserRow):
    report_date: datetime  # its own date names the day (not made UTC: that could change it)


def is_anonymized(row: dict[str, Any]) -> bool:
    return str(row.get("user_email") or "").strip().lower() == ANONYMIZED


def anon_key(stream: str, row: dict[str, Any]) -> str:
    """A stable key for one anonymized row, from its identifying fields."""
    ident = {k: row.get(k) for k in ANON_KEY_FIELDS if row.get(k) not in (None, "")}
    digest = hashlib.sha1(canonical.stable_json([stream, ident]).encode(), usedforsecurity=False)
    return f"anon:{stream}:{digest.hexdigest()[:20]}"


# Normalizers take the row and, where the caller validated it already, its model (validated once).

def normalize_course(raw: dict[str, Any]) -> Course:
    c = UdemyCourse.model_validate(raw)
    return construct(Course, external_id=str(c.id), kind=CourseKind.COURSE.value, title=c.title,
                     category=c.categories[0] if c.categories else None, description=c.description,
                     duration_minutes=c.estimated_content_length, raw=raw)


def normalize_learner(raw: dict[str, Any], anon: str | None = None, u: UserRow | None = None) -> Learner:
    user_raw = {k: v for k, v in raw.items() if k.startswith("user_") or k in USER_FIELDS}
    if anon:
        return construct(Learner, external_id=anon, display_name="Anonymized User",
                         is_placeholder=True, is_active=None, raw=user_raw)
    u = u or UserRow.model_validate(raw)
    return construct(Learner, external_id=u.key(), email=email(u.user_email), first_name=u.user_name,
                     last_name=u.user_surname, display_name=u.name, hr_id=u.user_external_id,
                     is_active=not u.user_is_deactivated, raw=user_raw)


def normalize_enrollment(raw: dict[str, Any], anon: str | None = None,
                         r: CourseActivity | None = None) -> Enrollment:
    r = r or CourseActivity.model_validate(raw)
    who, minutes = r.key(anon), r.num_video_consumed_minutes
    return construct(
        Enrollment, external_id=f"{who}|{r.course_id}", learner_external_id=who,
        course_external_id=str(r.course_id), status=status_of(r, ENROLLMENT_STATUS_RULES).value,
        progress_pct=_pct(r.completion_ratio),
        time_spent_seconds=None if minutes is None else max(0.0, minutes * 60),
        enrolled_at=r.course_enroll_date, started_at=r.course_start_date,
        completed_at=r.course_completion_date or r.course_first_completion_date,
        last_activity_at=r.course_last_accessed_date,
        assigned=ASSIGNED.get((r.is_assigned or "").lower()), raw=raw)


def normalize_progress(raw: dict[str, Any], anon: str | None = None,
                       r: UserProgress | None = None) -> ActivityProgress:
    r = r or UserProgress.model_validate(raw)
    who, item_type = r.key(anon), (r.item_type or "lecture").lower()
    kind = ITEM_KINDS.get(item_type, "quiz" if "quiz" in item_type else "lecture")
    status, pct = status_of(r, ITEM_STATUS_RULES), _pct(r.item_completion_ratio)
    if pct is None and status == S.COMPLETED:
        pct = 100.0
    item = str(int(r.item_id)) if r.item_id == r.item_id.to_integral_value() else str(r.item_id)
    return construct(
        ActivityProgress, external_id=f"{who}|{r.course_id}|{kind}:{item}", learner_external_id=who,
        course_external_id=str(r.course_id),
        enrollment_external_id=None if anon else f"{who}|{r.course_id}",
        activity_type=item_type, status=status.value, progress_pct=pct,
        score=_score(r.final_result) if kind == "quiz" else None,
        started_at=r.item_start_time, completed_at=r.item_completion_time, raw=raw)


def normalize_activity(raw: dict[str, Any], anon: str | None = None) -> Snapshot:
    r = UserActivity.model_validate(raw)
    figures = {k: v for k, v in raw.items()
               if k.startswith("num_") and isinstance(v, int | float) and not isinstance(v, bool)}
    subject, day = r.key(anon), r.report_date.date().isoformat()
    return construct(Snapshot, external_id=f"{ACTIVITY_METRIC}|{subject}|{day}"[:255],  # as series() keys it
                     metric=ACTIVITY_METRIC, subject_id=subject or None, group_key=day,
                     subject_title="Anonymized User" if anon else r.name, figures=figures, raw=raw)
