"""HTTP side of the MSE media endpoints (docs/design/mse.md): live fMP4 and recorded
windows as fMP4, streamed as chunked aiohttp responses. The media logic lives in
``replay/fmp4_live.py`` and ``replay/mp4_playback.py``; here are the query models, the
headers and the mapping of their failures to the API's errors."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from onvif_nvr.api.routes import FieldError
from onvif_nvr.api.server import ApiError
from onvif_nvr.db.engine import Database
from onvif_nvr.replay import fmp4_live, mp4_playback
from onvif_nvr.replay.live import Feed

log = logging.getLogger(__name__)

#: How long a live request waits for the camera's first keyframe.
FIRST_PICTURE_TIMEOUT_S = 10.0
#: A write that waits this long for the client's socket: the client is stuck or gone.
WRITE_STALL_S = fmp4_live.WRITE_STALL_S


def _in_range(moment: datetime) -> datetime:
    if not 0 <= moment.timestamp() < 2**63 / 1e9:
        raise ValueError("must be between 1970-01-01 and 2262-04-11 UTC")
    return moment


Instant = Annotated[AwareDatetime, AfterValidator(_in_range)]


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


class LiveQuery(BaseModel):
    #: End the stream after this much media (seconds); none: until the viewer leaves.
    max_s: Annotated[int | None, Field(ge=1, le=86400)] = None


class MediaQuery(BaseModel):
    #: Wall-clock start of the window (RFC 3339 with offset).
    start: Instant
    #: Length of the window in seconds.
    duration_s: Annotated[float, Field(ge=1, le=900)] = 60
    #: Wall-clock time of media time 0 (default: the first frame served); pass the first
    #: answer's X-Wall-Origin-Ms (as RFC 3339) to keep successive windows on one timeline.
    origin: Instant | None = None


async def live(request: web.Request, feed: Feed, query: LiveQuery) -> web.StreamResponse:
    """``GET /api/v1/cameras/{token}/live.mp4``."""
    max_90k = query.max_s * 90_000 if query.max_s is not None else None
    stream = fmp4_live.LiveMp4(feed, max_duration_90k=max_90k)
    try:
        params = await stream.start(FIRST_PICTURE_TIMEOUT_S)
    except fmp4_live.NoPicture as exc:
        raise ApiError(404, "NoData", str(exc)) from None
    response = web.StreamResponse(
        headers={
            "Content-Type": fmp4_live.content_type(params),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
    except BaseException:
        await stream.close()
        raise

    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    reason = await stream.run(response.write, gone)
    if reason in (fmp4_live.SLOW, fmp4_live.STALLED):
        _drop(request)
    else:
        await _end(request, response)
    return response


def _drop(request: web.Request) -> None:
    """Cut the connection (a viewer that stopped reading cannot be sent the body's end)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _end(request: web.Request, response: web.StreamResponse) -> None:
    try:
        await asyncio.wait_for(response.write_eof(), WRITE_STALL_S)
    except TimeoutError:
        _drop(request)
    except (ConnectionError, RuntimeError):
        pass


async def playback(
    request: web.Request, db: Database, token: str, query: MediaQuery
) -> web.StreamResponse:
    """``GET /api/v1/recordings/{token}/media.mp4``."""
    origin = _ns(query.origin) if query.origin is not None else None
    try:
        plan = await mp4_playback.plan(
            db, token, _ns(query.start), int(query.duration_s * 1e9), origin
        )
    except mp4_playback.NoData as exc:
        raise ApiError(404, "NoData", str(exc)) from None
    except mp4_playback.OriginTooLate as exc:
        raise ApiError(
            422,
            "InvalidArgVal",
            "invalid query",
            [FieldError(field="query.origin", message=str(exc))],
        ) from None
    response = web.StreamResponse(
        headers={
            "Content-Type": plan.content_type,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Wall-Origin-Ms": str(plan.origin_ms),
            "X-First-Frame-Ms": str(plan.first_frame_ms),
            "X-End-Ms": str(plan.end_ms),
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    body = mp4_playback.stream(plan)
    try:
        async for data in body:
            # Waits while the client's window is full (back-pressure); a client that reads
            # nothing for WRITE_STALL_S is cut off, which also closes the file.
            await asyncio.wait_for(response.write(data), WRITE_STALL_S)
    except TimeoutError:
        log.debug("mse playback: client stalled")
        _drop(request)
        return response
    except (ConnectionError, RuntimeError) as exc:
        log.debug("mse playback: client left: %s", exc)
        return response
    finally:
        await body.aclose()  # type: ignore[attr-defined]
    await _end(request, response)
    return response
