"""This project's Dagster definitions: vertical_dag's assets, checks, sensors and schedules, built from the
dvc.yaml and params.yaml in this folder. Written by `vertical-dag init`; `dg` and `dagster` load it."""

from pathlib import Path

import dagster as dg

from vertical_dag.defs import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Path(__file__).resolve().parents[1])
