"""The HTTP side of `scitune serve`: OpenAI-compatible routes, errors in OpenAI's shape, the chat page.

Generation happens in `scitune.infer.engine` (queued by `scitune.serve.batcher`); request checks in
`scitune.serve.prepare` (chat) and `scitune.serve.completions` (plain prompts); responses in `scitune.serve.responses`;
the Host check in `scitune.serve.hosts`; connection limits and the request-head deadline in
`scitune.serve.connections`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from scitune.infer.engine import GenerationEngine
from scitune.model.vlm import VisionLanguageModel
from scitune.processor import Processor
from scitune.serve.batcher import Batcher, overloaded_error
from scitune.serve.bodies import BodyDrainMiddleware, read_body
from scitune.serve.completions import CompletionPreparer, completion_events, completion_response
from scitune.serve.config import ServeConfig
from scitune.serve.hosts import HostCheckMiddleware, HostPolicy
from scitune.serve.logprobs import TokenSpeller
from scitune.serve.responses import JobStream, chat_events, chat_response, ignored_headers
from scitune.serve.schema import ApiError, ChatCompletionRequest, CompletionRequest, ModelCard, ModelList

log = logging.getLogger(__name__)

STATIC = {  # the chat page: fixed files only, no directory serving
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/static/chat.css": ("chat.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PARAM_NOISE = {"str", "int", "float", "bool", "list", "dict", "function-after"}


def served_name(cfg: ServeConfig) -> str:
    """The model id clients use (`ServeConfig.served_name`)."""
    return cfg.served_name()


def _error(e: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
    return JSONResponse(e.body(), status_code=e.status, headers={**headers, **(e.headers or {})})


def _param(loc: tuple) -> str | None:
    # pydantic names union members in locations ("str", "list[...]"); keep only fields and indices
    keep = [str(x) for x in loc if isinstance(x, int) or (x not in _PARAM_NOISE and "[" not in str(x))]
    return ".".join(keep) or None


def parse_request(body: bytes, schema: type[BaseModel] = ChatCompletionRequest):
    """Validate a request body against ``schema``; malformed JSON, unknown fields and wrong types become 400s."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        first = errs[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, f"malformed JSON body: {first['msg']}", "invalid_json") from None
        param = _param(first["loc"])
        if first["type"] == "extra_forbidden":
            raise ApiError(400, f"unrecognized request argument supplied: {param}", "unknown_field", param) from None
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        msg = f"{param or 'body'}: {first['msg']}{more}"
        raise ApiError(400, msg, first["type"], param) from None


