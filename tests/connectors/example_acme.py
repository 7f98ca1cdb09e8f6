"""The README's "Adding a vendor" example, as code: a whole connector on the shared stream
layer (tests/connectors/test_rest.py runs it over real HTTP into every warehouse)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from lms_sync.canonical import Learner
from lms_sync.connectors.base import Connector, ReadContext, Settings, Stream
from lms_sync.connectors.rest import RestStream, Text, VendorModel, describe_json
from lms_sync.http import HeaderAuth, NextUrlPaginator


class AcmeAuth(Settings):
    api_key: SecretStr


class AcmeUser(VendorModel):
    id: int
    email: Text = None
    name: Text = None


class Users(RestStream):
    name, path = "users", "v1/users"
    records, total_key = "data", "meta.total"  # where a page keeps its rows and the total
    total_table, full_refresh_tables = "learners", ("learners",)

    def paginator(self, ctx: ReadContext) -> NextUrlPaginator:
        return NextUrlPaginator(next_key="links.next")

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> Learner:
        user = AcmeUser.model_validate(row)  # the vendor's shape, validated once
        return Learner(external_id=str(user.id), email=user.email, display_name=user.name, raw=row)


class AcmeConnector(Connector):
    kind = "acme"
    Auth = AcmeAuth

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        key = self.auth.api_key.get_secret_value()
        self.make_client(HeaderAuth({"X-Api-Key": key}), describe_json("error.message"))

    def streams(self) -> list[Stream]:
        assert self.http is not None
        return [Users(self.http)]
