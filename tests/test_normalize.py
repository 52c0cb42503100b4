"""Normalisation: cleaning, quality filters with reasons, Chinese-aware PII, language, the incremental stage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from vertical_dag.project import Project
from vertical_dag.records import DOC_SCHEMA, make_doc_id, read_ledger, write_parquet
from vertical_dag.stages.context import run_stage
from vertical_dag.text.clean import CleanOptions, clean_text, clean_texts
from vertical_dag.text.langid import detect_language, detect_languages
from vertical_dag.text.pii import Redactor, id_check_char, luhn_ok, valid_resident_id
from vertical_dag.text.quality import quality_reasons, quality_verdicts, resolve_thresholds

from .conftest import run_cli

DEDUP_SCHEMA = pa.unify_schemas([DOC_SCHEMA, pa.schema([("cluster_id", pa.string()), ("canonical_hash", pa.string())])])

ARTICLES = [
    "第一条　为了保护专利权人的合法权益，鼓励发明创造，推动发明创造的应用，提高创新能力，制定本法。",
    "第二条　本法所称的发明创造是指发明、实用新型和外观设计。",
    "第三条　国务院专利行政部门负责管理全国的专利工作；统一受理和审查专利申请，依法授予专利权。",
    "第四条　申请专利的发明创造涉及国家安全或者重大利益需要保密的，按照国家有关规定办理。",
]


# ---------------------------------------------------------------- helpers shared with test_split


def make_project(root: Path, params: dict | None = None) -> Project:
    """A bare project folder (params.yaml + dvc.yaml): enough for run_stage, far faster than `init`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params or {"project": {"domain": "legal"}}, allow_unicode=True))
    (root / "dvc.yaml").write_text("stages: {}\n")
    return Project(root)


def doc_rows(texts: list[str], batch: str, *, source: str = "china_law", clusters: list[str] | None = None,
             metas: list[dict] | None = None, ids: list[str] | None = None) -> list[dict]:
    rows = []
    for i, text in enumerate(texts):
        doc_id = ids[i] if ids else make_doc_id(source, f"{batch}:{i}")
        rows.append({"doc_id": doc_id, "source": source, "uri": f"{batch}.jsonl#{i + 1}", "batch": batch, "text": text,
                     "lang": None, "meta": json.dumps((metas or [{}] * len(texts))[i], ensure_ascii=False),
                     "cluster_id": clusters[i] if clusters else doc_id, "canonical_hash": doc_id})
    return rows


def write_dedup_part(root: Path, name: str, rows: list[dict]) -> Path:
    path = root / "data" / "deduplicated" / "parts" / f"{name}.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=DEDUP_SCHEMA), path)
    return path


# ---------------------------------------------------------------- cleaning


def test_clean_keeps_chinese_punctuation_folds_fullwidth_digits_and_drops_invisibles():
    raw = "第一条\u3000本法自２０２１年１月１日起施行，（一）适用于ＡＢＣ。\u200b\ufeff\r\n\r\n\r\n\r\n下一行\x07"
    out = clean_text(raw)
    assert "，" in out and "（一）" in out and "。" in out  # CJK punctuation kept
    assert "2021年1月1日" in out and "ABC" in out  # full-width digits and letters folded
    assert "\u200b" not in out and "\ufeff" not in out and "\x07" not in out and "\r" not in out
    assert "\n\n\n" not in out and out.endswith("下一行")
    assert clean_text(out) == out  # idempotent
    assert clean_text("Price：１００，ok", CleanOptions(unicode_form="nfkc")) == "Price:100,ok"
    assert clean_text("No CJK here，ｆｕｌｌ") == "No CJK here,full"  # outside CJK text NFKC folds punctuation too


