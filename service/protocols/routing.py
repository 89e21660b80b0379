"""`DocumentedRoute`: an APIRoute documented by a typed signature but answered by a plain handler.

FastAPI builds a route's OpenAPI entry (request body schema, parameters, answer schema) from its endpoint's
signature; letting it also parse the body through pydantic would cost several times the route's own work on
tensor bodies. So the route is given `doc` (a stub whose signature carries the types: `(body: EncodeRequest)
-> EncodeResponse`) for the schema, and `handler` (`async (request) -> Response`) for the requests: no
dependency solving, no body validation, no answer serialisation in between. The route's name (and operation
id) is the stub's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["DocumentedRoute", "doc_stub"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def doc_stub(name: str, doc: str, answer: Any, /, **parameters: Any) -> Callable[..., Any]:
    """A function named `name` with docstring `doc`, whose signature takes `parameters` (name -> annotation,
    or (annotation, default)) and returns `answer`: what FastAPI reads to document a route."""

    async def stub(**_: Any) -> Any:  # never called
        raise NotImplementedError

    params = []
    for key, spec in parameters.items():
        annotation, default = spec if isinstance(spec, tuple) else (spec, inspect.Parameter.empty)
        params.append(
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )
    stub.__signature__ = inspect.Signature(params, return_annotation=answer)  # type: ignore[attr-defined]
    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = doc
    return stub


class DocumentedRoute(APIRoute):
    """A route whose OpenAPI entry comes from `doc`'s signature and whose requests go to `handler`."""

    def __init__(self, path: str, doc: Callable[..., Any], *, handler: Handler, **kwargs: Any) -> None:
        self._handler = handler
        super().__init__(path, doc, **kwargs)

    def get_route_handler(self) -> Handler:
        return self._handler
