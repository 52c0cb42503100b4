"""What every params section shares: the error users see and the strict, frozen section model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ParamsError(ValueError):
    """Raised for an unreadable or invalid params.yaml; str() is a single line for the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
