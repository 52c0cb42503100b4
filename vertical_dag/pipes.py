"""A stage launched by Dagster (through `dvc repro`, which passes the environment on) reports to it by Pipes.

The Dagster asset opens a Pipes session and hands its bootstrap variables to `dvc repro`; the stage runner
calls `report_stage` once its metrics are written, and the asset shows them as the materialization's
metadata. Outside Dagster (a plain `dvc repro` or `vertical-dag run`) this does nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

MESSAGE_KIND = "vertical_dag/stage_metrics"
CONTEXT_VAR = "DAGSTER_PIPES_CONTEXT"  # set by the Dagster side's Pipes session (dagster_pipes reads the same)


def report_stage(stage: str, metrics: dict[str, Any]) -> bool:
    """Send the stage's metrics to the Dagster run that launched it; False when none did."""
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the first rank speaks
        return False
    if CONTEXT_VAR not in os.environ:  # not launched by Dagster: nothing to import or say
        return False
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    loader = PipesEnvVarParamsLoader()
    payload = {"kind": MESSAGE_KIND, "stage": stage, "metrics": json.loads(json.dumps(metrics, default=str))}
    with open_dagster_pipes(params_loader=loader) as pipes:
        pipes.report_custom_message(payload)
    return True
