"""Identity after provisioning: Sparkwise completions name their participant by remoteId;
once provisioning has made a user of every HR person, a sync links each completion to the
same person as that HR id's Absorb account, through a real Sparkwise user (not a stub)."""

from __future__ import annotations

from sqlalchemy import select

from lms_sync.warehouse.tables import enrollments, learners
from tests.provision.conftest import HR, SPARKWISE


def test_completions_match_the_absorb_person_by_remote_id(world):
    assert world.sync().ok
    assert world.run().ok
    result = world.sync(SPARKWISE)  # the identity pass follows the run
    assert result.ok, result.error
    people = world.hr_people()
    now = world.sessions.now.strftime("%Y-%m-%dT%H:%M:%SZ")  # a future session is not read yet
    mine = [c for c in world.sessions.completions()
            if c["remoteUserId"] in people and c["sessionScheduledStartAt"] <= now]
    assert len({c["remoteUserId"] for c in mine}) >= 5

    with world.warehouse.engine.connect() as conn:
        absorb = dict(conn.execute(select(learners.c.hr_id, learners.c.person_id)
                                   .where(learners.c.source_id == HR)).all())
        rows = conn.execute(
            select(enrollments.c.external_id, learners.c.external_id, learners.c.person_id,
                   learners.c.raw)
            .join(learners, learners.c.id == enrollments.c.learner_id)
            .where(enrollments.c.source_id == SPARKWISE)).all()
    by_completion = {r[0]: r for r in rows}
    for completion in mine:
        _, learner_key, person, raw = by_completion[completion["id"]]
        assert learner_key == completion["remoteUserId"]
        assert person == absorb[completion["remoteUserId"]]  # the Absorb person
        assert "stub" not in raw and len(raw["id"]) == 64  # a provisioned Sparkwise user
