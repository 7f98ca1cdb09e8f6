"""The README's "Adding a vendor" example, as code (keep the two alike): a whole connector
on the shared stream layer; tests/connectors/test_rest.py runs it over real HTTP."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from lms_sync.canonical import Learner
from lms_sync.connectors.base import Connector, ReadContext, Settings, Stream
from lms_sync.connectors.rest import RestStream, Text, VendorModel
from lms_sync.http import HeaderAuth, NextUrlPaginator


class AcmeAuth(Settings):
    api_key: SecretStr


class AcmeUser(VendorModel):                      # the vendor's row: validated once
    id: int
    email: Text = None


class Users(RestStream):                          # the page loop is HttpClient.paginate's
    name, path, records, total_key = "users", "v1/users", "data", "meta.total"
    total_table, full_refresh_tables = "learners", ("learners",)  # reconciled; soft deletes

    def paginator(self, ctx: ReadContext) -> NextUrlPaginator:
        return NextUrlPaginator(next_key="links.next")

    def normalize(self, row: dict[str, Any], ctx: ReadContext) -> Learner:  # pure
        user = AcmeUser.model_validate(row)
        return Learner(external_id=str(user.id), email=user.email, raw=row)


class AcmeConnector(Connector):
    kind, Auth = "acme", AcmeAuth

    def __init__(self, source: Any, log: Any) -> None:
        super().__init__(source, log)
        self.make_client(HeaderAuth({"X-Api-Key": self.auth.api_key.get_secret_value()}))

    def streams(self) -> list[Stream]:
        assert self.http is not None
        return [Users(self.http)]
