"""`vertical-dag serve`: the project's model behind an OpenAI-compatible API on 127.0.0.1 (by default).

Exit codes: 2 for a missing model, a bad flag or a non-local host without an API key.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..modeling.generate_cli import MODEL_NAMES, resolve_model
from .server import API_KEY_ENV, is_loopback, load_served

EXIT_BAD_INPUT = 2


def served_name(name: str) -> str:
    """The id clients send as `model`: the name given (finetuned, int8, ...) or the folder's name."""
    return name if name in MODEL_NAMES else Path(name).name


def main(args: Any) -> int:
    import uvicorn

    from ..modeling.generate import ModelMissing
    from ..params import load_params
    from ..project import find_project
    from .app import create_app

    project = find_project(getattr(args, "project", None))
    params = load_params(project.params_file)
    sv = params.serve
    host, port = args.host or sv.host, args.port or sv.port
    name = args.model or sv.model
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(host) and not api_key:
        print(f"error: refusing to listen on {host} without an API key; pass --api-key or set {API_KEY_ENV} "
              "(or keep the default 127.0.0.1)", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        served = load_served(resolve_model(name, project.root), params, model_id=served_name(name), api_key=api_key,
                             max_batch_size=args.max_batch_size)
    except ModelMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"serving {served.model_id!r} on http://{host}:{port}/v1 (OpenAI-compatible; "
          f"{'API key required' if api_key else 'no API key'})", file=sys.stderr, flush=True)
    uvicorn.run(create_app(served), host=host, port=port, log_level="info")
    return 0
