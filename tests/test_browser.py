"""Seen in a browser: the evaluation report and the Dagster UI's asset graph, in headless Chromium.

Skipped only where no Chromium is installed (CI installs Debian's `chromium` and `fonts-noto-cjk`).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from .conftest import BIN

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (Debian: apt-get install chromium)")

# Appended to a copy of the page: draws a Chinese character of the page and an unassigned code point in the
# body's own font stack; equal pixels mean the Chinese text renders as the missing-glyph box.
INK_CHECK = """<script>
function ink(s){const c=document.createElement('canvas');c.width=120;c.height=60;const x=c.getContext('2d');
x.font="40px "+getComputedStyle(document.body).fontFamily;x.fillText(s,0,45);return x.getImageData(0,0,120,60).data.join();}
const han=(document.body.innerText.match(/[\\u4e00-\\u9fff]/g)||[]);
document.body.setAttribute('data-han', han.length);
document.body.setAttribute('data-cjk-renders', han.length>1 && ink(han[0])!==ink('\\ue000') && ink(han[0])!==ink(han[1]));
</script>"""


def dump_dom(url: str, budget_ms: int = 30000) -> str:
    """The page's DOM after its scripts ran (and, for the Dagster UI, its GraphQL answers arrived)."""
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200",
         f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def visible_text(dom: str) -> str:
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def sample_metrics() -> dict:
    models = {"base": {"domain_bpc": 2.0, "general_bpc": 1.1, "task_accuracy": 0.40},
              "pretrained": {"domain_bpc": 1.6, "general_bpc": 1.15, "task_accuracy": 0.45},
              "finetuned": {"domain_bpc": 1.7, "general_bpc": 1.2, "task_accuracy": 0.60}}
    gates = {"pretrained_beats_base_domain_bpc": {"success": True, "observed": 0.4, "bound": 0.0,
                                                 "description": "domain bits/char fall"}}
    samples = [{"prompt": "《中华人民共和国民法典》第一条的内容是什么？", "base": "不知道",
                "pretrained": "为了保护民事主体的合法权益", "finetuned": "为了保护民事主体的合法权益，调整民事关系"}]
    return {"models": models, "gates": gates, "samples": samples, "note": "示例报告"}


def test_plots_use_an_installed_cjk_font() -> None:
    from vertical_dag.modeling.fonts import cjk_font, use_cjk_font

    if cjk_font() is None:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert use_cjk_font() == matplotlib.rcParams["font.sans-serif"][0]
    fig, ax = plt.subplots()
    ax.set_title("民法典 第一条")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font" would be raised here
        fig.savefig(os.devnull, format="png")
    plt.close(fig)


@pytest.mark.slow
@needs_browser
def test_report_page_as_a_person_sees_it(tmp_path: Path) -> None:
    from vertical_dag.modeling.report import render_report

    report = tmp_path / "data" / "reports" / "eval" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text(render_report(sample_metrics(), {"pretrain": [(0, 3.0), (10, 2.5)]}), encoding="utf-8")
    checked = report.with_name("report.checked.html")
    checked.write_text(report.read_text(encoding="utf-8").replace("</body>", INK_CHECK + "</body>"), encoding="utf-8")
    dom = dump_dom(checked.as_uri(), budget_ms=5000)
    text = visible_text(dom)
    assert "Evaluation report: base vs pretrained vs fine-tuned" in text
    assert "《中华人民共和国民法典》第一条的内容是什么？" in text and "示例报告" in text
    assert "all pass" in text and len(re.findall(r"<img[^>]+src=\"data:image/png", dom)) >= 2
    assert "Noto Sans CJK SC" in dom  # the page names a CJK font stack
    han = int(re.search(r'data-han="(\d+)"', dom).group(1))
    assert han > 20
    assert 'data-cjk-renders="true"' in dom, "Chinese text renders as missing-glyph boxes: install fonts-noto-cjk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@needs_browser
def test_dagster_ui_asset_graph(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(project / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(BIN.parent)}
    server = subprocess.Popen([str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)], cwd=project,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "dg dev did not come up"
                time.sleep(2)
        dom = dump_dom(f"http://127.0.0.1:{port}/locations/{project.name}/asset-groups/data/lineage")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # dg dev's processes can outlast a SIGTERM on a busy machine
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    text = visible_text(dom)
    assert f"Asset Group in {project.name}" in text
    for asset in ("raw_sources", "raw_documents", "deduplicated", "normalized", "splits"):
        assert re.search(rf"\b{asset}\b", text), f"{asset} not on the asset graph: {text[:800]}"
    assert "Materialize all" in text
