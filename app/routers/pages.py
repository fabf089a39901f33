"""The agent console (/console) and the ops page (/ops): static pages on the public API, same origin (SPEC 11).

Plain HTML, CSS and JavaScript from app/web, no build step and nothing fetched from elsewhere: the Content
Security Policy lets a page reach only this origin, so a page that tried would fail in the browser tests.
"""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

WEB = Path(__file__).resolve().parent.parent / "web"
_PAGES = {"console": "console.html", "ops": "ops.html"}
_ASSETS = {"app.css": "text/css", "common.js": "text/javascript", "console.js": "text/javascript",
           "ops.js": "text/javascript"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Pages and assets change with each release of the service; revalidating costs a 304.
    "Cache-Control": "no-cache",
}


@router.get("/console")
async def console() -> FileResponse:
    return FileResponse(WEB / _PAGES["console"], media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/ops")
async def ops() -> FileResponse:
    return FileResponse(WEB / _PAGES["ops"], media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404)
    return FileResponse(WEB / name, media_type=f"{media_type}; charset=utf-8", headers=SECURITY_HEADERS)
