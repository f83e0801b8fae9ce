"""The results dashboard under /ui/: read-only, server-rendered pages of the same objects the /v1
API serves (jobs, measurements, sweeps, comparisons, data sets, checkpoints).

- `routes.py`: the pages, the job list's JSON poll (`/ui/api/jobs`) and the cancel form.
- `auth.py`: sign-in with an API key kept in an HttpOnly, SameSite=Strict cookie; CSRF tokens.
- `charts.py` / `views.py`: SVG charts drawn on the server plus the data the hover script reads.
- `templates/` (Jinja2) and `static/` (`ui.css`, `ui.js`: the app's own, no build step, no
  external URL).

`install_ui(app)` adds the router, the static files and the error handlers of the pages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.errors import PROBLEM_MEDIA_TYPE, ProblemError
from app.ui.auth import SignInRequired
from app.ui.routes import page, router

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _is_page(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/ui/") and not path.startswith("/ui/api/")


async def _sign_in_required(_request: Request, _exc: Exception) -> Response:
    return RedirectResponse("/ui/", status_code=303)


async def _problem(request: Request, exc: Exception) -> Response:
    """Problems on pages become an HTML error page; elsewhere the problem+json document."""
    assert isinstance(exc, ProblemError)
    if _is_page(request) and request.method == "GET":
        return page(request, "error.html", None, exc.status, problem=exc)
    return JSONResponse(exc.document(), status_code=exc.status, headers=exc.headers,
                        media_type=PROBLEM_MEDIA_TYPE)


def install_ui(app: FastAPI) -> None:
    """Mount /ui/ on `app` (after `install_error_handlers`, whose ProblemError handler this
    one extends to pages)."""
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(ProblemError, _problem)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC_DIR)), name="ui-static")
