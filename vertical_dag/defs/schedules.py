"""The rebuild schedule (params automation.schedule_cron, nightly by default; stopped until switched on).

It targets every runnable asset; DVC decides what is stale, so unchanged stages are skipped in seconds and
only stages whose inputs, code or params changed run.
"""

from __future__ import annotations

import dagster as dg

from .pipeline import RAW_ASSET

REBUILD_SCHEDULE = "rebuild_stale"


def rebuild_schedule(runnable_keys: list[str], cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=REBUILD_SCHEDULE,
        cron_schedule=cron,
        target=dg.AssetSelection.assets(RAW_ASSET, *runnable_keys),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Rebuild what DVC finds stale (stages with new inputs, code or params).",
    )
