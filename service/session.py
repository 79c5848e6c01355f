"""The HTTP side of identity: the dependency every API route takes, and signing in.

`authenticated` runs before each route of `service.api.router` (401 with
`WWW-Authenticate: Bearer`, or 403 for a cookie request that does not say where
it comes from) and leaves the caller in `request.state.caller`.
`/api/session` is how the web chat signs in with a token and out again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from service import auth
from service.auth import COOKIE, Caller, CrossSiteRefused, Unauthenticated
from service.runtime import Runtime

router = APIRouter()
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="slipstream"'}


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(min_length=1, max_length=200, description="an API token of yours")


class Session(BaseModel):
    user: str
    auth: str = Field(description="the server's SLIPSTREAM_AUTH mode")
    via: str = Field(description="how this request was identified: local, token, session, header")


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def authenticated(request: Request) -> Caller:
    try:
        caller = await runtime(request).auth.identify(auth.Request.of(request))
    except Unauthenticated as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=CHALLENGE) from None
    except CrossSiteRefused as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    request.state.caller = caller
    return caller


def caller(request: Request) -> Caller:
    """The caller `authenticated` found for this request."""
    found: Caller = request.state.caller
    return found


@router.get(
    "/api/session", response_model=Session, responses={401: {"description": "not signed in"}}
)
async def who_am_i(request: Request) -> Session:
    """Who this request is, as the server sees it; 401 when nobody."""
    found = await authenticated(request)
    return Session(user=found.user, auth=runtime(request).auth.mode, via=found.via)


@router.post(
    "/api/session",
    response_model=Session,
    responses={400: {"description": "this server does not sign in with tokens"}, 401: {}},
)
async def sign_in(request: Request, response: Response, body: Annotated[SignIn, Body()]) -> Session:
    """Sign the browser in with a token: a session cookie (HttpOnly, SameSite=Lax)."""
    rt = runtime(request)
    if rt.auth.mode != "tokens":
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"this server does not sign in with tokens (SLIPSTREAM_AUTH={rt.auth.mode})",
        )
    try:
        user, cookie = await rt.auth.sign_in(body.token)
    except Unauthenticated as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=CHALLENGE) from None
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=rt.settings.session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=_https(request),
        path="/",
    )
    return Session(user=user, auth=rt.auth.mode, via="session")


@router.delete("/api/session", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(request: Request, response: Response) -> None:
    """End this browser's session (its cookie is worthless from now on, everywhere)."""
    await runtime(request).auth.sign_out(request.cookies.get(COOKIE))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")


def _https(request: Request) -> bool:
    """Whether the page came over HTTPS, directly or through a trusted proxy."""
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.lower() == "https" and runtime(request).auth.trusted(peer)