def test_clean_strips_markup_and_converts_traditional():
    html = '<div class="x"><p>第一條　為了保護專利權人的合法權益&nbsp;&amp;</p><script>var a=1;</script><!-- c --></div>'
    out = clean_text(html, CleanOptions(traditional_to_simplified=True))
    assert "<" not in out and "script" not in out and "var a" not in out
    assert "第一条" in out and "为了保护专利权人的合法权益" in out and "&" in out
    assert clean_text("See <Contract Law> and <b>this</b>.") == "See <Contract Law> and this."  # only real tags go
    table = "税目 | 税率\n+------+------+\n| 普通 | 1％ |\n!34436{width=\"4.6in\"\nheight=\"3.1in\"}"
    cleaned = clean_text(table)
    assert "------" not in cleaned and "width=" not in cleaned and "普通" in cleaned


# Documents that would bleed into their neighbours if a batch were one string: an unclosed comment before a
# closing one, a table rule and spaces at a document's edges, NUL and a "\r" at an end with "\n" next door.
BATCH_EDGES = [
    "前文<!-- 未闭合的注释", "后文 --> 仍然保留\n", "----\n表格", "  首尾空格\u3000\u3000  ", "a\x00b\r", "\nnext",
    "<p>段落</p>&amp;", "\u3000", "", "Ａ１，混合 English，", "The same line\nThe same line\nThe same line",
    "买一送一优惠多多" * 10, " ".join(["buy cheap watches online now"] * 20), ARTICLES[0], "これは日本語の文です",
]


def test_a_batch_cleans_each_document_as_if_it_were_alone():
    for opts in (CleanOptions(), CleanOptions("nfkc"), CleanOptions("none", strip_markup=False)):
        assert clean_texts(BATCH_EDGES, opts) == [clean_text(t, opts) for t in BATCH_EDGES]
    cleaned = clean_texts(BATCH_EDGES)
    assert cleaned[:6] == ["前文<!-- 未闭合的注释", "后文 --> 仍然保留", "表格", "首尾空格", "ab", "next"]
    assert cleaned[6:9] == ["段落\n&", "", ""] and cleaned[9] == "A1，混合 English，"
    for preset in ("general", "legal"):
        t = resolve_thresholds(preset)
        assert quality_verdicts(cleaned, t) == [quality_verdicts([c], t)[0] for c in cleaned]
    assert [g.lang for g in detect_languages(cleaned)] == [detect_language(c).lang for c in cleaned]
    assert quality_reasons(cleaned[11:13], resolve_thresholds("general")) == ["repeated_ngrams", "repeated_ngrams"]


# ---------------------------------------------------------------- PII


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix.ljust(length - 1, "7")
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


VALID_ID = "11010519491231002X"  # the GB 11643 standard's own example
assert valid_resident_id(VALID_ID) and id_check_char(VALID_ID[:17]) == "X"


@pytest.mark.parametrize("text, kind", [
    ("请联系 zhang.san@example.com.cn 获取材料", "EMAIL"),
    ("手机13812345678联系", "PHONE"),
    ("电话：+86 138 1234 5678。", "PHONE"),
    ("办公室 010-62345678 转人工", "PHONE"),
    ("深圳（0755）8612 3456", "PHONE"),
    ("London office +44 20 7946 0958 today", "PHONE"),
    ("call (555) 123-4567 now", "PHONE"),
    (f"身份证号{VALID_ID}，住址", "ID_CARD"),
    (f"身份证号 {VALID_ID.lower()} 已核验", "ID_CARD"),
    (f"卡号{luhn_complete('622202', 19)}转账", "BANK_CARD"),
    ("Visa 4111 1111 1111 1111 exp", "BANK_CARD"),
    ("服务器192.168.1.10宕机", "IP"),
    ("addr 2001:db8::1 ok", "IP"),
])
def test_pii_each_type_is_redacted(text, kind):
    red = Redactor().redact(text)
    assert red.counts == {kind: 1}, (text, red.text)
    assert f"<{kind}>" in red.text


