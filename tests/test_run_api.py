"""The run API (diffrecon.reconstruct): one request, a stream of typed events, for every front end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffrecon import modalities
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings
from diffrecon.reconstruct import (
    DIFFUSION,
    BaselineReady,
    DiffusionFrame,
    DiffusionSetup,
    MeasurementsReady,
    Reconstruction,
    ReconRequest,
    SliceDone,
    Summary,
    run_to_end,
)
from tiny_priors import SIZE, disks


def disk_volume(n: int = 3) -> Volume:
    img = disks(n, torch.Generator().manual_seed(3), False)[:, 0].numpy().astype(np.float32)
    return Volume(img, modality="MR")


def test_events_come_in_order_batch_by_batch(mri_prior):
    # from noise: 3 frames a batch (the blend with TV, which adds its hold-out run's: test_adaptation)
    options = modalities.get("mri").diffusion_options(steps=3, hot_start=False, blend_tv=False)
    request = ReconRequest(disk_volume(3), MeasurementSettings("mri"), ["zero-filled", "tv", DIFFUSION],
                           simulate=True, slices=[2, 0, 1], batch_size=2, frames=True,
                           diffusion=DiffusionSetup(mri_prior, options))
    events = list(Reconstruction(request))
    kinds = [type(e).__name__ for e in events]
    one_batch = ["MeasurementsReady", "BaselineReady", "BaselineReady"] + ["DiffusionFrame"] * 3 + ["SliceDone"]
    assert kinds == one_batch * 2 + ["Summary"]
    assert [list(e.slices) for e in events if isinstance(e, SliceDone)] == [[2, 0], [1]]  # the order asked for
    frames = [e for e in events if isinstance(e, DiffusionFrame)]
    assert [f.done_steps for f in frames] == list(range(1, 7)) and {f.total_steps for f in frames} == {6}
    run = events[-1].run
    assert list(run.slices) == [2, 0, 1]
    assert set(run.outcomes) == {"zero-filled", "tv", DIFFUSION}
    assert run.outcomes[DIFFUSION].variance is not None  # a symmetric pair: a per-pixel variance
    # Each SliceDone holds the same images the summary concatenates.
    done = [e for e in events if isinstance(e, SliceDone)]
    np.testing.assert_array_equal(np.concatenate([d.images["tv"] for d in done]), run.outcomes["tv"].volume)
    assert run.provenance["model"]["options"]["steps"] == 3 and run.provenance["slices"] == [2, 0, 1]
    baseline = next(e for e in events if isinstance(e, BaselineReady))
    assert baseline.image.shape == (2, SIZE, SIZE) and baseline.working.shape == (2, 1, SIZE, SIZE)


def test_run_to_end_is_the_stream_consumed(mri_prior):
    request = ReconRequest(disk_volume(2), MeasurementSettings("mri"), ["tv"], simulate=True, batch_size=1)
    progress: list[int] = []
    run = run_to_end(request, progress=progress.append)
    assert progress == [1, 1]
    streamed = [e for e in Reconstruction(request) if isinstance(e, Summary)][0].run
    assert run.outcomes["tv"].metrics == streamed.outcomes["tv"].metrics


def test_stopping_the_stream_ends_the_run_between_steps(mri_prior):
    calls = []
    model = mri_prior.model

    class Counting(torch.nn.Module):
        def forward(self, x, t):
            calls.append(1)
            return model(x, t)

    prior = type(mri_prior)(Counting(), mri_prior.schedule, mri_prior.normalisation, "mri", 2, {}, None)
    request = ReconRequest(disk_volume(1), MeasurementSettings("mri"), [DIFFUSION], simulate=True, frames=True,
                           diffusion=DiffusionSetup(prior, modalities.get("mri").diffusion_options(steps=10)))
    events = iter(Reconstruction(request))
    for event in events:
        if isinstance(event, DiffusionFrame) and event.done_steps == 2:
            break
    events.close()
    assert len(calls) == 2  # two network calls, nothing after the break
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_measurements_come_in_the_inputs_units():
    volume = disk_volume(2)
    event = next(iter(Reconstruction(ReconRequest(volume, MeasurementSettings("denoise"), [], simulate=True))))
    assert isinstance(event, MeasurementsReady)
    np.testing.assert_allclose(event.reference, volume.data, rtol=1e-5, atol=1e-6)  # the truth, back in its units


@pytest.mark.parametrize("text, expected", [(None, [0, 1, 2, 3, 4, 5]), ("2:4", [2, 3]), ("0:6:2", [0, 2, 4]),
                                            ("-1", [5]), ("3,1,4", [3, 1, 4]), (":2", [0, 1]),
                                            ("3,3", [3]), ("5,1,-1", [5, 1])])  # a slice named twice is one
def test_one_slices_parser_for_every_command(text, expected):
    from diffrecon.slices import slice_indices

    assert slice_indices(text, 6).tolist() == expected


@pytest.mark.parametrize("text, words", [("7", "outside"), ("4:2", "selects none"), ("a:b", "must look like"),
                                         ("1:2:3:4", "must look like"), ("0:4:0", "step cannot be zero")])
def test_bad_slices_are_one_sentence(text, words):
    from diffrecon.errors import SettingsError
    from diffrecon.slices import slice_indices

    with pytest.raises(SettingsError, match=words):
        slice_indices(text, 6)
