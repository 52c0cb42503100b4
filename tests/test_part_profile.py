"""The gate profiles ingest, dedup and normalize write beside each part: the gate reads them instead of the texts
while they describe their part, measures from the texts when they do not, and still fails on bad data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from vertical_dag.explain import explain
from vertical_dag.params import load_params
from vertical_dag.project import Project
from vertical_dag.quality import file_memo, part_profile
from vertical_dag.quality.gate import read_files, validate_stage
from vertical_dag.quality.profile import pii_settings
from vertical_dag.records import read_json
from vertical_dag.stages.context import run_stage

from .test_normalize import ARTICLES, doc_rows, make_project, write_dedup_part

PHONE_TEXT = "第五条　举报电话：13812345678，请依法及时处理有关事项。"


def failed(stage: str, proj: Project) -> dict[str, object]:
    result = validate_stage(stage, proj, load_params(proj.params_file), read_json(proj.metrics_file(stage), default={}))
    return {e.name: e for e in result.failed()}


def sidecar(proj: Project, stage_out: str, part: str) -> Path:
    return proj.root / stage_out / "profile" / f"{part}.parquet"


def raw_file(proj: Project, name: str, texts: list[str]) -> None:
    path = proj.root / "data/raw/law" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")


def test_ingest_writes_a_profile_per_part_and_keeps_it_with_the_part(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "p")
    raw_file(proj, "a.jsonl", ARTICLES[:2])
    raw_file(proj, "b.jsonl", ARTICLES[2:])
    run_stage("ingest", proj, gate=False)
    parts = sorted((proj.root / "data/ingested/parts").glob("*.parquet"))
    for part in parts:
        side = pq.read_table(part_profile.sidecar_path(proj.root / "data/ingested", part))
        table = pq.read_table(part, columns=["doc_id", "text"])
        assert side.column("doc_id").to_pylist() == table.column("doc_id").to_pylist()
        assert side.column("n_chars").to_pylist() == [len(t) for t in table.column("text").to_pylist()]
    assert not failed("ingest", proj)
    doc = table.column("doc_id")[0].as_py()  # explain finds the document in its part, not in a profile
    assert "[ingest] kept" in explain(proj, doc) and ARTICLES[2][:20] in explain(proj, doc)

    (proj.root / "data/raw/law/b.jsonl").unlink()  # a removed file takes its part's profile with it
    run_stage("ingest", proj, gate=False)
    assert sorted(p.name for p in (proj.root / "data/ingested/profile").glob("*.parquet")) == \
        sorted(p.name for p in (proj.root / "data/ingested/parts").glob("*.parquet")) and len(parts) == 2

    (proj.root / "params.yaml").write_text(yaml.safe_dump({"ingest": {"min_doc_chars": 2}}))
    run_stage("ingest", proj, gate=False)  # a rebuild starts from empty parts, ledgers and profiles
    assert len(list((proj.root / "data/ingested/profile").glob("*.parquet"))) == 1


@pytest.fixture(params=["read at the gate", "read while the stage works"])
def prefetched(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    """Whether the gate process's file memo is on (gate_process.py): the gate's files are read ahead, as
    while the stage works, and the gate must still see every file changed after that."""
    on = request.param == "read while the stage works"
    monkeypatch.setattr(file_memo, "_enabled", on)
    yield on
    file_memo.clear()


def test_ingest_gate_reads_the_profile_and_measures_a_part_rewritten_by_hand(tmp_path: Path, prefetched: bool) -> None:
    proj = make_project(tmp_path / "p")
    raw_file(proj, "a.jsonl", ARTICLES)
    run_stage("ingest", proj, gate=False)

    def gate(stage: str, proj: Project) -> dict[str, object]:
        if prefetched:
            read_files(stage, proj, load_params(proj.params_file))
        return failed(stage, proj)

    out = proj.root / "data/ingested"
    part = next((out / "parts").glob("*.parquet"))
    side = pq.read_table(part_profile.sidecar_path(out, part))
    # a profile that says a text is empty, stamped for this very part: the gate believes it (it reads no text)
    zeroed = side.set_column(1, "n_chars", pa.array([0, *side.column("n_chars").to_pylist()[1:]], pa.int64()))
    part_profile.write_sidecar(part_profile.sidecar_path(out, part), zeroed, part, part_profile.settings(None))
    bad = gate("ingest", proj)
    assert list(bad) == ["text_not_empty"] and bad["text_not_empty"].observed["examples"][0]["n_chars"] == 0

    # the part rewritten by hand (one text emptied): the profile no longer describes it, the texts are measured
    table = pq.read_table(part)
    texts = table.column("text").to_pylist()
    table = table.set_column(table.schema.get_field_index("text"), table.schema.field("text"),
                             pa.array(["", *texts[1:]], pa.large_string()))
    pq.write_table(table, part)
    assert part_profile.read_sidecar(out, part, part_profile.settings(None)) is None
    bad = gate("ingest", proj)
    assert list(bad) == ["text_not_empty"]
    assert bad["text_not_empty"].observed["examples"] == [{"doc_id": table.column("doc_id")[0].as_py(), "n_chars": 0}]

    pq.write_table(pq.read_table(part).set_column(table.schema.get_field_index("text"), table.schema.field("text"),
                                                  pa.array(texts, pa.large_string())), part)
    assert not gate("ingest", proj)  # the real texts again: nothing to fail


def test_dedup_profiles_the_documents_it_kept_batch_by_batch(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "p", {"project": {"domain": "legal"}, "dedup": {"batch_size": 2}})
    raw_file(proj, "a.jsonl", [*ARTICLES, ARTICLES[0], ARTICLES[2]])  # two exact copies, dropped
    raw_file(proj, "b.jsonl", [ARTICLES[1], "第九条　本法自公布之日起施行，原有规定同时废止。"])  # a copy, a new one
    run_stage("ingest", proj, gate=False)
    run_stage("dedup", proj, gate=False)
    out = proj.root / "data/deduplicated"
    kept = 0
    for part in sorted((out / "parts").glob("*.parquet")):
        side = part_profile.read_sidecar(out, part, part_profile.settings(None))
        table = pq.read_table(part, columns=["doc_id", "text"])
        assert side is not None and side.column("doc_id").to_pylist() == table.column("doc_id").to_pylist()
        assert side.column("n_chars").to_pylist() == [len(t) for t in table.column("text").to_pylist()]
        kept += table.num_rows
    assert kept == 5 and read_json(proj.metrics_file("dedup"))["documents_out"] == 5  # 3 exact copies dropped
    assert not failed("dedup", proj)

    part = sorted((out / "parts").glob("*.parquet"))[-1]
    side = pq.read_table(part_profile.sidecar_path(out, part))
    zeroed = side.set_column(1, "n_chars", pa.array([0] * side.num_rows, pa.int64()))
    part_profile.write_sidecar(part_profile.sidecar_path(out, part), zeroed, part, part_profile.settings(None))
    assert list(failed("dedup", proj)) == ["text_not_empty"]  # the gate read the profile, not the texts


def test_normalize_profile_carries_the_pii_verdict_and_the_gate_fails_on_it(tmp_path: Path) -> None:
    # redaction off: the phone number stays in the text, the gate (every built-in type) must find it
    proj = make_project(tmp_path / "p", {"project": {"domain": "legal"}, "normalize": {"pii": {"enabled": False}}})
    rows = doc_rows([*ARTICLES, PHONE_TEXT], "a")
    write_dedup_part(proj.root, "a", rows)
    run_stage("normalize", proj, gate=False)
    out = proj.root / "data/normalized"
    part = out / "parts/a.parquet"
    settings = part_profile.settings(pii_settings(load_params(proj.params_file).normalize.pii))
    side = part_profile.read_sidecar(out, part, settings)
    assert side is not None and side.column("pii_found").to_pylist() == [None] * 4 + ["PHONE"]
    assert side.column("lang").to_pylist() == pq.read_table(part).column("lang").to_pylist() == ["zh"] * 5
    bad = failed("normalize", proj)
    assert list(bad) == ["no_pii_left"]
    assert bad["no_pii_left"].observed["examples"] == [{"doc_id": rows[4]["doc_id"], "pii_found": "PHONE"}]

    # a profile stamped with other detector settings is not used: the gate scans the texts itself
    blank = side.set_column(side.schema.get_field_index("pii_found"), "pii_found", pa.nulls(5, pa.string()))
    part_profile.write_sidecar(sidecar(proj, "data/normalized", "a"), blank, part,
                               part_profile.settings({**settings["pii"], "types": ["EMAIL"]}))
    assert list(failed("normalize", proj)) == ["no_pii_left"]


def test_normalize_profile_follows_redaction_and_a_changed_part(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "p", {"project": {"domain": "legal"}})
    write_dedup_part(proj.root, "a", doc_rows([*ARTICLES, PHONE_TEXT], "a"))
    run_stage("normalize", proj, gate=False)
    out = proj.root / "data/normalized"
    side = pq.read_table(sidecar(proj, "data/normalized", "a"))
    texts = pq.read_table(out / "parts/a.parquet").column("text").to_pylist()
    assert side.column("pii_found").to_pylist() == [None] * 5 and "<PHONE>" in texts[4]
    assert side.column("n_chars").to_pylist() == [len(t) for t in texts]
    assert not failed("normalize", proj)

    # the part edited by hand to hold the number again: measured from its texts, the gate fails
    table = pq.read_table(out / "parts/a.parquet")
    i = table.schema.get_field_index("text")
    pq.write_table(table.set_column(i, table.schema.field("text"), pa.array([*texts[:4], PHONE_TEXT], pa.large_string())),
                   out / "parts/a.parquet")
    assert list(failed("normalize", proj)) == ["no_pii_left"]