@pytest.mark.parametrize("text", [
    "110105194912310021号",  # wrong ID check digit
    "身份证110105194913310028",  # impossible birth date (month 13)
    "卡号4111111111111112",  # fails Luhn
    "国标第123456789012345678号",  # 18-digit statute/document number
    "文号第12345678901234567号",
    "2021-08-20施行", "2021年8月20日起施行", "自20210820起", "2021-08-20 12:30:45",
    "version 1.2.3.4", "v2.0.1.4", "版本 10.0.19041.1", "Python 3.11.4",
    "金额1,234,567.89元", "邮编100080", "ISBN 978-7-111-12345-6", "圆周率3.14159265358979",
])
def test_pii_lookalikes_are_not_redacted(text):
    red = Redactor().redact(text)
    assert red.counts == {} and red.text == text


def test_user_patterns_and_type_selection():
    red = Redactor({"CASE_NO": r"\(\d{4}\)[\u4e00-\u9fff\d]+号"}).redact("案号(2021)京01民初123号，电话13812345678")
    assert red.counts == {"CASE_NO": 1, "PHONE": 1} and "<CASE_NO>" in red.text
    assert Redactor(types=("EMAIL",)).redact("电话13812345678").counts == {}


# ---------------------------------------------------------------- quality and language


def test_quality_filters_give_reasons():
    t = resolve_thresholds("general")
    texts = [
        "too short",
        "1234567890 " * 30 + "numbers everywhere in this text",
        "@@@ ### $$$ %%% ^^^ &&& *** ((( ))) !!! ~~~ +++ === ??? >>> <<< ||| ;;; ::: ,,, ... " * 3,
        "\n".join(["the same line repeated again and again"] * 12),
        " ".join(["buy cheap watches online now"] * 20),
        "A perfectly ordinary paragraph of English prose that talks about the weather, the harvest, the river "
        "and the people of the valley, who meet each market day to trade grain, cloth and stories.",
    ]
    assert quality_reasons(texts, t) == ["too_short", "digit_ratio", "symbol_ratio", "repeated_lines",
                                         "repeated_ngrams", None]
    zh_spam = "买一送一优惠多多" * 10
    assert quality_reasons([zh_spam], t) == ["repeated_ngrams"]  # character n-grams for CJK


def test_legal_preset_keeps_numbered_clauses_and_params_override_it():
    clauses = ("第二百一十七条　海上保险合同的内容，主要包括下列各项：\n（一）保险人名称；\n（二）被保险人名称；\n"
               "（三）保险标的；\n（四）保险价值；\n（五）保险金额；\n（六）保险责任和除外责任；\n（七）保险期间；\n（八）保险费。")
    numbered = "1.2.1 范围\n1.2.2 术语\n1.2.3 定义\n2.1.1 总则 2.1.2 细则 2.1.3 附则\n第3.4.5条 第6.7.8条"
    general, legal = resolve_thresholds("general"), resolve_thresholds("legal")
    assert quality_reasons([clauses, numbered], general) == ["symbol_ratio", "digit_ratio"]
    assert quality_reasons([clauses, numbered], legal) == [None, None]
    assert quality_reasons([ARTICLES[1]], general) == ["too_short"]
    assert quality_reasons([ARTICLES[1]], legal) == [None]
    assert resolve_thresholds("legal", {"min_chars": 500, "max_digit_ratio": None}).min_chars == 500
    assert resolve_thresholds("legal", {"max_digit_ratio": None}).max_digit_ratio == legal.max_digit_ratio


def test_language_identifier_is_offline_and_script_aware():
    assert detect_language(ARTICLES[0]).lang == "zh"
    assert detect_language("第五条").lang == "zh"  # the bare model says Japanese here
    assert detect_language("第一條　為了保護專利權人的合法權益").lang == "zh"
    assert detect_language("The quick brown fox jumps over the lazy dog near the river bank.").lang == "en"
    assert detect_language("これは日本語の文です").lang == "ja"
    assert detect_language("1234 5678 90 -- ** 12").lang == "und"
    assert detect_language("<PHONE> <EMAIL> <ID_CARD>").lang == "und"


