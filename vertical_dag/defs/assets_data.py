"""Data assets: the raw files as an observable source, then ingest -> dedup -> normalize -> split.

Data assets follow new data eagerly: once raw_sources is observed with a new fingerprint (by its own cron,
by the raw-files sensor, or by hand), each data asset runs after its upstream updates. DVC makes a run
over unchanged inputs cheap: the stage is skipped and only its recorded metrics are shown again.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import xxhash

from ..project import Project
from .factory import declared_spec, stage_asset
from .pipeline import RAW_ASSET, StageNode


def raw_files(project: Project) -> list[Path]:
    """Every raw file (hidden files such as .gitkeep excluded), in a stable order."""
    if not project.raw.is_dir():
        return []
    return sorted(
        p
        for p in project.raw.rglob("*")
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(project.raw).parts)
    )


def raw_fingerprint(project: Project) -> tuple[str, dict[str, int]]:
    """A fingerprint of data/raw/ from each file's path, size and mtime: cheap enough to poll every minute.

    A new, removed, replaced or edited file changes it. (DVC hashes contents; a touched but unchanged file
    only costs a DVC no-op.) Also returns per-source file counts.
    """
    h = xxhash.xxh64()
    per_source: dict[str, int] = {}
    for f in raw_files(project):
        rel = f.relative_to(project.raw)
        st = f.stat()
        h.update(f"{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        source = rel.parts[0] if len(rel.parts) > 1 else "(top level)"
        per_source[source] = per_source.get(source, 0) + 1
    return h.hexdigest(), per_source


def raw_sources_asset(project: Project, observe_cron: str) -> dg.SourceAsset:
    @dg.observable_source_asset(
        name=RAW_ASSET,
        group_name="data",
        description="Raw files under data/raw/<source>/ (one folder per source, new batches arrive as new files). "
        "Its data version is a fingerprint of the folder.",
        tags={"layer": "data"},
        automation_condition=dg.AutomationCondition.cron_tick_passed(observe_cron)
        & ~dg.AutomationCondition.in_progress(),
    )
    def raw_sources() -> dg.ObserveResult:
        fingerprint, per_source = raw_fingerprint(project)
        files = raw_files(project)
        return dg.ObserveResult(
            data_version=dg.DataVersion(fingerprint),
            metadata={
                "files": dg.MetadataValue.int(len(files)),
                "bytes": dg.MetadataValue.int(sum(f.stat().st_size for f in files)),
                "files_by_source": dg.MetadataValue.json(per_source),
                "path": dg.MetadataValue.path(str(project.raw)),
            },
        )

    return raw_sources


def data_assets(project: Project, nodes: list[StageNode]) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    eager = dg.AutomationCondition.eager()
    return [
        stage_asset(project, n, eager) if n.runnable else declared_spec(n) for n in nodes if not n.is_training
    ]
