"""Request bodies of the OpenAI-compatible endpoints. Fields other clients send that change nothing here
(user, logprobs off, frequency/presence penalty 0, ...) are accepted and ignored; fields whose value this
server cannot honour (n > 1, tool calls) are refused with a message naming them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..modeling.generate import GenerationSettings


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # 0: greedy; > 0: sampling; absent: params' mode
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    tools: Any = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is not None and len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        return stops

    @model_validator(mode="after")
    def _supported(self) -> _Common:
        if self.n != 1:
            raise ValueError("n: only n=1 is supported")
        if self.tools:
            raise ValueError("tools: tool calling is not supported by this server")
        return self

    def settings(self, base: GenerationSettings) -> GenerationSettings:
        """The params' generation settings with this request's overrides."""
        changes: dict[str, Any] = {}
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            changes["max_new_tokens"] = limit
        if self.temperature == 0:
            changes["mode"] = "greedy"
        elif self.temperature is not None:
            changes.update(mode="sample", temperature=self.temperature)
        if self.top_p is not None:
            changes["top_p"] = self.top_p
        if self.stop:
            changes["stop"] = [*base.stop, *self.stop]
        if self.seed is not None:
            changes["seed"] = self.seed
        return replace(base, **changes)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("give one prompt (a string or a list of one string)")
            return v[0]
        return v
