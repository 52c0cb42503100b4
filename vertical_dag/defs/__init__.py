"""Dagster adapter: every stage an asset with lineage, gates as blocking checks, a sensor and a schedule.

`dg dev` in a project folder loads `defs` (pyproject [tool.dg.project], or [tool.dagster] for `dagster dev`);
the project is found from the working directory, or $VERTICAL_DAG_PROJECT. Assets run their DVC stage, so
the web UI, `dvc repro` and `vertical-dag run` all agree on what is built.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ..params import load_params
from ..project import Project, find_project
from .assets_data import data_assets, raw_sources_asset
from .assets_models import model_assets
from .jobs import pipeline_jobs
from .pipeline import load_pipeline
from .resources import DvcResource
from .schedules import rebuild_schedule
from .sensors import automation_sensor, raw_files_sensor


def build_definitions(project: Project | Path | str | None = None) -> dg.Definitions:
    """Definitions for one vertical project (default: the one found from the cwd / $VERTICAL_DAG_PROJECT)."""
    if not isinstance(project, Project):
        project = find_project(project)
    auto = load_params(project.params_file).automation
    nodes = load_pipeline(project)
    runnable = [n for n in nodes if n.runnable]
    data_keys = [n.asset for n in runnable if not n.is_training]
    data_job, full_job = pipeline_jobs(data_keys, [n.asset for n in runnable])
    return dg.Definitions(
        assets=[
            raw_sources_asset(project, auto.observe_cron),
            *data_assets(project, nodes),
            *model_assets(project, nodes, auto.training_cron),
        ],
        sensors=[
            raw_files_sensor(project, data_keys, auto.sensor_interval_seconds),
            automation_sensor(auto.sensor_interval_seconds),
        ],
        jobs=[data_job, full_job],
        schedules=[rebuild_schedule(full_job, auto.schedule_cron)],
        resources={"dvc": DvcResource(project_root=str(project.root))},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
