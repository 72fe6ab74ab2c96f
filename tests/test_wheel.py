"""The wheel ships the bundled resources, and one lookup finds them wherever diffrecon runs.

The slow test builds the wheel with ``pip wheel`` from a copy of the checkout, installs
it into a fresh virtual environment (the dependencies come from the running one through
a ``.pth`` file, as /work/mkwt.sh does), and runs the installed ``diffrecon`` from a
folder outside the checkout: ``info`` on a bundled sample, and the default priors and
presets found as package data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_resources_env_var_moves_every_lookup(tmp_path, monkeypatch):
    from diffrecon import bundled
    from diffrecon.reconstruct import default_prior_path
    from diffrecon.viewer import paths

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mri-brain.safetensors").write_bytes(b"")
    (tmp_path / "models" / "mri-brain.train.safetensors").write_bytes(b"")
    monkeypatch.setenv("DIFFRECON_RESOURCES", str(tmp_path))
    assert bundled.resources_dir() == tmp_path
    assert default_prior_path("mri") == tmp_path / "models" / "mri-brain.safetensors"
    assert paths.available_models() == [tmp_path / "models" / "mri-brain.safetensors"]
    assert paths.presets_file() == tmp_path / "presets" / "window_level.json"
    assert paths.default_sample().parent == tmp_path / "samples"


def test_checkout_finds_the_top_level_resources_folder(monkeypatch):
    from diffrecon import bundled

    monkeypatch.delenv("DIFFRECON_RESOURCES", raising=False)
    assert bundled.resources_dir().resolve() == ROOT / "resources"
    assert bundled.default_sample().is_file() and bundled.presets_file().is_file()


def _checkout_copy(dest: Path) -> Path:
    """The files git would check out (tracked and new, not ignored): no stale build/ folder."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not name.endswith(".train.safetensors"):  # 100 MB the wheel leaves out
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _deps_site_packages() -> Path:
    """The site-packages folder the running interpreter takes torch (and the rest) from."""
    import torch

    return Path(torch.__file__).resolve().parents[1]


@pytest.mark.slow  # about 55 s on a busy 2-core machine: a wheel build, a venv, three interpreter starts
def test_wheel_ships_priors_samples_and_presets(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to copy")
    src = _checkout_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("diffrecon-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("diffrecon/resources/models/mri-brain.safetensors", "diffrecon/resources/models/ct-head.safetensors",
                   "diffrecon/resources/presets/window_level.json",
                   "diffrecon/resources/samples/colin27-t1-slab.nii.gz",
                   "diffrecon/resources/samples/cranium-ct-slab/IM00001.dcm", "diffrecon/viewer/window.py"):
        assert needed in names, needed
    assert not [n for n in names if n.endswith(".train.safetensors")], "resume states are for training only"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_deps.pth").write_text(f"{_deps_site_packages()}\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]

    # Away from the checkout, and with no override: only the package data can be found.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFRECON_RESOURCES", "PYTHONPATH")}
    probe = (
        "import json, diffrecon; from diffrecon.bundled import default_sample, presets_file;"
        "from diffrecon.reconstruct import default_prior_path; from diffrecon.diffusion.checkpoint import load_prior;"
        "prior = load_prior(default_prior_path('mri'));"
        "print(json.dumps({'package': diffrecon.__file__, 'sample': str(default_sample()),"
        " 'prior': str(prior.path), 'modality': prior.modality, 'ct': str(default_prior_path('ct')),"
        " 'presets': str(presets_file())}))"
    )
    found = subprocess.run([python, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr[-2000:]
    where = json.loads(found.stdout)
    installed = site / "diffrecon"
    assert Path(where["package"]).parent == installed
    for key in ("sample", "prior", "ct", "presets"):
        assert Path(where[key]).is_file() and installed / "resources" in Path(where[key]).parents, (key, where)
    assert where["modality"] == "mri"

    info = subprocess.run([env_dir / "bin" / "diffrecon", "info", where["sample"]], cwd=elsewhere, env=env,
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "nifti" in info.stdout and "20 x 217 x 181" in info.stdout
