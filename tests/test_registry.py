"""Discovery from real installed distributions: built-ins, third parties, broken specs, conflicts, the off switch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_dist

from dlbench.core import registry
from dlbench.core.errors import DlbenchError

GOOD_SPEC = """
from dlbench import Plugin
PLUGIN = Plugin(name="{name}", summary="a third-party plugin", model="{module}_impl:Model",
                datamodule="{module}_impl:Data", data_kind="series", data_name="toy")
"""


def third_party(site, dist="acme-nets", version="2.1.0", name="acme", module="acme_spec"):
    write_dist(site, dist, version, {registry.PLUGINS: {name: f"{module}:PLUGIN"}},
               {f"{module}.py": GOOD_SPEC.format(name=name, module=module)})


def test_builtins_come_from_dlbench_own_entry_points():
    entry = registry.resolve(registry.PLUGINS, "lstm")
    assert entry.dist == "dlbench"
    assert entry.value == "dlbench_plugins.lstm:PLUGIN"
    assert entry.spec.model == "dlbench_plugins.lstm.model:LSTMForecaster"


def test_third_party_distribution_is_discovered_with_its_name_and_version(site):
    third_party(site)
    entry = registry.resolve(registry.PLUGINS, "acme")
    assert (entry.dist, entry.version) == ("acme-nets", "2.1.0")
    assert entry.location.startswith(str(site))
    assert registry.resolve(registry.PLUGINS, "lstm").dist == "dlbench"


def test_discovery_imports_specs_only(site):
    third_party(site)
    code = ("import sys; from dlbench.core import registry; registry.entries(registry.PLUGINS); "
            "print(sorted(m for m in sys.modules if m.startswith(('torch', 'lightning', 'acme_spec_impl', "
            "'dlbench_plugins.lstm.model')) or m == 'acme_spec'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['acme_spec']"


def test_broken_plugin_is_listed_with_reason_and_others_still_work(site):
    write_dist(site, "broken-dist", "0.3", {registry.PLUGINS: {"shaky": "shaky_spec:PLUGIN"}},
               {"shaky_spec.py": "import not_a_real_module_xyz\n"})
    third_party(site)
    by_name = {e.name: e for e in registry.entries(registry.PLUGINS)}
    assert by_name["shaky"].broken
    assert "ModuleNotFoundError" in by_name["shaky"].error and "not_a_real_module_xyz" in by_name["shaky"].error
    assert not by_name["acme"].broken and not by_name["lstm"].broken
    with pytest.raises(DlbenchError, match=r"broken-dist 0\.3.*not_a_real_module_xyz"):
        registry.resolve(registry.PLUGINS, "shaky")


@pytest.mark.parametrize("source, reason", [
    ("PLUGIN = 42\n", "is a int, not a dlbench.Plugin"),
    (GOOD_SPEC.format(name="other", module="x"), "spec says name='other'"),
    ("from dlbench import Plugin\nPLUGIN = Plugin(name='bad', summary='', model='no colon', datamodule='a:B', "
     "data_kind='series', data_name='x')\n", "must be a 'package.module:Class' string"),
    ("raise SystemExit(3)\n", "SystemExit"),
])
def test_invalid_specs_are_broken_not_fatal(site, source, reason, request):
    module = f"bad_spec_{request.node.callspec.id.__hash__() & 0xFFFFFF}"  # a fresh module name per case
    write_dist(site, "bad-dist", "1.0", {registry.PLUGINS: {"bad": f"{module}:PLUGIN"}}, {f"{module}.py": source})
    (entry,) = [e for e in registry.entries(registry.PLUGINS) if e.name == "bad"]
    assert entry.broken and reason in entry.error


def test_same_name_from_two_distributions_is_ambiguous_until_qualified(site):
    third_party(site, dist="acme-nets", name="lstm", module="acme_lstm")
    with pytest.raises(DlbenchError) as err:
        registry.resolve(registry.PLUGINS, "lstm")
    message = str(err.value)
    assert "acme-nets 2.1.0" in message and "dlbench 0.1.0" in message
    assert "'acme-nets:lstm'" in message and "'dlbench:lstm'" in message
    assert registry.resolve(registry.PLUGINS, "acme-nets:lstm").dist == "acme-nets"
    assert registry.resolve(registry.PLUGINS, "Acme_Nets:lstm").dist == "acme-nets"
    assert registry.resolve(registry.PLUGINS, "dlbench:lstm").dist == "dlbench"


def test_unknown_name_suggests_close_names():
    with pytest.raises(DlbenchError, match=r"unknown plugin 'lstn'.*Did you mean 'lstm'.*dlbench list"):
        registry.resolve(registry.PLUGINS, "lstn")


def test_disable_switch_loads_only_builtins(site, monkeypatch):
    third_party(site)
    monkeypatch.setenv(registry.DISABLE_ENV, "1")
    registry.entries.cache_clear()
    names = {e.name for e in registry.entries(registry.PLUGINS)}
    assert "lstm" in names and "acme" not in names
    with pytest.raises(DlbenchError, match=registry.DISABLE_ENV):
        registry.resolve(registry.PLUGINS, "acme")


def test_model_class_path_maps_back_to_its_plugin():
    entry = registry.entry_for_model_class("dlbench_plugins.lstm.model.LSTMForecaster")
    assert entry is not None and entry.name == "lstm"
    assert registry.entry_for_model_class("somewhere.Else") is None
