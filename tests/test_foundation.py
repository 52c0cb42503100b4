"""Params validation, project discovery, init scaffolding."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vertical_dag.params import ParamsError, load_params, parse_params
from vertical_dag.project import ProjectNotFound, find_project

from .conftest import REPO, run_cli


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.project.domain == "legal"
    assert params.ingest.source("china_law").format == "jsonl"


def test_repo_dvc_yaml_is_generated_from_the_registry(project: Path):
    assert run_cli("dvc-yaml", "--check", cwd=REPO).returncode == 0
    assert (project / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()  # init writes the same file
    assert (REPO / "dagster.yaml").read_text() == (REPO / "vertical_dag/templates/dagster.yaml").read_text()
    edited = project / "dvc.yaml"
    edited.write_text(edited.read_text().replace("- data/ingested\n", "", 1))
    proc = run_cli("dvc-yaml", "--check", cwd=project, check=False)
    assert proc.returncode == 1 and "differs from the stage registry" in proc.stderr


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"ingest": {"max_doc_chars": -5}}, "ingest.max_doc_chars", "greater than 0"),
        ({"ingest": {"min_doc_char": 5}}, "ingest.min_doc_char", "no such key"),
        ({"project": {"domain": "astrology"}}, "project.domain", "one of"),
        ({"ingest": {"sources": [{"name": "x", "query": "DELETE FROM t"}]}}, "ingest.sources.0.query", "SELECT"),
        ({"ingest": {"min_doc_chars": 10, "max_doc_chars": 5}}, "ingest", "must be below"),
    ],
)
def test_bad_params_name_the_key(data, key, words):
    with pytest.raises(ParamsError) as err:
        parse_params(data)
    msg = str(err.value)
    assert "\n" not in msg
    assert key in msg and words in msg


def test_bad_params_exit_2_before_touching_outputs(project: Path):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("max_doc_chars: 2000000", "max_doc_chars: lots"))
    proc = run_cli("run", "ingest", cwd=project, check=False)
    assert proc.returncode == 2
    assert "ingest.max_doc_chars = 'lots'" in proc.stderr
    assert not (project / "data" / "ingested").exists()


def test_invalid_yaml_names_the_line(project: Path):
    (project / "params.yaml").write_text("ingest:\n  sources: [\n")
    proc = run_cli("run", "ingest", cwd=project, check=False)
    assert proc.returncode == 2 and "line" in proc.stderr


def test_commands_work_from_a_subfolder(project: Path):
    sub = project / "data" / "raw"
    assert find_project(sub).root == project.resolve()
    with pytest.raises(ProjectNotFound):
        find_project(project.parent)


def test_init_scaffolds_git_and_dvc(project: Path):
    for name in ("params.yaml", "dvc.yaml", "dagster.yaml", ".gitignore", ".git", ".dvc", "data/raw"):
        assert (project / name).exists(), name
    load_params(project / "params.yaml")
    proc = run_cli("init", str(project), cwd=project.parent, check=False)
    assert proc.returncode != 0  # refuses to overwrite without --force


def test_summary_shows_counts_gates_and_stages_not_run(project: Path):
    import json

    (project / "data/metrics").mkdir(parents=True, exist_ok=True)
    (project / "data/gates").mkdir(parents=True, exist_ok=True)
    (project / "data/metrics/dedup.json").write_text(json.dumps(
        {"documents_in": 1200, "documents_out": 1000, "dropped": 200, "quarantined": 0,
         "drops_by_reason": {"exact_duplicate": 50, "near_duplicate": 150}}))
    (project / "data/gates/dedup.json").write_text(json.dumps({"success": False}))
    out = run_cli("summary", cwd=project).stdout
    dedup = next(line for line in out.splitlines() if line.startswith("dedup"))
    assert dedup.split()[:6] == ["dedup", "1,200", "1,000", "200", "0", "FAIL"]
    assert "near_duplicate 150, exact_duplicate 50" in dedup  # most frequent reason first
    assert next(line for line in out.splitlines() if line.startswith("ingest")).split()[1:3] == ["not", "run"]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and not k.endswith(("task_weights", "extra_patterns")):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_one_place_for_each_default():
    """The pydantic models hold the defaults: the template init copies states every key with that value,
    and this repository's params.yaml states every key (its values are the example's)."""
    from vertical_dag.params import Params

    defaults = _flat(Params().model_dump())
    template = _flat(yaml.safe_load((REPO / "vertical_dag/templates/params.yaml").read_text()))
    example = _flat(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert set(template) == set(defaults) == set(example)
    differ = {k: (template[k], v) for k, v in defaults.items() if template[k] != v}
    assert differ == {"project.name": ("my-vertical", "vertical")}  # init writes the folder's name there
