"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/completions, /v1/chat/completions (+ SSE).

Chat requests are formatted exactly as in fine-tuning (chat template, the project's system prompt);
completions continue plain text, as in pretraining. Every message or prompt first goes through the
project's input processing (modeling/prompting.py). Errors use OpenAI's shape
{"error": {"message", "type", "param", "code"}} with a 4xx status; log lines carry sizes, timings and
redaction counts, never prompt or answer text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from ..modeling.generate import GenerationSettings, PromptTooLong, TextStream, encode_chat, encode_text
from ..modeling.prompting import InputProcessor
from .engine import Engine, Job, QueueFull
from .schemas import ChatRequest, CompletionRequest

log = logging.getLogger("vertical_dag.serve")
FINISH = {"end_of_turn": "stop", "stop_string": "stop", "length": "length", "cancelled": "stop"}


@dataclass
class ServedModel:
    model_id: str
    engine: Engine
    settings: GenerationSettings  # the project's generation params
    processor: InputProcessor
    api_key: str | None = None
    created: int = 0


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    parts, first = [], None
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        first = first or loc or None
        msg = str(e.get("msg", "invalid")).replace("Value error, ", "")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid request body: " + "; ".join(parts), first


def _sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(served: ServedModel) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        served.engine.close()

    app = FastAPI(title="vertical_dag", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served = served

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return ApiError(400, message, param=param).response()

    @app.middleware("http")
    async def _auth(request: Request, call_next: Callable[[Request], Any]) -> Any:
        if served.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), served.api_key.encode()):
                return ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                code="invalid_api_key").response()
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        st = served.engine.stats
        return {"status": "ok", "model": served.model_id, "queued": served.engine.queued, "running": st.running,
                "requests": st.requests, "batches": st.batches, "cancelled": st.cancelled}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served.model_id, "object": "model", "created": served.created,
                                            "owned_by": "vertical_dag"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Any:
        _check_model(served, body.model)
        settings = body.settings(served.settings)
        messages, redactions = served.processor.messages([{"role": m.role, "content": m.text()} for m in body.messages])
        engine = served.engine
        ids = _encode(lambda: encode_chat(engine.tokenizer, engine.model, messages, settings), "messages")
        return await _respond(served, request, body, ids, settings, redactions, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        _check_model(served, body.model)
        settings = body.settings(served.settings)
        done = served.processor.text(body.prompt)
        engine = served.engine
        ids = _encode(lambda: encode_text(engine.tokenizer, engine.model, done.text, settings), "prompt")
        return await _respond(served, request, body, ids, settings, done.redactions, chat=False)

    return app


def _check_model(served: ServedModel, name: str) -> None:
    if name != served.model_id:
        raise ApiError(404, f"model {name!r} is not served here; this server has {served.model_id!r} (GET /v1/models)",
                       code="model_not_found", param="model")


def _encode(fn: Callable[[], list[int]], param: str) -> list[int]:
    try:
        return fn()
    except PromptTooLong as exc:
        raise ApiError(400, str(exc), code="context_length_exceeded", param=param) from None


async def _respond(served: ServedModel, request: Request, body: Any, ids: list[int], settings: GenerationSettings,
                   redactions: dict[str, int], *, chat: bool) -> Any:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    job = Job(ids=ids, settings=settings, stream=body.stream,
              emit=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
    try:
        served.engine.submit(job)
    except QueueFull as exc:
        raise ApiError(429, str(exc), code="server_busy", kind="rate_limit_error") from None
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    meta = _Meta(rid, served.model_id, chat, len(ids), time.time(), redactions)
    stream = TextStream(served.engine.tokenizer, settings.stop)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(job, events, stream, meta, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    while True:
        try:
            ev = await asyncio.wait_for(events.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise ApiError(499, "client closed the request") from None
            continue
        if ev[0] == "error":
            raise ApiError(500, ev[1], kind="server_error")
        text, reason, _ = stream.finish(ev[1])
        meta.log(len(ev[1]), ev[2])
        return meta.body(text, FINISH[reason], len(ev[1]))


@dataclass
class _Meta:
    rid: str
    model: str
    chat: bool
    prompt_tokens: int
    created: float
    redactions: dict[str, int]

    def usage(self, new: int) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": new, "total_tokens": self.prompt_tokens + new}

    def log(self, new: int, finish: str) -> None:
        log.info("%s prompt_tokens=%d new_tokens=%d finish=%s seconds=%.2f redacted=%s", self.rid, self.prompt_tokens,
                 new, finish, time.time() - self.created, self.redactions or "{}")

    def body(self, text: str, finish: str, new: int) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                      "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return {"id": self.rid, "object": "chat.completion" if self.chat else "text_completion",
                "created": int(self.created), "model": self.model, "choices": [choice], "usage": self.usage(new)}

    def chunk(self, delta: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return {"id": self.rid, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": int(self.created), "model": self.model, "choices": [choice]}


async def _stream(job: Job, events: asyncio.Queue, stream: TextStream, meta: _Meta,
                  include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks until [DONE]; if the client goes away first, the job is cancelled (its batch row ends)."""
    finished = False
    try:
        if meta.chat:
            yield _sse(meta.chunk(None, role=True))
        while True:
            ev = await events.get()
            if ev[0] == "token":
                delta = stream.push(ev[1])
                if delta:
                    yield _sse(meta.chunk(delta))
                continue
            if ev[0] == "error":
                yield _sse({"error": {"message": ev[1], "type": "server_error", "param": None, "code": None}})
            else:
                _, reason, delta = stream.finish(ev[1])
                if delta:
                    yield _sse(meta.chunk(delta))
                yield _sse(meta.chunk(None, FINISH[reason]))
                if include_usage:
                    yield _sse({**meta.chunk(None), "choices": [], "usage": meta.usage(len(ev[1]))})
                meta.log(len(ev[1]), ev[2])
            yield _sse("[DONE]")
            finished = True
            return
    finally:
        if not finished:
            job.cancel()
            log.info("%s client went away mid-stream: cancelled", meta.rid)
