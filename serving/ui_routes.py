"""The web UI: chat with any tenant or version, rate answers, and run the ops view.

Plain HTML, JavaScript modules and CSS kept in ``serving/ui/`` (package data: no
build step, no CDN, nothing fetched at install or run time), served by the API's
own app on the API's port: the page at ``/`` and ``/ui``, its files at
``/ui/<name>``. The page talks to the same origin's routes only (``/v1/...`` with
the user's name or key, ``/admin/...`` with an admin token the person enters, kept
in the tab's ``sessionStorage``), so the Content-Security-Policy allows nothing else.

The files are read once, when the routes are registered; a missing UI directory is
an error then, not a 500 at the first visit.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from serving.schema import error_body

UI_DIR = Path(__file__).with_name("ui")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
INDEX = "index.html"
#: Same-origin only: scripts and styles from /ui, fetches to this API, nothing inline.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files, changed with the package: always revalidate, never serve an old app.js.
    "Cache-Control": "no-cache",
}


def load_files(directory: Path = UI_DIR) -> dict[str, tuple[bytes, str]]:
    """``name -> (content, media type)`` of the UI's files in ``directory``."""
    if not (directory / INDEX).is_file():
        raise FileNotFoundError(
            f"the web UI's {INDEX} is not in {directory}: the package was installed without "
            "its data files (serving/ui/* in pyproject's package-data); reinstall it")
    return {path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
            for path in sorted(directory.iterdir())
            if path.is_file() and path.suffix in MEDIA_TYPES}


def register_ui_routes(api: FastAPI, directory: Path = UI_DIR) -> None:
    """Serve the web UI from ``directory`` on ``api``: the page at ``/``, ``/ui`` and
    ``/ui/``, its files at ``/ui/<name>``."""
    files = load_files(directory)

    def send(name: str) -> Response:
        content, media_type = files[name]
        return Response(content, media_type=media_type, headers=HEADERS)

    async def index() -> Response:
        return send(INDEX)

    for path in ("/", "/ui", "/ui/"):
        api.add_api_route(path, index, methods=["GET"], include_in_schema=False)

    @api.get("/ui/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in files:
            message = (f"the web UI has no file {name!r}; it has "
                       f"{', '.join(sorted(files))}")
            return JSONResponse(error_body(message, type_="invalid_request_error",
                                           code="not_found"), status_code=404)
        return send(name)