def create_app(
    model: VisionLanguageModel, processor: Processor, cfg: ServeConfig, admission: str = "continuous"
) -> FastAPI:
    """The FastAPI app serving ``model``; the batcher starts and stops with the app's lifespan.

    Args:
        model: a loaded `VisionLanguageModel`.
        processor: its processor (`scitune.loader.load` returns both).
        cfg: server settings and limits.
        admission: the engine's admission policy, ``continuous`` (requests join the running batch between decode
            steps) or ``static`` (only into an empty batch; the baseline `benchmarks/serve.py` compares against).
    """
    name = served_name(cfg)
    preparer = CompletionPreparer(model, processor, cfg, name)  # chat requests too
    engine = GenerationEngine(model, processor, cfg.max_batch_size, admission, cfg.max_wait_ms / 1000)
    batcher = Batcher(engine, cfg.max_queue)
    created = int(time.time())
    preparing = 0  # requests admitted and not yet queued (parsing, decoding images, tokenizing)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="scitune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(HostCheckMiddleware, policy=HostPolicy.for_server(cfg.host, cfg.allowed_hosts))
    # outermost, so it sees the Host check's refusals too; a body somewhat over the limit is still drained, so that a
    # client that sends it all before reading gets its 413 instead of a reset connection
    app.add_middleware(BodyDrainMiddleware, max_bytes=2 * cfg.max_body_bytes, timeout_s=cfg.body_timeout_s)
    app.state.batcher = batcher
    app.state.model_name = name
    app.state.connections = None  # make_server's ConnectionGuard, whose counts /health shows

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _error(ApiError(e.status_code, str(e.detail), None, type=kind))

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error(ApiError(500, "internal server error", "server_error", type="server_error"))

    def check_key(request: Request) -> None:
        if not cfg.api_key:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), cfg.api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key (send 'Authorization: Bearer KEY').", "invalid_api_key")

    @app.get("/health")
    async def health() -> dict:
        conns = app.state.connections
        queue = {"preparing": preparing, "queued": batcher.queued, "max_queue": cfg.max_queue}
        body = {"status": "ok", "model": name, "batching": batcher.health(), "queue": queue}
        return body | ({"connections": conns.as_dict()} if conns is not None else {})

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models() -> dict:
        return ModelList(data=[ModelCard(id=name, created=created)]).model_dump()

    def speller() -> TokenSpeller:
        return TokenSpeller(preparer.processors.get().tokenizer)  # this thread's copy of the tokenizer

    async def submit(request: Request, schema: type[BaseModel], prepare):
        """Read, validate and prepare a request, and queue its job: (request, prepared)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415, f"Content-Type must be application/json, not {ctype or 'missing'!r}", "invalid_content_type"
            )
        body = await read_body(request, cfg.max_body_bytes, cfg.body_timeout_s)
        nonlocal preparing
        if preparing + batcher.queued >= cfg.max_queue:
            raise overloaded_error(f"{preparing + batcher.queued} requests are waiting")
        preparing += 1  # counted until queued, so decoded images stay within max_queue x max_request_pixels
        try:
            req = await asyncio.to_thread(parse_request, body, schema)  # a multi-MB body must not block the loop
            del body
            prep = await asyncio.to_thread(prepare, req)
            batcher.submit(prep.job)
        finally:
            preparing -= 1
        if prep.ignored:
            log.debug("ignored request fields: %s", ", ".join(prep.ignored))
        return req, prep

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat_completions(request: Request) -> Response:
        req, prep = await submit(request, ChatCompletionRequest, preparer.prepare)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return JobStream(chat_events(prep, name, usage, speller), prep.job, ignored_headers(prep))
        return await chat_response(request, prep, name, speller)

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(request: Request) -> Response:
        req, prep = await submit(request, CompletionRequest, preparer.prepare_completion)
        if req.stream:
            usage = bool(req.stream_options and req.stream_options.include_usage)
            return JobStream(completion_events(prep, name, usage, speller), prep.job, ignored_headers(prep))
        return await completion_response(request, prep, name, speller)

    for route, (fname, mime) in STATIC.items():
        body = resources.files("scitune.serve").joinpath("static", fname).read_bytes()
        app.add_api_route(route, _static(body, mime), methods=["GET"], include_in_schema=False)
    return app


def _static(body: bytes, mime: str):
    async def page() -> Response:
        return Response(body, media_type=mime, headers=PAGE_HEADERS)

    return page


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(app: FastAPI, cfg: ServeConfig):
    """A `uvicorn.Server` for ``app`` with the connection limits of ``cfg`` (warns when bound to anything but
    loopback)."""
    import uvicorn

    from scitune.serve.connections import guarded_h11

    if not is_loopback(cfg.host):
        log.warning(
            "binding %s:%d: the model is reachable from the network%s",
            cfg.host,
            cfg.port,
            "" if cfg.api_key else " and anyone can use it (no --api_key set)",
        )
    protocol = guarded_h11(cfg.max_connections, cfg.header_timeout_s)
    app.state.connections = protocol.guard
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        timeout_graceful_shutdown=5,
        http=protocol,  # h11 with the connection cap and the request-head deadline (never httptools)
        ws="none",  # no WebSocket routes; an upgrade would also move the connection out of the guard's sight
    )
    return uvicorn.Server(config)
