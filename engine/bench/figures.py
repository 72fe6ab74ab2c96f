"""The bench's pictures: one image grid per chosen slice, and the steps-ablation plot.

matplotlib draws them headless (Agg backend): labelled tiles, one window for all
images of a grid, one scale for all error maps, so a glance compares like with like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .runner import INPUT, SliceImages

#: (level, width) the CT grids use: the brain window head-CT readers use (W 80 / L 40)
CT_WINDOW = (40.0, 80.0)
BACKGROUND = "#161616"
TEXT = "#e8e8e8"


def headless_pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed): every figure diffrecon draws."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` as a 256-colour PNG (its folder made if missing) and free it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig)
    headless_pyplot().close(fig)
    buffer.seek(0)
    return write_palette_png(Image.open(buffer), path)


def write_palette_png(image, path: Path) -> Path:
    """Save a PIL image as a 256-colour PNG. Figures and viewer screenshots hold about 1,100
    colours; median cut refined by k-means keeps them within a few levels (mean error 0.25
    of 255) at less than half the bytes of RGBA, which keeps the repository, and the working
    tree a lent GPU receives (64 MiB), small."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = image.convert("RGB")
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, kmeans=3, dither=Image.Dither.NONE).save(
        path, format="PNG", optimize=True)
    return path


def display_range(images: SliceImages) -> tuple[float, float]:
    """The window every image tile shares: CT's brain window, else 0 to the truth's 99.5th percentile."""
    if images.units == "HU":
        level, width = CT_WINDOW
        return level - width / 2, level + width / 2
    return 0.0, float(np.percentile(images.ground_truth, 99.5)) or 1.0


def _tile_title(label: str, metrics: dict[str, float] | None) -> str:
    if not metrics or "psnr" not in metrics:
        return label
    return f"{label}\n{metrics['psnr']:.2f} dB · SSIM {metrics.get('ssim', float('nan')):.3f}"


def save_grid(images: SliceImages, path: Path, *, tile_inches: float = 2.4) -> Path:
    """Top row: truth, input, every method (same window); bottom row: the diffusion std and
    every column's |error| against the truth (same scale)."""
    plt = headless_pyplot()
    columns = list(images.images)  # the input (if shown) first, then the methods
    n = len(columns) + 1
    low, high = display_range(images)
    errors = {k: np.abs(images.images[k] - images.ground_truth) for k in columns}
    method_errors = [errors[k] for k in columns if k != INPUT] or list(errors.values())
    err_max = float(np.percentile(np.concatenate([e.ravel() for e in method_errors]), 99.5)) or 1.0
    fig, axes = plt.subplots(2, n, figsize=(tile_inches * n, tile_inches * 2 + 0.9), facecolor=BACKGROUND,
                             squeeze=False)
    unit = f" {images.units}" if images.units and images.units not in ("arbitrary", "a.u.") else ""
    for ax in axes.ravel():
        ax.set_facecolor(BACKGROUND)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].imshow(images.ground_truth, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    axes[0, 0].set_title("ground truth", color=TEXT, fontsize=9)
    for j, key in enumerate(columns, start=1):
        axes[0, j].imshow(images.images[key], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axes[0, j].set_title(_tile_title(key, images.metrics.get(key)), color=TEXT, fontsize=9)
        axes[1, j].imshow(errors[key], cmap="magma", vmin=0, vmax=err_max, interpolation="nearest")
        axes[1, j].set_title(f"|error| {key}", color=TEXT, fontsize=8)
    if images.std is not None:
        std_max = float(np.percentile(images.std, 99.5)) or 1.0
        im = axes[1, 0].imshow(images.std, cmap="viridis", vmin=0, vmax=std_max, interpolation="nearest")
        axes[1, 0].set_title(f"σ {images.std_method}", color=TEXT, fontsize=8)
        bar = fig.colorbar(im, ax=axes[1, 0], fraction=0.046, pad=0.02)
        bar.ax.tick_params(colors=TEXT, labelsize=7)
    else:
        axes[1, 0].text(0.5, 0.5, "no variance\n(one sample)", color=TEXT, ha="center", va="center",
                        transform=axes[1, 0].transAxes, fontsize=8)
    fig.suptitle(f"{images.task} · {images.data} slice {images.slice} · window {low:g}–{high:g}{unit} · "
                 f"|error| 0–{err_max:.3g}{unit}", color=TEXT, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path, facecolor=BACKGROUND)


def save_ablation_plot(table: list[dict[str, Any]], path: Path, *, title: str,
                       reference: tuple[str, float] | None = None) -> Path:
    """PSNR (left axis) and seconds per slice (right axis) against sampling steps (log scale)."""
    plt = headless_pyplot()
    steps = [r["steps"] for r in table]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.errorbar(steps, [r["psnr"] for r in table], yerr=[r["psnr_sd"] for r in table], marker="o",
                color="#1f77b4", capsize=3, label="PSNR (mean ± SD)")
    if reference is not None:
        ax.axhline(reference[1], color="#7f7f7f", linestyle="--", label=f"{reference[0]} (best classical)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(steps)
    ax.set_xticklabels([str(s) for s in steps])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("PSNR (dB)", color="#1f77b4")
    twin = ax.twinx()
    twin.plot(steps, [r["seconds_per_slice"] for r in table], marker="s", color="#d62728", label="seconds/slice")
    twin.set_yscale("log")
    twin.set_ylabel("seconds per slice", color="#d62728")
    lines = ax.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def save_calibration_plot(per_method: dict[str, dict[str, Any]], path: Path, *, title: str) -> Path:
    """Nominal against observed coverage of ±z(p)σ intervals over the object's pixels, one line
    per diffusion method (mean over slices); a calibrated σ lies on the diagonal."""
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="#7f7f7f", linestyle="--", label="calibrated")
    for method, entry in per_method.items():
        scale = entry.get("scale")
        label = f"{method} (σ x{scale:.2f})" if scale else f"{method} (σ uncalibrated)"
        ax.plot(entry["nominal"], entry["observed"], marker="o", label=label)
    ax.axvline(0.95, color="#d62728", alpha=0.3)
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("nominal coverage (Gaussian ±z σ)")
    ax.set_ylabel("observed coverage (object pixels)")
    ax.set_title(f"σ calibration · {title}", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
