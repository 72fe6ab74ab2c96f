"""The modality registry (diffrecon.modalities) and the measurements it points at."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffrecon import modalities
from diffrecon.errors import SettingsError
from diffrecon.io.volume import KSpace, Volume
from diffrecon.measurements import MODALITIES, MeasurementSettings, ProblemSource
from tiny_priors import SIZE, disks


def test_measured_mri_does_not_change_the_callers_settings():
    """Measured MRI records the file's own mask in the source's settings, not the caller's."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, ::2] = True
    kspace = np.fft.fft2(disks(1, torch.Generator().manual_seed(4), False)[:, :1].numpy()).astype(np.complex64)
    volume = Volume(np.abs(np.fft.ifft2(kspace[:, 0])).astype(np.float32), modality="MR",
                    kspace=KSpace(kspace * mask, multicoil=False, mask=mask))
    settings = MeasurementSettings("mri", acceleration=8.0)
    source = ProblemSource(volume, settings)
    assert source.settings.mask == "from file" and source.settings.acceleration == pytest.approx(2.0)
    assert settings.mask == "random" and settings.acceleration == 8.0


@pytest.mark.parametrize("volume, task", [
    (Volume(np.zeros((1, 8, 8), np.float32), source_format="nifti"), ("mri", True)),
    (Volume(np.zeros((1, 8, 8), np.float32), modality="CT", units="HU"), ("ct", True)),
    (Volume(np.zeros((1, 8, 8), np.float32), modality="US"), ("ultrasound", False)),
    (Volume(np.zeros((1, 8, 8), np.float32)), ("denoise", True)),
])
def test_one_rule_suggests_a_scans_task(volume, task):
    assert modalities.suggest_task(volume) == task


def test_the_cli_and_the_viewer_suggest_the_same_task_for_a_nifti(cli, tmp_path):
    """A NIfTI image (no modality field) starts as MRI in both: the CLI then asks for --simulate."""
    import nibabel as nib

    path = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4)), path)
    result = cli("reconstruct", path, "--method", "tv", "--out", tmp_path / "o.npy")
    assert result.code == 2 and "--simulate" in result.err  # MRI from an image: simulate it


def test_the_registry_knows_every_modality():
    assert tuple(modalities.REGISTRY) == MODALITIES
    for m in modalities.REGISTRY.values():
        assert m.hot_start_baseline in m.baselines
        assert m.diffusion_options().sampler == "ddim"  # the defaults are valid options
        assert m.measurements is not None and m.input_name
    assert modalities.get("ct").diffusion_options(cg_iters=None).cg_iters == 10  # None keeps a default
    with pytest.raises(SettingsError, match="unknown modality"):
        modalities.get("pet")


def test_a_few_steps_start_from_the_baseline_unless_the_user_chose() -> None:
    """Under 5 steps from pure noise the result is the network's amplified error (-5 dB on a
    real slice): such runs hot-start from TV, recorded in the options; an explicit choice wins."""
    from diffrecon.modalities import MIN_STEPS_FROM_NOISE

    for name in ("mri", "ct"):
        assert modalities.get(name).diffusion_options(steps=2).hot_start
        assert not modalities.get(name).diffusion_options(steps=2, hot_start=False).hot_start
        assert not modalities.get(name).diffusion_options(steps=MIN_STEPS_FROM_NOISE).hot_start
    assert not modalities.get("denoise").diffusion_options(steps=1).hot_start  # starts at the noise level


def test_ct_takes_more_steps_on_noiseless_views_than_at_low_dose() -> None:
    """CT's steps depend on its task (measured on the validation slab): 50 for noiseless sparse
    views, 25 with dose noise, 25 with uncertainty (where σ was calibrated); the modality's own
    options (no task) and an explicit choice are unchanged."""
    from diffrecon.modalities import CALIBRATED_STEPS, CT_SPARSE_VIEW_STEPS

    ct = modalities.get("ct")
    noiseless, low_dose = MeasurementSettings("ct", views=60), MeasurementSettings("ct", dose=0.25)
    assert ct.diffusion_options(noiseless).steps == CT_SPARSE_VIEW_STEPS != CALIBRATED_STEPS
    assert ct.diffusion_options(MeasurementSettings("ct", views=120)).steps == CT_SPARSE_VIEW_STEPS
    assert ct.diffusion_options(low_dose).steps == ct.diffusion_options().steps == CALIBRATED_STEPS
    assert ct.diffusion_options(noiseless, samples=4).steps == CALIBRATED_STEPS
    assert ct.diffusion_options(noiseless, steps=10).steps == 10
    # other modalities have no per-task defaults: the task changes nothing
    mri = modalities.get("mri")
    assert mri.diffusion_options(MeasurementSettings("mri", acceleration=8.0)) == mri.diffusion_options()
