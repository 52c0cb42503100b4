"""The rebuild schedule (params automation.schedule_cron, nightly by default; stopped until switched on).

It runs the full_pipeline job (every runnable asset); DVC decides what is stale, so unchanged stages are skipped in seconds and
only stages whose inputs, code or params changed run.
"""

from __future__ import annotations

import dagster as dg

REBUILD_SCHEDULE = "rebuild_stale"


def rebuild_schedule(full_job: dg.UnresolvedAssetJobDefinition, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=REBUILD_SCHEDULE,
        cron_schedule=cron,
        job=full_job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Rebuild what DVC finds stale (stages with new inputs, code or params).",
    )
