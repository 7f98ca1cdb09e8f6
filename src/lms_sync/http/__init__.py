"""The one HTTP layer every connector uses: client, auth, budget, paging, errors."""

from lms_sync.http.auth import BasicAuth, HeaderAuth, Token, TokenAuth
from lms_sync.http.client import HttpClient
from lms_sync.http.paging import (
    NextUrlPaginator,
    PageNumberPaginator,
    PageTokenPaginator,
    Paginator,
    SortGuard,
    SortValuePaginator,
)

__all__ = [
    "BasicAuth", "HeaderAuth", "HttpClient", "NextUrlPaginator", "PageNumberPaginator",
    "PageTokenPaginator", "Paginator", "SortGuard", "SortValuePaginator", "Token", "TokenAuth",
]
