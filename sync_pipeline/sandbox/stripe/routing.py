"""A small router for `/v1/...`: handlers register with `@route("POST", "/v1/invoices/{id}/pay")`.

Handlers are plain functions `(ctx, params, *path_values) -> dict` that return the response
object or raise `StripeApiError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    segments: tuple[str | None, ...]  # None marks a path parameter
    handler: Handler
    writes: bool


ROUTES: list[Route] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    segments = tuple(None if part.startswith("{") else part for part in pattern.strip("/").split("/"))

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, pattern, segments, handler, writes=method in ("POST", "DELETE")))
        return handler

    return register


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self._by_shape: dict[tuple[str, int], list[Route]] = {}
        for item in routes:
            self._by_shape.setdefault((item.method, len(item.segments)), []).append(item)
        # Literal segments win over parameters (`/customers/search` before `/customers/{id}`).
        for candidates in self._by_shape.values():
            candidates.sort(key=lambda r: sum(segment is None for segment in r.segments))

    def match(self, method: str, path: str) -> tuple[Route, list[str]] | None:
        parts = path.strip("/").split("/")
        for candidate in self._by_shape.get((method, len(parts)), ()):
            values = []
            for expected, actual in zip(candidate.segments, parts, strict=True):
                if expected is None:
                    values.append(actual)
                elif expected != actual:
                    break
            else:
                return candidate, values
        return None

    def allowed_methods(self, path: str) -> list[str]:
        return [method for method in ("GET", "POST", "DELETE") if self.match(method, path)]
