"""The company backend's API: link a verified phone number or member id to a channel identity.

Baton cannot verify a phone number itself; the company's backend does (an SMS code, a
login) and then tells Baton, server to server, authenticated with the app key and the app
secret itself (``Authorization: Bearer <BATON_APP_SECRET>``: never ship it in an app or page).
Linking joins the web visitor, the app user and (later) the WeChat follower who share the
phone into one customer, so their history follows them across channels.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from api.channels.app import bearer, check_app_key
from api.errors import ApiError, unauthorized
from api.service import Service

router = APIRouter(prefix="/api/v1/backend", tags=["backend"])

_E164 = re.compile(r"\+[1-9]\d{6,14}")


class LinkRequest(BaseModel):
    """A verified identifier for one channel identity."""

    channel: Literal["web", "app", "wechat"] = Field(description="the identity's channel")
    external_id: str = Field(min_length=1, max_length=200, description="visitor id, app user id or openid")
    kind: Literal["phone", "member_id"] = Field(description="what was verified")
    value: str = Field(
        min_length=1, max_length=100, description="phone in E.164 (+8613800138000) or member id"
    )


def _check_backend(service: Service, app_key: str | None, authorization: str | None) -> None:
    secret = check_app_key(service, app_key, "backend API")
    given = bearer(authorization)
    if given is None or not hmac.compare_digest(given.encode(), secret):
        raise unauthorized("the backend API needs Authorization: Bearer <app secret>")


@router.post("/links")
async def link_identity(
    body: LinkRequest,
    request: Request,
    x_baton_app_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Join the identity to whoever holds ``value`` (the customer who held it first survives a merge)."""
    service: Service = request.app.state.service
    _check_backend(service, x_baton_app_key, authorization)
    if body.kind == "phone" and not _E164.fullmatch(body.value):
        raise ApiError(400, "bad_request", "a phone number must be in E.164 form, e.g. +8613800138000")
    customer = await service.store.resolve_customer(body.channel, body.external_id)
    survivor = await service.store.link(customer.id, body.kind, body.value)
    identities = await service.store.customer_identities(survivor.id)
    return {
        "customer_id": survivor.id,
        "merged": survivor.id != customer.id,
        "identities": [identity.to_dict() for identity in identities],
    }
