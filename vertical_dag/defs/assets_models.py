"""Training assets: base_model -> pretrained_checkpoint -> finetuned_model -> eval_report.

Retraining on every new raw file is not wanted, so these follow their own cron (params
automation.training_cron): after a tick, each runs once all of its upstream assets have updated since
that tick. They can always be materialized by hand; DVC skips any whose inputs did not change.
"""

from __future__ import annotations

import dagster as dg

from ..project import Project
from .factory import declared_spec, stage_asset
from .pipeline import StageNode


def training_condition(cron: str) -> dg.AutomationCondition:
    return dg.AutomationCondition.on_cron(cron)


def model_assets(
    project: Project, nodes: list[StageNode], training_cron: str
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    condition = training_condition(training_cron)
    return [
        stage_asset(project, n, condition) if n.runnable else declared_spec(n) for n in nodes if n.is_training
    ]
