"""Named jobs for the two usual runs (asset-selection strings work too: `dg launch --assets "+key:splits"`):

dg launch --job data_pipeline
dg launch --job full_pipeline
"""

from __future__ import annotations

import dagster as dg

from .pipeline import RAW_ASSET

DATA_JOB = "data_pipeline"
FULL_JOB = "full_pipeline"


def pipeline_jobs(data_keys: list[str], runnable_keys: list[str]) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            DATA_JOB,
            selection=dg.AssetSelection.assets(RAW_ASSET, *data_keys),
            description="Observe data/raw/ and rebuild the data assets (DVC skips unchanged stages).",
        ),
        dg.define_asset_job(
            FULL_JOB,
            selection=dg.AssetSelection.assets(RAW_ASSET, *runnable_keys),
            description="Every runnable stage, data and training, in lineage order (DVC skips unchanged ones).",
        ),
    ]
