"""A vertical's own content as a plugin: task generators, general-text readers, sample prompts.

A plugin is a Python module named in params (`project.plugins: [my_vertical]`, or `module:attribute`)
that exposes `PLUGIN`, a VerticalPlugin. The project root is put on sys.path first, so a module in the
project folder needs no installing. The library's generic tasks are always there; a plugin adds its own
(a name may not be taken twice). The Chinese-law example (package `vertical_dag_china_law`) is registered
the same way.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .modeling.tasks import GENERIC_TASKS, USER_TASK, DocFields, TaskGenerator

# A general-text reader: the texts of a file it recognises, or None for a file that is not its format.
GeneralReader = Callable[[Path], "list[str] | None"]


class PluginError(ValueError):
    """A plugin that cannot be imported or is malformed; `spec` is the params entry that names it."""

    def __init__(self, message: str, spec: str) -> None:
        super().__init__(message)
        self.spec = spec


@dataclass(frozen=True)
class VerticalPlugin:
    name: str
    tasks: Mapping[str, TaskGenerator] = field(default_factory=dict)  # task name -> generator
    general_readers: Sequence[GeneralReader] = ()
    sample_prompts: Sequence[str] = ()  # answered by every model in the report when evaluate.sample_prompts is empty
    doc_fields: DocFields | None = None  # which meta fields are headings and groups (generic tasks, distractors)


@dataclass(frozen=True)
class Registry:
    """The built-in tasks plus every registered plugin's content."""

    plugins: tuple[VerticalPlugin, ...] = ()
    tasks: Mapping[str, TaskGenerator] = field(default_factory=lambda: dict(GENERIC_TASKS))
    general_readers: tuple[GeneralReader, ...] = ()
    sample_prompts: tuple[str, ...] = ()
    doc_fields: DocFields = field(default_factory=DocFields)

    @property
    def task_names(self) -> list[str]:
        """Every name finetune.task_weights may use: the user's files and each generator."""
        return [USER_TASK, *self.tasks]


def _load_one(spec: str) -> VerticalPlugin:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error inside the plugin is the plugin's, reported by name
        raise PluginError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}", spec) from None
    plugin = getattr(module, attr or "PLUGIN", None)
    if not isinstance(plugin, VerticalPlugin):
        raise PluginError(f"the module must expose {attr or 'PLUGIN'} = vertical_dag.plugins.VerticalPlugin(...), "
                          f"got {type(plugin).__name__}", spec)
    for name, make in plugin.tasks.items():
        if not callable(make):
            raise PluginError(f"task {name!r} is not callable", spec)
    return plugin


def load_registry(specs: Sequence[str], root: Path | None = None) -> Registry:
    """The registry of the plugins named in params; root (the project folder) goes on sys.path first."""
    if root is not None and str(Path(root).resolve()) not in sys.path:
        sys.path.insert(0, str(Path(root).resolve()))
    plugins = tuple(_load_one(s) for s in specs)
    tasks: dict[str, TaskGenerator] = dict(GENERIC_TASKS)
    for spec, plugin in zip(specs, plugins, strict=True):
        for name, make in plugin.tasks.items():
            if name in tasks or name == USER_TASK:
                raise PluginError(f"task name {name!r} is already taken (built-in or another plugin)", spec)
            tasks[name] = make
    fields = next((p.doc_fields for p in plugins if p.doc_fields is not None), DocFields())
    return Registry(plugins, tasks, tuple(r for p in plugins for r in p.general_readers),
                    tuple(s for p in plugins for s in p.sample_prompts), fields)
