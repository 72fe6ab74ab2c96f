"""Process settings for CPU inference (diffrecon.runtime)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from diffrecon.errors import DiffreconError
from diffrecon.runtime import configure_threads

# A prior's forward pass allocates and frees its activations: count the page faults of
# three forwards after two warm-ups, with glibc's defaults and with the memory kept.
_FAULTS = """
import resource, sys, torch
from diffrecon.runtime import keep_freed_memory
from diffrecon.diffusion.unet import UNet, autocast_context
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
net = UNet(2, width=16, channel_mult=(1, 2), res_blocks=1, attention_heads=2).eval()
net = net.to(memory_format=torch.channels_last)
x = torch.randn(2, 2, 160, 160).contiguous(memory_format=torch.channels_last)
t = torch.full((2,), 0.5)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with torch.inference_mode(), autocast_context(True):
    net(x, t); net(x, t)
    before = faults()
    for _ in range(3):
        net(x, t)
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_kept_memory_stops_the_page_faults_of_every_fresh_activation():
    def faults(mode: str) -> int:
        # glibc raises its mmap threshold to the size of the first mmapped block freed, so how many
        # activations get fresh pages depended on the order of the warm-up's frees (0 faults in some
        # runs). The default arm pins the threshold at glibc's initial 128 KiB, which turns that off:
        # every activation above it is mapped fresh, as on a process whose threshold has not grown.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"} if mode == "default" else None
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                             env=env)
        return int(out.stdout.strip())

    default, kept = faults("default"), faults("keep")
    assert default > 1000  # ~23,000 fresh 4 KB pages per forward here (69,200 over the three)
    assert kept < default / 4  # a few stragglers (lazy thread-pool buffers) under load


def test_thread_setting_is_checked():
    import torch

    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(DiffreconError, match="at least 1"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)
