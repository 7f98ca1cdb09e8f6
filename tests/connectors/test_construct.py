"""construct(): a canonical record without a second validation, as validating would make it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lms_sync import canonical as cn
from lms_sync.canonical import normalize_email as email
from lms_sync.connectors.construct import construct

NOW = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)

CASES: list[tuple[type[cn.Record], dict]] = [
    (cn.Enrollment, dict(external_id="u:c", learner_external_id="u", course_external_id="c",
                         status=cn.EnrollmentStatus.COMPLETED.value, passed=True, progress_pct=100.0,
                         time_spent_seconds=61.5, started_at=NOW, completed_at=NOW, raw={"id": 1})),
    (cn.Learner, dict(external_id="u", email="a@b.example", first_name="A", is_active=None, raw={})),
    (cn.Course, dict(external_id="c", kind=cn.CourseKind.LECTURE.value, title="T", duration_minutes=1.5)),
    (cn.ActivityProgress, dict(external_id="u:c:l", learner_external_id="u", course_external_id="c",
                               activity_type="lesson", status="in_progress")),
    (cn.Snapshot, dict(external_id="m|s|", metric="m", subject_id="s")),
    (cn.OrgUnit, dict(external_id="d", name="D", kind=cn.OrgUnitKind.DEPARTMENT.value)),
]


@pytest.mark.parametrize(("cls", "values"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_the_record_validating_makes(cls: type[cn.Record], values: dict) -> None:
    built = construct(cls, **values)
    validated = cls(**values)
    assert built == validated
    assert built.__dict__ == validated.__dict__ and list(built.__dict__) == list(validated.__dict__)
    assert built.model_fields_set == validated.model_fields_set == set(values)
    assert built.model_dump(mode="json") == validated.model_dump(mode="json")
    assert built.content_hash() == validated.content_hash()


def test_default_factories_give_each_record_its_own() -> None:
    a = construct(cn.Snapshot, external_id="a", metric="m")
    b = construct(cn.Snapshot, external_id="b", metric="m")
    assert a.figures == {} and a.figures is not b.figures


@pytest.mark.parametrize(("field", "value"), [("external_id", ""), ("external_id", "x" * 256),
                                              ("progress_pct", 100.5), ("progress_pct", -1.0),
                                              ("time_spent_seconds", -0.1),
                                              ("certificate_id", "c" * 256)])
def test_a_value_out_of_its_constraints_is_a_value_error(field: str, value: object) -> None:
    values = {**CASES[0][1], field: value}
    with pytest.raises(ValueError, match=field):
        construct(cn.Enrollment, **values)
    with pytest.raises(ValueError):  # as validating says (the record is skipped either way)
        cn.Enrollment(**values)


def test_a_missing_or_unknown_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="learner_external_id"):
        construct(cn.Enrollment, external_id="x", course_external_id="c")
    with pytest.raises(TypeError, match="colour"):
        construct(cn.Course, external_id="c", colour="red")


def test_email_as_the_learner_keeps_it() -> None:
    for raw in (" A@B.Example ", "", None, "   "):
        assert email(raw) == cn.Learner(external_id="u", email=raw).email
