"""`vertical-dag`: the command line. Thin: it finds the project, parses params, and calls library code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .params import ParamsError
from .project import ProjectNotFound, find_project

EXIT_BAD_INPUT = 2


def _cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import init_project

    root = init_project(Path(args.dir), domain=args.domain, force=args.force)
    print(f"initialised vertical project in {root}\nnext: put raw files under {root / 'data/raw/<source>/'} and run `dvc repro`")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .stages.context import GateFailed, run_stage

    project = find_project(args.project)
    try:
        metrics = run_stage(args.stage, project, gate=not args.no_gate)
    except GateFailed as exc:
        print(f"quality gate failed for stage {args.stage}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from .quality.gate import check_stage

    project = find_project(args.project)
    result = check_stage(project, args.stage)
    print(f"gate {args.stage}: {'passed' if result.success else 'FAILED'} "
          f"({len(result.expectations)} expectations; report in {project.rel(project.gates_dir / (args.stage + '.md'))})")
    if not result.success:
        print(result.failure_message(), file=sys.stderr)
    return 0 if result.success else 1


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain

    project = find_project(args.project)
    text = explain(project, args.doc_id)
    print(text)
    return 0 if "not found" not in text.splitlines()[0] else 1


def _cmd_summary(args: argparse.Namespace) -> int:
    from .summary import summary

    print(summary(find_project(args.project)))
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from vertical_dag_china_law.fetch import fetch_example  # the example's own package, shipped alongside

    root = find_project(args.project).root
    only = set(args.batch) if args.batch else None
    hold = set(args.hold_back) if args.hold_back else None
    out = fetch_example(root, only=only, hold_back=hold, with_model=not args.no_model)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .modeling.generate_cli import main as generate_main

    return generate_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vertical-dag", description=__doc__)
    p.add_argument("-C", "--project", default=None, help="project folder (default: found upwards from the cwd)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="scaffold a new vertical project")
    s.add_argument("dir")
    s.add_argument("--domain", default="general", choices=["legal", "medical", "finance", "technical", "general"])
    s.add_argument("--force", action="store_true", help="overwrite params.yaml / dvc.yaml if present")
    s.set_defaults(func=_cmd_init)

    from .stages import STAGES

    s = sub.add_parser("run", help="run one pipeline stage (what `dvc repro` calls)")
    s.add_argument("stage", choices=list(STAGES))
    s.add_argument("--no-gate", action="store_true", help="skip the stage's quality gate")
    s.add_argument("--json", action="store_true", help="print the stage metrics")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("gate", help="re-run a stage's quality gate on its current outputs")
    s.add_argument("stage", choices=list(STAGES))
    s.set_defaults(func=_cmd_gate)

    s = sub.add_parser("explain", help="print everything that happened to one document")
    s.add_argument("doc_id")
    s.set_defaults(func=_cmd_explain)

    s = sub.add_parser("summary", help="documents kept/dropped per stage, gate results and the model headline")
    s.set_defaults(func=_cmd_summary)

    s = sub.add_parser("example", help="the built-in Chinese-law example")
    s.add_argument("action", choices=["fetch"])
    s.add_argument("--batch", action="append", help="only this decade batch (e.g. 2020s); repeatable")
    s.add_argument("--hold-back", action="append", help="leave this decade batch out (e.g. 2020s); repeatable")
    s.add_argument("--no-model", action="store_true", help="do not fetch the base model file")
    s.set_defaults(func=_cmd_example)

    s = sub.add_parser("generate", help="generate with a trained model")
    s.add_argument("prompt", nargs="?", help="a prompt (or use --input)")
    s.add_argument("--input", help="JSONL of prompts ({'prompt': ...} per line)")
    s.add_argument("--output", help="write JSONL here instead of printing")
    s.add_argument("--model", default="finetuned", help="finetuned | pretrained | base | a checkpoint folder")
    s.set_defaults(func=_cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ProjectNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        from .scaffold import InitError

        if isinstance(exc, InitError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
