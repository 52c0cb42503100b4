"""Sensors, all stopped until switched on (see docs/dagster.md).

- raw_files_sensor: polls the fingerprint of data/raw/; on a change it requests one run that observes
  raw_sources and rebuilds the data assets. The cursor is the last fingerprint acted on, so one change
  gives exactly one run (a file removed and put back is a change too). Stages whose inputs did not change
  are skipped by DVC, and the incremental stages process only the new batch.
- automation: evaluates the assets' automation conditions (data eager, training on its cron).
"""

# no `from __future__ import annotations`: Dagster reads the context/resource type hints at runtime
import dagster as dg

from ..project import Project
from .assets_data import raw_fingerprint
from .pipeline import RAW_ASSET

RAW_SENSOR = "raw_files_sensor"
AUTOMATION_SENSOR = "automation"


def raw_files_sensor(project: Project, data_keys: list[str], interval_s: int) -> dg.SensorDefinition:
    keys = [dg.AssetKey(k) for k in [RAW_ASSET, *data_keys]]

    @dg.sensor(
        name=RAW_SENSOR,
        minimum_interval_seconds=interval_s,
        asset_selection=keys,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="New or changed files under data/raw/ -> observe raw_sources and rebuild the data assets.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        fingerprint, per_source = raw_fingerprint(project)
        if context.cursor == fingerprint:
            return dg.SkipReason(f"data/raw unchanged ({fingerprint})")
        if not per_source:
            return dg.SensorResult(skip_reason="data/raw is empty", cursor=fingerprint)
        context.log.info(f"data/raw changed: {per_source} files by source, fingerprint {fingerprint}")
        request = dg.RunRequest(asset_selection=keys, tags={"vertical_dag/raw_fingerprint": fingerprint})
        # the request and the new cursor are committed together: one change, one run
        return dg.SensorResult(run_requests=[request], cursor=fingerprint)

    return _sensor


def automation_sensor(interval_s: int) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(include_sources=True),  # else raw_sources is left out
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Data assets follow new data eagerly; training assets run on automation.training_cron.",
    )