# ---------------------------------------------------------------- the stage


def _out_ids(root: Path) -> set[str]:
    parts = sorted((root / "data/normalized/parts").rglob("*.parquet"))
    return {i for p in parts for i in pq.read_table(p, columns=["doc_id"]).column("doc_id").to_pylist()}


def test_stage_handles_bad_input_and_conserves_documents(tmp_path):
    params = {"project": {"domain": "legal"},
              "normalize": {"allowed_languages": ["zh"], "filters": {"max_digit_ratio": 1.0, "max_symbol_ratio": 1.0}}}
    proj = make_project(tmp_path / "p", params)
    texts = [
        *ARTICLES,
        "\u200b\u200b \ufeff <br/> \r\n",  # empty after cleaning
        f"13812345678 {VALID_ID} zhang@example.com",  # all PII
        "1234 5678 90 -- 12 34 56 78 90 12",  # no language the identifier can tell
        "This article is written in English and therefore not in the allowed set of languages.",
        "第五条　联系人电话13812345678，邮箱 li.si@example.org，依法办理登记手续并公告。",  # redacted, kept
        None,  # a null text is empty, not a crash
    ]
    rows = doc_rows([t or "" for t in texts], "2020s")
    rows[-1]["text"] = ""
    write_dedup_part(proj.root, "china_law/2020s", rows)
    m = run_stage("normalize", proj, gate=False)

    assert m["documents_in"] == len(texts)
    assert m["documents_in"] == m["documents_out"] + m["dropped"] + m["quarantined"]
    assert m["drops_by_reason"] == {"empty_after_cleaning": 2, "all_pii": 1, "lang_undetermined": 1, "lang_not_allowed": 1}
    assert m["redactions_by_type"] == {"EMAIL": 1, "PHONE": 1} and m["redacted"] == 1
    assert m["examples_by_reason"]["all_pii"] == [rows[5]["doc_id"]]

    out = pq.read_table(proj.root / "data/normalized/parts/china_law/2020s.parquet")
    assert set(out.column_names) >= {*DOC_SCHEMA.names, "cluster_id", "canonical_hash", "pii_count"}
    assert set(out.column("lang").to_pylist()) == {"zh"}
    redacted = [t for t in out.column("text").to_pylist() if "<PHONE>" in t]
    assert redacted and "13812345678" not in redacted[0] and "<EMAIL>" in redacted[0]

    ledger = read_ledger(proj.root / "data/normalized/ledger").to_pylist()
    dropped = {r["doc_id"] for r in ledger if r["action"] == "dropped"}
    assert dropped | _out_ids(proj.root) == {r["doc_id"] for r in rows} and not dropped & _out_ids(proj.root)
    red_row = next(r for r in ledger if r["action"] == "redacted")
    assert json.loads(red_row["detail"]) == {"EMAIL": 1, "PHONE": 1} and red_row["doc_id"] == rows[8]["doc_id"]
    assert json.loads((proj.root / "data/metrics/normalize.json").read_text())["documents_in"] == len(texts)


