"""HTTP answers as values, and the errors that become them.

Handlers raise HttpError wherever they find the request cannot be served;
the application turns it into a JSON answer in one place.
"""

from __future__ import annotations

import dataclasses
import http
import json

RETRY_AFTER_SECONDS = 5
JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def status_line(self) -> str:
        return f"{self.status} {http.HTTPStatus(self.status).phrase}"


def json_response(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(payload).encode()
    return Response(status, body, (("Content-Type", JSON), *headers))


class HttpError(Exception):
    """A request the app answers with an error status and a JSON message."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return json_response(self.status, {"error": self.message}, self.headers)


def unavailable(message: str) -> HttpError:
    """A 503 that tells the client when to try again: the cause is expected to pass."""
    return HttpError(503, message, (("Retry-After", str(RETRY_AFTER_SECONDS)),))
