"""The pipeline's batch buffer, and the record encoding it starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from lms_sync.batch import Batch
from lms_sync.canonical import Course, Enrollment, Learner


def test_a_batch_ends_at_its_record_count_or_its_bytes_whichever_first():
    small = Batch(max_records=3, max_bytes=10_000)
    assert [small.add(Learner(external_id=str(i))) for i in range(3)] == [False, False, True]
    big_raw = {"blob": "x" * 4_000}
    by_bytes = Batch(max_records=100, max_bytes=10_000)
    assert [by_bytes.add(Learner(external_id=str(i), raw=big_raw)) for i in range(3)] == [False, False, True]
    assert len(by_bytes) == 3 and by_bytes.size > 12_000
    assert [r.external_id for r in by_bytes] == ["0", "1", "2"]
    by_bytes.clear()
    assert len(by_bytes) == 0 and by_bytes.size == 0 and not by_bytes


def test_raw_is_encoded_once_compact_with_sorted_keys():
    course = Course(external_id="c1", title="T", raw={"b": 1, "a": {"d": [1, 2], "c": "é"}})
    enc = course.encoded()
    assert enc.row[1] == '{"a":{"c":"é","d":[1,2]},"b":1}' and enc.size == len(enc.row[1].encode())
    assert course.encoded() is enc  # cached
    assert enc.row[-1] == enc.digest == course.content_hash() and len(enc.digest) == 40
    assert enc.row[:-1] == ("c1", enc.row[1], "course", "T", None, None, None, None)
    huge = Course(external_id="c1", raw={"n": 2**70})  # beyond orjson's integers
    assert huge.encoded().row[1] == f'{{"n":{2**70}}}'


def test_the_digest_follows_every_stored_value_and_a_change_encodes_again():
    one = Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1", raw={"a": 1})
    same = Enrollment(external_id="u1:c1", learner_external_id="u1", course_external_id="c1", raw={"a": 1})
    assert one.content_hash() == same.content_hash()
    digests = {one.content_hash()}
    for change in ({"raw": {"a": 2}}, {"course_external_id": "c2"}, {"progress_pct": 0.0},
                   {"passed": False}, {"vendor_status": ""}):
        digests.add(one.model_copy(update=change).content_hash())
    assert len(digests) == 6
    before = one.content_hash()
    one.status = "completed"  # set after encoding: encoded again
    assert one.content_hash() != before and one.encoded().row[2] == "completed"


def test_datetimes_are_aware_utc_whatever_the_input():
    naive = datetime(2024, 5, 1, 8, 0)
    east = datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    one = Enrollment(external_id="e", learner_external_id="u", course_external_id="c",
                     started_at=naive, completed_at=east, assigned_at="2024-05-01T08:00:00Z")
    assert one.started_at == one.completed_at == one.assigned_at == naive.replace(tzinfo=UTC)
    assert all(v.tzinfo is UTC for v in (one.started_at, one.completed_at, one.assigned_at))


def test_a_record_built_without_validation_encodes_alike():
    """model_construct (a connector whose vendor model already checked the types) gives the
    same row and digest as a validated record, the enum default included."""
    fields = dict(external_id="e", learner_external_id="u", course_external_id="c", raw={"b": [1]},
                  started_at=datetime(2024, 5, 1, tzinfo=UTC), progress_pct=10.0)
    built = Enrollment.model_construct(**fields)
    assert built.encoded() == Enrollment(**fields).encoded()
