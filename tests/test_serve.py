"""`vertical-dag serve`: a real uvicorn server on a free 127.0.0.1 port, driven by httpx and the openai client."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import torch

from vertical_dag.cli import main as cli_main
from vertical_dag.modeling.generate import GenerationSettings, generate_one, load_for_inference
from vertical_dag.modeling.prompting import InputProcessor
from vertical_dag.params import Params
from vertical_dag.serve.server import build_served, start_background

PROMPTS = [f"问题{i}：《刑法》第{i + 1}条 {'法' * i} case {i * 7}" for i in range(8)]


def lively_tiny(tokenizer_dir: Path, out: Path) -> Path:
    """A tiny Llama whose weights are scaled up, so different prompts get clearly different greedy answers
    (a freshly initialised one answers the same token to everything)."""
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.tiny import build_tiny_llama

    build_tiny_llama(tokenizer_dir, out)
    model, tok = load_model_folder(out)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(25)
    model.save_pretrained(out)
    return out


def params_for_test(**generation) -> Params:
    gen = {"max_new_tokens": 8, "max_prompt_tokens": 64, **generation}
    return Params.model_validate({"finetune": {"generation": gen, "system_prompt": "你是法律助手。"},
                                  "serve": {"batch_wait_ms": 300}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer_dir):
    folder = lively_tiny(tokenizer_dir, tmp_path_factory.mktemp("serve") / "tiny")
    return load_for_inference(folder)


@pytest.fixture(scope="module")
def server(tiny):
    params = params_for_test()
    served = build_served(*tiny, params, model_id="tiny")
    bg = start_background(served)
    yield bg, served, params
    bg.stop()


def expected(tiny, params: Params, prompt: str) -> str:
    settings = GenerationSettings.from_params(params.finetune.generation, params.finetune.system_prompt)
    return generate_one(*tiny, prompt, settings, InputProcessor.from_params(params))["output"]


def test_models_chat_and_completions_through_the_openai_client(server, tiny):
    bg, served, params = server
    client = openai.OpenAI(base_url=f"{bg.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny"]
    res = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": PROMPTS[1]}])
    assert res.choices[0].message.content == expected(tiny, params, PROMPTS[1])  # same template, settings, answer
    assert res.choices[0].finish_reason in ("stop", "length") and res.usage.completion_tokens <= 8
    assert res.usage.prompt_tokens > 10
    comp = client.completions.create(model="tiny", prompt="第一条 为了", max_tokens=5)
    assert comp.usage.completion_tokens <= 5 and comp.choices[0].finish_reason in ("stop", "length")
    assert isinstance(comp.choices[0].text, str) and comp.choices[0].text != res.choices[0].message.content


def test_streamed_answers_join_to_the_plain_answer(server, tiny):
    bg, served, params = server
    client = openai.OpenAI(base_url=f"{bg.url}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": PROMPTS[2]}],
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected(tiny, params, PROMPTS[2])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens > 0
    with httpx.stream("POST", f"{bg.url}/v1/completions", json={"model": "tiny", "prompt": "第一条", "stream": True,
                                                                "max_tokens": 6}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    plain = httpx.post(f"{bg.url}/v1/completions", json={"model": "tiny", "prompt": "第一条", "max_tokens": 6}, timeout=60)
    assert "".join(json.loads(x[6:])["choices"][0]["text"] for x in lines[:-1]) == plain.json()["choices"][0]["text"]


def test_eight_concurrent_requests_each_get_their_own_answer(server, tiny):
    bg, served, params = server
    want = [expected(tiny, params, p) for p in PROMPTS]
    assert len(set(want)) >= 6  # the prompts really do get different answers
    before = served.engine.stats.largest_batch

    def ask(prompt: str) -> str:
        r = httpx.post(f"{bg.url}/v1/chat/completions", timeout=120,
                       json={"model": "tiny", "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, PROMPTS))
    assert got == want
    assert served.engine.stats.largest_batch > max(before, 1)  # they were decoded together, not one by one


def test_bad_requests_get_4xx_with_clear_messages(server):
    bg, served, params = server
    post = lambda path, **kw: httpx.post(f"{bg.url}{path}", timeout=30, **kw)  # noqa: E731
    r = post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "invalid request body" in r.json()["error"]["message"]
    r = post("/v1/chat/completions", json={"model": "tiny"})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and "messages.0.role" in r.json()["error"]["message"]
    r = post("/v1/chat/completions", json={"model": "tiny", "n": 2, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "n=1" in r.json()["error"]["message"]
    r = post("/v1/completions", json={"model": "gpt-4", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found" and "'tiny'" in r.json()["error"]["message"]
    r = post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "长" * 300}]})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded" and "limit is 64" in err["message"]
    r = post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 100_000})
    assert r.status_code == 400 and "leaves no room" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "prompt"
    client = openai.OpenAI(base_url=f"{bg.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}).status_code == 200


def test_a_dropped_stream_frees_its_slot(server):
    bg, served, params = server
    cancelled = served.engine.stats.cancelled
    body = {"model": "tiny", "prompt": "第一条", "stream": True, "max_tokens": 1500}
    with httpx.Client(timeout=60) as c, c.stream("POST", f"{bg.url}/v1/completions", json=body) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break  # leave mid-answer: the connection closes with the client
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        h = httpx.get(f"{bg.url}/health").json()
        if h["running"] == 0 and h["cancelled"] > cancelled:
            break
        time.sleep(0.05)
    assert h["running"] == 0 and h["cancelled"] == cancelled + 1  # stopped, not decoded to 1500 tokens
    r = httpx.post(f"{bg.url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3


def test_api_key_is_required_when_set(tiny):
    served = build_served(*tiny, params_for_test(), model_id="tiny", api_key="s3cret")
    bg = start_background(served)
    try:
        assert httpx.get(f"{bg.url}/v1/models").status_code == 401
        r = httpx.get(f"{bg.url}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=f"{bg.url}/v1", api_key="s3cret")
        assert [m.id for m in client.models.list()] == ["tiny"]
    finally:
        bg.stop()


def test_prompts_are_processed_like_the_corpus_and_pii_never_reaches_model_or_log(tiny, caplog):
    params = params_for_test(redact_pii=True)
    proc = InputProcessor.from_params(params)
    id_no = "11010519491231002X"  # a valid GB 11643 check digit
    done = proc.text(f"我的身份证号是{id_no}，电话１３８００１３８０００。<p>请问</p>")
    assert id_no not in done.text and "<ID_CARD>" in done.text and done.redactions["ID_CARD"] == 1
    assert "<p>" not in done.text and "１" not in done.text  # markup out, full-width digits folded (then redacted)
    t2s = InputProcessor.from_params(Params.model_validate({"normalize": {"traditional_to_simplified": True}}))
    assert t2s.text("中華人民共和國刑法").text == "中华人民共和国刑法"
    raw = InputProcessor.from_params(Params.model_validate({"finetune": {"generation": {"normalize_prompts": False}}}))
    assert raw.text("Ａ  b").text == "Ａ  b"

    served = build_served(*tiny, params, model_id="tiny")
    bg = start_background(served)
    try:
        with caplog.at_level(logging.INFO, logger="vertical_dag.serve"):
            r = httpx.post(f"{bg.url}/v1/chat/completions", timeout=60, json={
                "model": "tiny", "messages": [{"role": "user", "content": f"身份证{id_no}"}]})
        assert r.status_code == 200
        same = httpx.post(f"{bg.url}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "messages": [{"role": "user", "content": "身份证<ID_CARD>"}]}).json()
        assert r.json()["choices"][0]["message"]["content"] == same["choices"][0]["message"]["content"]
        assert "ID_CARD" in caplog.text and id_no not in caplog.text
    finally:
        bg.stop()


def test_serve_refuses_a_public_address_without_a_key(project, capsys, monkeypatch):
    monkeypatch.delenv("VERTICAL_DAG_API_KEY", raising=False)
    assert cli_main(["-C", str(project), "serve", "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err
    assert cli_main(["-C", str(project), "serve"]) == 2  # no trained model yet: named, not a traceback
    assert "no model at" in capsys.readouterr().err
