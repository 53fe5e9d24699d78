"""The FastAPI application: the chat page, the web and app channels, the agent API and panel, stats,
health, errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_assist.panel import STATIC as PANEL_STATIC
from api import agent, panel, rasa_bridge, stats
from api.auth import rasa_token
from api.channels import app as app_channel
from api.channels import web as web_channel
from api.channels import wechat as wechat_channel
from api.errors import ApiError
from api.identities import router as backend_router
from api.rasa_resume import RasaResumer
from api.service import Service
from handoff.desk import DeskError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # the largest message is 4000 characters; JSON around it stays far below

ServiceFactory = Callable[[], Awaitable[Service]]


def create_app(start_service: ServiceFactory) -> FastAPI:
    """The app; ``start_service`` builds the `Service` at start-up (it is stopped at shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await start_service()
        service.channels = {"web": web_channel.WebChannel(service), "app": app_channel.AppChannel()}
        wechat = None
        resumer = None
        try:
            config = wechat_channel.WeChatConfig.from_settings(service.settings)
            if config is not None:
                wechat = service.channels["wechat"] = wechat_channel.WeChatChannel(service, config)
                await wechat.start()
            if service.settings.rasa_actions_token:  # the Rasa bridge is on: resume what it paused
                resumer = RasaResumer(service, service.settings.rasa_url, rasa_token(service.settings))
                await resumer.start()
            app.state.service = service
            yield
        finally:
            if resumer is not None:
                await resumer.stop()
            if wechat is not None:
                await wechat.stop()
            await service.stop()

    app = FastAPI(
        title="Baton",
        summary="Customer-support bot with human handoff: web, app and WeChat channels, the agent API, stats",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.include_router(web_channel.router)
    app.include_router(app_channel.router)
    app.include_router(wechat_channel.router)
    app.include_router(backend_router)
    app.include_router(rasa_bridge.router)
    app.include_router(agent.router)
    app.include_router(stats.router)
    app.include_router(panel.router)
    app.mount("/static/web", StaticFiles(directory=web_channel.STATIC), name="web-static")
    app.mount("/static/agent", StaticFiles(directory=PANEL_STATIC), name="agent-static")

    @app.get("/healthz", tags=["service"])
    async def healthz(request: Request) -> JSONResponse:
        """200 when the bot can answer and Redis answers; 503 otherwise."""
        service: Service | None = getattr(request.app.state, "service", None)
        if service is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            await service.redis.ping()
        except Exception as exc:
            return JSONResponse({"status": "redis unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "kb": str(service.settings.kb),
                "model_version": service.bot.path.name,
                "nlu_cache": {"hits": service.nlu.hits, "misses": service.nlu.misses},
            }
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.to_dict()}, status_code=error.status, headers=error.headers())

    @app.exception_handler(DeskError)
    async def desk_error(request: Request, error: DeskError) -> JSONResponse:
        return JSONResponse({"error": {"code": error.code, "message": str(error)}}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            body = {"code": "invalid_json", "message": "the request body is not valid JSON"}
        else:
            body = {"code": "bad_request", "message": "; ".join(_describe(p) for p in problems)}
        return JSONResponse({"error": body}, status_code=400)

    return app


def _describe(problem: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
    return f"{where}: {problem.get('msg', 'invalid')}" if where else str(problem.get("msg", "invalid"))


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, "too_large", f"the request body is over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        error = ApiError(413, "too_large", f"the request body is over {self.limit} bytes")
        response = JSONResponse({"error": error.to_dict()}, status_code=413)
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
