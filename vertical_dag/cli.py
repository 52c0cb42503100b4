"""`vertical-dag`: the command line. Thin: it finds the project, parses params, and calls library code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .params import ParamsError
from .project import ProjectNotFound, find_project

EXIT_BAD_INPUT = 2


def _cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import init_project

    root = init_project(Path(args.dir), domain=args.domain, force=args.force, remote=args.remote)
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


def _cmd_inputs(args: argparse.Namespace) -> int:
    from .stages.inputs import write_inputs

    project = find_project(args.project)
    written = write_inputs(project)
    print(f"inputs of {len(written)} stages in {project.rel(project.data / 'inputs')}/")
    return 0


def _cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from . import dvcyaml
    from .params import load_params

    project = find_project(args.project)
    path = project.root / "dvc.yaml"
    push = load_params(project.params_file).normalize.pii.push_unredacted
    if args.check:
        if dvcyaml.is_current(path, push):
            print("dvc.yaml matches the stage registry")
            return 0
        print("dvc.yaml differs from the stage registry: run `vertical-dag dvc-yaml` to regenerate it", file=sys.stderr)
        return 1
    print(f"{'wrote' if dvcyaml.write(path, push) else 'unchanged:'} {project.rel(path)}")
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
    text = explain(project, args.doc_id, show_pii=args.show_pii)
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


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve.cli import main as serve_main

    return serve_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vertical-dag", description=__doc__)
    p.add_argument("-C", "--project", default=None, help="project folder (default: found upwards from the cwd)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="scaffold a new vertical project")
    s.add_argument("dir")
    s.add_argument("--domain", default="general", choices=["legal", "medical", "finance", "technical", "general"])
    s.add_argument("--force", action="store_true", help="overwrite params.yaml / dvc.yaml if present")
    s.add_argument("--remote", metavar="URL", help="default DVC remote for `dvc push` / `dvc pull` (s3://, gs://, ssh://, a folder...)")
    s.set_defaults(func=_cmd_init)

    from .stages import STAGES

    s = sub.add_parser("run", help="run one pipeline stage (what `dvc repro` calls)")
    s.add_argument("stage", choices=list(STAGES))
    s.add_argument("--no-gate", action="store_true", help="skip the stage's quality gate")
    s.add_argument("--json", action="store_true", help="print the stage metrics")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("inputs", help="fingerprint each stage's code and the files params name (first DVC stage)")
    s.set_defaults(func=_cmd_inputs)

    s = sub.add_parser("dvc-yaml", help="write dvc.yaml from the stage registry (--check: only compare)")
    s.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml differs from the registry")
    s.set_defaults(func=_cmd_dvc_yaml)

    s = sub.add_parser("gate", help="re-run a stage's quality gate on its current outputs")
    s.add_argument("stage", choices=list(STAGES))
    s.set_defaults(func=_cmd_gate)

    s = sub.add_parser("explain", help="print everything that happened to one document")
    s.add_argument("doc_id")
    s.add_argument("--show-pii", action="store_true", help="print text as stored, without masking PII")
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
    s.add_argument("--model", default="finetuned", help="finetuned | pretrained | base | int8 | a checkpoint folder")
    s.set_defaults(func=_cmd_generate)

    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server for a trained model (127.0.0.1 by default)")
    s.add_argument("--model", default=None, help="finetuned | pretrained | base | int8 | a model folder (default: serve.model)")
    s.add_argument("--host", default=None, help="address to listen on (default: serve.host, 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default: serve.port, 8000)")
    s.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set VERTICAL_DAG_API_KEY)")
    s.add_argument("--max-batch-size", type=int, default=None, help="requests decoded together (default: serve.max_batch_size)")
    s.set_defaults(func=_cmd_serve)
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
        from .stages.executor import NotSharedError
        from .stages.lock import StageLocked
        from .stages.parts import PartsFailed

        if isinstance(exc, InitError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(exc, StageLocked | PartsFailed | NotSharedError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
