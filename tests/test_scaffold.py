"""``dlbench new-plugin``: the generated package installs, is listed, and passes its own tests as written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import dlbench

from dlbench.cli import main as cli_main
from dlbench.core import registry
from dlbench.core.errors import DlbenchError
from dlbench.tools.scaffold import LAYOUT, create

NAME = "scaffold_probe"  # not a name any other test or plugin uses: the package is installed into the shared venv


def test_generated_package_installs_lists_and_passes_its_own_tests(tmp_path):
    package = create(NAME, tmp_path / "pkg")
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == sorted(
        path.format(package=f"dlbench_{NAME}", name=NAME) for path in LAYOUT)
    pip = [sys.executable, "-m", "pip"]
    install = subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(package)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    try:
        listed = dlbench("list", cwd=tmp_path)
        (row,) = [line for line in listed.stdout.splitlines() if line.startswith(f"{NAME} ")]
        assert "dlbench-scaffold-probe 0.1.0" in row and "wine" in row
        spec_only = subprocess.run([sys.executable, "-c", f"import sys, dlbench_{NAME}; print(sorted(m for m in "
                                    "sys.modules if m.split('.')[0] in ('torch', 'lightning')))"],
                                   capture_output=True, text=True, cwd=tmp_path)
        assert spec_only.stdout.strip() == "[]", spec_only.stderr
        env = {k: v for k, v in os.environ.items() if k != "DLBENCH_LOG_DIR"}
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rp", "-p", "no:cacheprovider", "tests"],
                               cwd=package, env=env, capture_output=True, text=True, timeout=900)
        assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
        assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-1000:]
        for check in ("smoke", "checkpoint_round_trip", "learns", "predict"):  # dlbench.testing's contract checks
            assert f"PASSED tests/test_{NAME}.py::test_{check}\n" in tests.stdout, tests.stdout[-1000:]
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", f"dlbench-{NAME.replace('_', '-')}"], capture_output=True)
    assert f"{NAME} " not in dlbench("list", cwd=tmp_path).stdout


def test_generated_code_is_ruff_clean(tmp_path):
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    package = create("lint_probe", tmp_path / "pkg")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=package, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_default_directory_and_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["new-plugin", "dir_probe"]) == 0
    out = capsys.readouterr().out
    assert "pip install -e dlbench-dir-probe" in out and "dlbench fit --model dir_probe" in out
    spec = (tmp_path / "dlbench-dir-probe" / "src" / "dlbench_dir_probe" / "__init__.py").read_text()
    assert 'name="dir_probe"' in spec and 'model="dlbench_dir_probe.model:DirProbeClassifier"' in spec
    pyproject = (tmp_path / "dlbench-dir-probe" / "pyproject.toml").read_text()
    assert 'dir_probe = "dlbench_dir_probe:PLUGIN"' in pyproject and 'name = "dlbench-dir-probe"' in pyproject


@pytest.mark.parametrize(("name", "hint"), [
    ("My-Net", "e.g. 'my_net'"),
    ("2fast", "e.g. 'my_2fast'"),
    ("net!", "e.g. 'net'"),
    ("", "starting with a letter"),
])
def test_bad_names_are_refused(tmp_path, name, hint):
    with pytest.raises(DlbenchError, match="is not allowed") as err:
        create(name, tmp_path / "pkg")
    assert hint in str(err.value)
    assert not (tmp_path / "pkg").exists()


def test_registered_name_is_refused(tmp_path):
    taken = registry.entries(registry.PLUGINS)[0]
    with pytest.raises(DlbenchError, match=f"already registered by {taken.dist}"):
        create(taken.name, tmp_path / "pkg")


def test_existing_directory_is_never_overwritten(tmp_path, capsys):
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    assert cli_main(["new-plugin", "net_probe", str(target)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create("net_probe", empty) == empty and (empty / "pyproject.toml").is_file()
    with pytest.raises(DlbenchError, match="is a file"):
        create("net_probe", target / "notes.txt")
