"""Putting a model behind the API: load it, build the app, run uvicorn (in the foreground, or in a
background thread for tests and benchmarks, on a socket bound before the server starts)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modeling.generate import GenerationSettings, load_for_inference
from ..modeling.prompting import InputProcessor
from .app import ServedModel, create_app
from .engine import Engine

API_KEY_ENV = "VERTICAL_DAG_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_served(model: Any, tokenizer: Any, params: Any, *, model_id: str, api_key: str | None = None,
                 max_batch_size: int | None = None) -> ServedModel:
    """A ServedModel from a loaded (model, tokenizer) and the project's params (generation, serve, normalize)."""
    sv, ft = params.serve, params.finetune
    engine = Engine(model, tokenizer, max_batch_size=max_batch_size or sv.max_batch_size,
                    batch_wait_s=sv.batch_wait_ms / 1000, max_queue=sv.max_queue)
    settings = GenerationSettings.from_params(ft.generation, ft.system_prompt, ft.seed)
    return ServedModel(model_id=model_id, engine=engine, settings=settings, processor=InputProcessor.from_params(params),
                       api_key=api_key or None, created=int(time.time()))


def load_served(folder: Path, params: Any, *, model_id: str, api_key: str | None = None,
                max_batch_size: int | None = None) -> ServedModel:
    model, tok = load_for_inference(folder, params.finetune.device)
    return build_served(model, tok, params, model_id=model_id, api_key=api_key, max_batch_size=max_batch_size)


@dataclass
class BackgroundServer:
    server: Any
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_background(served: ServedModel, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """uvicorn in a thread on host:port (0: a free port); returns once it accepts connections."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(create_app(served), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return BackgroundServer(server, thread, f"http://{host}:{sock.getsockname()[1]}")
