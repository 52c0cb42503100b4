"""One asset per pipeline stage. A runnable stage's asset runs that DVC stage alone; a declared one is a spec.

Materializing = `dvc repro --single-item STAGE` (DVC skips it when `dvc status --json` finds nothing
changed) inside a Dagster Pipes session: the stage reports its metrics as metadata through Pipes; a skipped
stage reports nothing, and its recorded metrics.json is shown instead. The output hash DVC recorded
(`dvc ls --json --show-hash`) is the data version, and the gate JSON gives the blocking check results. When the gate fails, DVC does not record the outputs; the asset reports the
failed checks, which fails the step and keeps every downstream asset from running.
"""

# no `from __future__ import annotations`: Dagster reads the context/resource type hints at runtime
import dagster as dg

from ..pipes import MESSAGE_KIND
from ..project import Project
from .checks import check_results, check_specs, read_gate
from .metadata import read_metrics, stage_metadata
from .pipeline import StageNode, output_hash
from .resources import DVC_POOL, DvcResource


def reported_metrics(messages: list, stage: str) -> dict | None:
    """The metrics the stage sent over Pipes (the last report of this stage), or None when it did not run."""
    found = [
        m["metrics"]
        for m in messages
        if isinstance(m, dict) and m.get("kind") == MESSAGE_KIND and m.get("stage") == stage
    ]
    return found[-1] if found and isinstance(found[-1], dict) else None


def _attrs(node: StageNode) -> dict:
    data = not node.is_training
    return dict(
        group_name="data" if data else "models" if node.name != "evaluate" else "evaluation",
        owners=["team:data"] if data else ["team:ml"],
        tags={"layer": "data" if data else "training", "dvc_stage": node.name},
        kinds={"dvc", "parquet"} if data else {"dvc", "pytorch"},
    )


def declared_spec(node: StageNode) -> dg.AssetSpec:
    """A stage that dvc.yaml does not have yet: shown in the graph, not materializable."""
    return dg.AssetSpec(node.asset, deps=list(node.deps), description=node.description, **_attrs(node))


def stage_asset(
    project: Project, node: StageNode, automation_condition: dg.AutomationCondition | None
) -> dg.AssetsDefinition:
    spec = dg.AssetSpec(
        node.asset,
        deps=list(node.deps),
        description=node.description,
        code_version=node.code_version,
        automation_condition=automation_condition,
        skippable=True,
        **_attrs(node),
    )

    @dg.multi_asset(
        name=node.asset,
        specs=[spec],
        check_specs=check_specs(node),
        can_subset=True,
        pool=DVC_POOL,
        op_tags={"dvc_stage": node.name},
    )
    def _materialize(context: dg.AssetExecutionContext, dvc: DvcResource):
        wanted = {k.name for k in context.selected_asset_check_keys}
        if node.asset not in {k.to_user_string() for k in context.selected_asset_keys}:
            # only the checks were selected: re-read the last gate result, run nothing
            yield from check_results(node, read_gate(project, node.name), wanted)
            return
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesTempFileContextInjector(),
            message_reader=dg.PipesTempFileMessageReader(),
        ) as session:  # the stage, run by `dvc repro`, reports its metrics through Pipes (vertical_dag.pipes)
            run = dvc.repro(node.name, context.log, extra_env=session.get_bootstrap_env_vars())
        reported = reported_metrics(session.get_custom_messages(), node.name)
        gate = read_gate(project, node.name, since=None if run.skipped else run.started)
        results = check_results(node, gate, wanted)
        gate_failed = any(not r.passed for r in results)
        if run.returncode != 0 and not gate_failed:  # a crash, or a gate failure no declared check names
            raise dg.Failure(
                description=f"`dvc repro --single-item {node.name}` exited {run.returncode}: "
                + next((line for line in reversed(run.tail) if line.startswith("ERROR")), "see the log"),
                metadata={"log_tail": dg.MetadataValue.md("```\n" + "\n".join(run.tail[-30:]) + "\n```")},
            )
        # a skipped stage did not run, so it reported nothing: its recorded metrics.json is what DVC kept
        metrics = reported if reported is not None else read_metrics(project, node.name)
        metadata = stage_metadata(project, node, metrics, run)
        metadata["metrics_from"] = "dagster-pipes" if reported is not None else "metrics.json"
        # DVC records outputs only when the stage (and its gate) succeeded; otherwise there is no version
        version = output_hash(project, node) if run.returncode == 0 else None
        metadata["dvc_recorded"] = run.returncode == 0
        if gate is not None and gate.get("skipped"):
            metadata["gate_skipped"] = str(gate["skipped"])
        if gate_failed:
            context.log.error(f"quality gate of stage {node.name} failed; downstream assets will not run")
        yield dg.MaterializeResult(
            asset_key=node.asset,
            metadata=metadata,
            check_results=results,
            data_version=dg.DataVersion(version) if version else None,
        )

    return _materialize
