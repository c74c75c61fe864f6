"""``dlbench info NAME``: what a plugin is, what data it takes, and every argument it accepts."""

from __future__ import annotations

import inspect
from typing import Any

import docstring_parser

from dlbench.core import registry
from dlbench.core.spec import baseline_label, import_ref


def arguments(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of every ``__init__`` argument of ``cls``, help taken from its docstring."""
    docs: dict[str, str] = {}
    for doc in (cls.__doc__, cls.__init__.__doc__):
        if doc:
            params = docstring_parser.parse(doc).params
            docs.update({p.arg_name: " ".join((p.description or "").split()) for p in params})
    rows = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation
        type_name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
        default = "required" if param.default is param.empty else repr(param.default)
        rows.append((name, str(type_name).replace("typing.", ""), default, docs.get(name, "")))
    return rows


def _format_args(prefix: str, rows: list[tuple[str, str, str, str]], linked: set[str]) -> list[str]:
    out = []
    for name, type_name, default, help_text in rows:
        note = " [set from the data]" if name in linked else ""
        out.append(f"  --{prefix}.{name:<18} {type_name:<14} default {default:<10} {help_text}{note}")
    return out


def describe(name: str) -> str:
    entry = registry.resolve(registry.PLUGINS, name)
    spec = entry.spec
    model_cls: Any = import_ref(spec.model)
    data_cls: Any = import_ref(spec.datamodule)
    linked = {a for a in spec.link_names if a in inspect.signature(model_cls.__init__).parameters}
    compatible = [e.name for e in registry.entries(registry.DATASETS)
                  if e.spec is not None and e.spec.data_kind == spec.data_kind]
    lines = [
        f"{spec.name}: {spec.summary}",
        f"  provided by   {entry.dist} {entry.version} ({entry.location})",
        f"  model         {spec.model}",
        f"  data          {spec.datamodule}",
        f"  data kind     {spec.data_kind}",
        f"  default data  {spec.data_name}: {'GENERATED, ' if spec.generated_data else ''}{spec.data_source}",
        f"  monitor       {spec.monitor} ({'lower' if spec.mode == 'min' else 'higher'} is better)",
        f"  datasets      {', '.join(compatible) or '(none registered)'}  (--data NAME)",
    ]
    if spec.score:
        label = baseline_label(spec, spec.baseline)
        against = f", against the baseline {spec.baseline} ({label})" if spec.baseline else ""
        lines.insert(-1, f"  score         {spec.score}{against}")
    if spec.trainer_defaults:
        defaults = " ".join(f"--trainer.{k} {v}" for k, v in spec.trainer_defaults.items())
        lines.append(f"  trainer       {defaults}")
    lines += ["", "Model arguments:", *_format_args("model", arguments(model_cls), linked)]
    lines += ["", "Data arguments:", *_format_args("data", arguments(data_cls), set())]
    lines += ["", "Example:", f"  dlbench fit --model {spec.name} --trainer.max_epochs 5",
              f"  dlbench fit --model {spec.name} --print_config > {spec.name}.yaml"]
    return "\n".join(lines)
