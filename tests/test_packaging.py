"""The package layout the wheel is built from matches the folders on disk."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(cfg["tool"]["setuptools"]["packages"])


def _packages_on_disk() -> set[str]:
    found = set()
    for top, name in (("engine", "diffrecon"), ("viewer", "diffrecon.viewer")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_every_package_folder_is_declared_in_pyproject():
    missing = _packages_on_disk() - _declared_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def _data_packages() -> set[str]:
    """Packages of data only (no __init__.py), mapped to a folder: the bundled resources."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name for name, folder in cfg["package-dir"].items() if folder not in ("engine", "viewer")}


def test_every_declared_package_exists():
    assert not (_declared_packages() - _packages_on_disk() - _data_packages())
    for name in _data_packages():
        cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
        assert (ROOT / cfg["package-dir"][name]).is_dir() and cfg["package-data"][name]


def test_engine_never_imports_qt():
    """The engine is a headless library: Qt belongs to viewer/ only."""
    offenders = []
    for py in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n.split(".")[0] in {"PySide6", "pyqtgraph", "qasync", "shiboken6"} for n in names):
                offenders.append(str(py.relative_to(ROOT)))
    assert not offenders, offenders


def test_cli_help_lists_registered_subcommands(cli):
    from diffrecon.cli.main import SUBCOMMANDS

    result = cli("--help")
    assert result.code == 0
    for name in SUBCOMMANDS:
        assert name in result.out
    for name in SUBCOMMANDS:
        sub = cli(name, "--help")
        assert sub.code == 0 and "usage: diffrecon " + name in sub.out


def test_supported_pythons_agree_between_pyproject_and_setup_script():
    """requires-python and packaging/setup.sh's check accept 3.11-3.13 and nothing else."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if spec.contains(f"{v}.0")] == ["3.11", "3.12", "3.13"]
    script = (ROOT / "packaging" / "setup.sh").read_text()
    check = script.split("supported='", 1)[1].split("'", 1)[0]
    for minor, accepted in ((10, False), (11, True), (12, True), (13, True), (14, False)):
        patched = check.replace("sys.version_info[:2]", f"(3, {minor})").replace("sys.exit(", "raise SystemExit(")
        try:
            exec(patched, {})
            code = 0
        except SystemExit as exc:
            code = int(bool(exc.code))
        assert (code == 0) == accepted, minor


def test_a_lent_gpu_still_receives_the_tree_with_the_packed_training_data():
    """A lent GPU machine takes at most 64 MiB of working tree (tracked files plus the
    carried .device/ pack, about 12.5 MiB): `packaging/train-on-device.sh` is refused past
    that. This fails when the repository grows too far (ship priors with
    packaging/ship-prior.sh, as float16; figures are 256-colour PNGs)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    names = [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]
    tracked = sum((ROOT / name).stat().st_size for name in names)
    packed_allowance = 13 * 2**20
    assert tracked + packed_allowance <= 64 * 2**20, f"tracked files: {tracked / 2**20:.1f} MiB"
    priors = [name for name in names if name.startswith("resources/models/") and name.endswith(".safetensors")]
    assert len(priors) >= 7
    for name in priors:
        header = (ROOT / name).read_bytes()[:200_000]
        assert b'"F16"' in header and b'"F32"' not in header, f"{name} is not stored as float16"