def test_stage_is_incremental(tmp_path):
    proj = make_project(tmp_path / "p")
    first = write_dedup_part(proj.root, "a", doc_rows(ARTICLES[:2], "a"))
    m1 = run_stage("normalize", proj, gate=False)
    assert (m1["new_parts"], m1["documents_in"]) == (1, 2)
    out_a = proj.root / "data/normalized/parts/a.parquet"
    stamp = out_a.stat().st_mtime_ns

    write_dedup_part(proj.root, "b", doc_rows(ARTICLES[2:], "b"))
    m2 = run_stage("normalize", proj, gate=False)
    assert (m2["new_parts"], m2["changed_parts"], m2["documents_in"], m2["documents_out"]) == (1, 0, 4, 4)
    assert out_a.stat().st_mtime_ns == stamp  # the old part was not touched

    m3 = run_stage("normalize", proj, gate=False)
    assert (m3["new_parts"], m3["changed_parts"], m3["mb_processed"]) == (0, 0, 0)

    write_dedup_part(proj.root, "a", doc_rows(ARTICLES[:1], "a"))  # a changed input part is replaced
    m4 = run_stage("normalize", proj, gate=False)
    assert (m4["changed_parts"], m4["documents_in"]) == (1, 3)

    first.unlink()  # a vanished input part takes its output with it
    m5 = run_stage("normalize", proj, gate=False)
    assert (m5["removed_parts"], m5["documents_in"]) == (1, 2) and not out_a.exists()

    (proj.root / "params.yaml").write_text(yaml.safe_dump({"project": {"domain": "legal"}, "normalize": {"filters": {"min_chars": 1000}}}))
    m6 = run_stage("normalize", proj, gate=False)
    assert m6["rebuilt"] and m6["drops_by_reason"] == {"too_short": 2}
    details = [r["detail"] for r in read_ledger(proj.root / "data/normalized/ledger").to_pylist()]
    assert len(details) == 2 and all("< min_chars=1000" in d for d in details)  # the ledger says what was measured


def test_cli_runs_normalize_in_an_initialised_project(project):
    write_dedup_part(project, "china_law/2010s", doc_rows(ARTICLES, "2010s"))
    with open(project / "params.yaml", "a", encoding="utf-8") as f:
        f.write("\n")
    proc = run_cli("run", "normalize", "--no-gate", "--json", cwd=project)
    m = json.loads(proc.stdout)
    assert m["documents_in"] == 4 and m["documents_in"] == m["documents_out"] + m["dropped"]
    assert (project / "data/normalized/state.json").exists()


def test_disabled_normalize_passes_documents_through(tmp_path):
    proj = make_project(tmp_path / "p", {"normalize": {"enabled": False}})
    texts = ["<b>x</b>\u200b 13812345678", "short"]
    write_dedup_part(proj.root, "a", doc_rows(texts, "a"))
    m = run_stage("normalize", proj, gate=False)
    assert (m["documents_out"], m["dropped"], m["redacted"]) == (2, 0, 0)
    out = pq.read_table(proj.root / "data/normalized/parts/a.parquet").column("text").to_pylist()
    assert out == texts


def test_a_large_part_done_in_pieces_on_two_workers_gives_the_same_bytes(tmp_path, monkeypatch):
    import hashlib

    from vertical_dag.stages import normalize

    texts = [f"第{i}条　" + ARTICLES[i % 4] + ("联系13812345678。" if i % 7 == 0 else "") for i in range(300)]
    texts[5], texts[150] = "", "短"  # drops in two different pieces
    digests = {}
    for workers in (1, 2):
        proj = make_project(tmp_path / f"w{workers}", {"project": {"domain": "legal"},
                                                        "execution": {"workers": workers}})
        path = proj.root / "data/deduplicated/parts/big.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(doc_rows(texts, "big"), schema=DEDUP_SCHEMA), path, row_group_size=40)
        monkeypatch.setattr(normalize, "PIECE_BYTES", 1)  # every row group its own piece
        assert len(normalize.pieces(normalize.Unit("big", path, "big"))) == 8
        m = run_stage("normalize", proj, gate=False)
        assert (m["documents_in"], m["workers"], m["drops_by_reason"]) == (300, workers, {"empty_after_cleaning": 1, "too_short": 1})
        out = proj.root / "data/normalized"
        digests[workers] = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                            for p in sorted(out.rglob("*.parquet"))}
        assert not list(out.rglob("*.tmp"))  # the pieces are gone
    assert digests[1] == digests[2] and len(digests[1]) == 3  # part, ledger and the gate's profile
