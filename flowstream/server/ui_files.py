"""The web UI's files: the page, its script, its styles (a fixed list)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from litestar import MediaType, Response, get
from litestar.params import PathParameter

from .problems import ApiError

__all__ = ["ui_asset", "ui_index"]

_UI_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "vendor/dagre.min.js": "text/javascript; charset=utf-8",
}


def _ui_file(name: str) -> bytes:
    return resources.files("flowstream.server").joinpath("ui", name).read_bytes()


@get("/", include_in_schema=False, opt={"public": True}, sync_to_thread=False)
def ui_index() -> Response[bytes]:
    """The web UI's page."""
    return Response(_ui_file("index.html"), media_type=MediaType.HTML)


@get(
    "/ui/{path:path}",
    include_in_schema=False,
    opt={"public": True},
    sync_to_thread=False,
)
def ui_asset(path: Annotated[str, PathParameter()]) -> Response[bytes]:
    """The UI's scripts and styles (a fixed list: nothing else is served)."""
    name = path.lstrip("/")
    media = _UI_FILES.get(name)
    if media is None:
        raise ApiError(404, f"no UI file {name!r}")
    return Response(
        _ui_file(name), media_type=media, headers={"Cache-Control": "no-cache"}
    )
