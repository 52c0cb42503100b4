"""`vertical-dag generate`: one prompt or a JSONL of prompts -> answers, printed or written as JSONL.

Exit codes: 0 all prompts answered; 2 bad input (missing model, unreadable or malformed JSONL lines,
over-long prompts; every good line is still answered and every bad one is named with file:line: reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
MODEL_NAMES = {"finetuned": "data/models/finetuned/model", "pretrained": "data/models/pretrained/model",
               "base": "data/models/base/model", "int8": "data/models/export/int8"}


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def read_prompts(path: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """(line, prompt) pairs and 'file:line: reason' problems. A line is {"prompt": str} (or instruction[+input])."""
    good: list[tuple[int, str]] = []
    bad: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return [], [f"{path}: no such file"]
    except UnicodeDecodeError as exc:
        return [], [f"{path}: not UTF-8 ({exc.reason})"]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if isinstance(obj, str):
            prompt: Any = obj
        elif isinstance(obj, dict):
            prompt = obj.get("prompt", obj.get("instruction"))
            if isinstance(prompt, str) and isinstance(obj.get("input"), str) and obj["input"]:
                prompt = f"{prompt}\n{obj['input']}"
        else:
            prompt = None
        if not isinstance(prompt, str) or not prompt.strip():
            bad.append(f"{path}:{n}: needs a non-empty string field 'prompt' (or 'instruction')")
            continue
        good.append((n, prompt))
    return good, bad


def resolve_model(name: str, root: Path) -> Path:
    if name in MODEL_NAMES:
        return root / MODEL_NAMES[name]
    p = Path(name)
    return p if p.is_absolute() else (Path.cwd() / p)


def main(args: Any) -> int:
    from ..params import load_params
    from ..project import find_project
    from .generate import GenerationSettings, ModelMissing, PromptTooLong, generate_one, load_for_inference
    from .prompting import InputProcessor

    prompt, input_file, output = getattr(args, "prompt", None), getattr(args, "input", None), getattr(args, "output", None)
    if bool(prompt) == bool(input_file):
        _err("give either a prompt or --input FILE.jsonl (not both)")
        return EXIT_BAD_INPUT
    project = find_project(getattr(args, "project", None))
    params = load_params(project.params_file)
    settings = GenerationSettings.from_params(params.finetune.generation, params.finetune.system_prompt, params.finetune.seed)
    processor = InputProcessor.from_params(params)

    problems: list[str] = []
    if input_file:
        prompts, problems = read_prompts(Path(input_file))
        for p in problems:
            _err(p)
        if not prompts:
            _err(f"{input_file}: no usable prompts")
            return EXIT_BAD_INPUT
    else:
        prompts = [(0, prompt)]
    try:
        model, tok = load_for_inference(resolve_model(getattr(args, "model", None) or "finetuned", project.root),
                                        params.finetune.device)
    except ModelMissing as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT

    results = []
    for line, text in prompts:
        where = f"{input_file}:{line}: " if input_file else ""
        try:
            res = generate_one(model, tok, text, settings, processor)
        except PromptTooLong as exc:
            problems.append(f"{where}{exc}")
            _err(f"{where}{exc}")
            continue
        if input_file:
            res = {"line": line, **res}
        results.append(res)
        if not output:
            print(json.dumps(res, ensure_ascii=False) if input_file else res["output"], flush=True)
    if output:
        from ..records import atomic_path

        with atomic_path(Path(output)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for res in results:
                f.write(json.dumps(res, ensure_ascii=False) + "\n")
        print(f"wrote {len(results)} answers to {output}", file=sys.stderr)
    return EXIT_BAD_INPUT if problems else 0
