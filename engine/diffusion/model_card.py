"""A prior's model card, ``NAME.md``: Markdown written from the prior file's metadata and the
run's validation log at every checkpoint (:func:`write_model_card`). The file format itself is
:mod:`.checkpoint`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import PriorPaths


RESULTS_HEADING = "## Reconstruction results"


def _arithmetic(cfg: dict[str, Any], training: dict[str, Any]) -> str:
    """What the card says about bf16: what ran (recorded since 2026-12-02), else what was asked."""
    if "bf16" not in training:
        return f"bf16 autocast {'asked for' if cfg['autocast'] else 'off'}"
    if training["bf16"]:
        return "bf16 autocast"
    return "float32" + (" (bf16 autocast asked for; this device emulates bf16, so it was not used)"
                        if cfg["autocast"] else "")


def write_model_card(paths: PriorPaths, metadata: dict[str, Any], parameter_count: int) -> Path:
    """(Re)write ``NAME.md`` from the run's metadata and validation log.

    Everything from the ``## Reconstruction results`` heading on is kept as it is, so
    results that later work records there survive every checkpoint.
    """
    training = metadata["training"]
    cfg = training["config"]
    log = [json.loads(line) for line in paths.log.read_text().splitlines() if line.strip()] if paths.log.exists() else []
    hours = training["elapsed_s"] / 3600
    lines = [
        f"# Prior `{paths.name}`",
        "",
        f"A diffusion prior for **{metadata['modality']}** images: an epsilon-predicting UNet "
        f"({parameter_count / 1e6:.2f} M parameters, {cfg['channels']} channel(s): "
        f"{'complex as real/imaginary' if cfg['channels'] == 2 else 'real'}). "
        f"Load it with `diffrecon.diffusion.load_prior('{paths.weights.name}')`; the file alone rebuilds the "
        "network, schedule and intensity normalisation.",
        "",
        "## Data and provenance",
        "",
        "| scan | provenance | held out (never trained on) |",
        "|---|---|---|",
        *[f"| {s['name']} | {s['provenance']} | {s['held_out']} |" for s in training["sources"]],
        "",
        f"Training crops: {cfg['size']}x{cfg['size']} from axial, coronal and sagittal slices outside the "
        "held-out slab, background crops mostly skipped, random flips and intensity scaling"
        + (", random smooth phase (complex augmentation)." if cfg["channels"] == 2 else "."),
        f"Intensity normalisation: `{metadata['normalisation']['rule']}` "
        f"({json.dumps({k: v for k, v in metadata['normalisation'].items() if k != 'rule'})}).",
        "",
        "## Recipe",
        "",
        f"- UNet: width {cfg['width']}, channel multipliers {cfg['channel_mult']}, {cfg['res_blocks']} residual "
        f"blocks per level, self-attention ({cfg['attention_heads']} heads) at the lowest resolution only",
        f"- Noise schedule: {metadata['schedule']['kind']}, T = {metadata['schedule']['steps']}; " + (
            "trained at continuous t ~ U[1/T, 1]" if not metadata.get("noise_range") else
            "trained **only at the noise levels sqrt((1 - abar) / abar) from {} to {}** (a denoising prior: it "
            "denoises from the noise level and cannot reconstruct)".format(*metadata["noise_range"])),
        f"- AdamW, peak learning rate {cfg['lr']:g}, warm-up "
        f"{min(cfg['warmup_steps'], (training['horizon'] or 10**9) // 10)} steps, cosine decay to 10% "
        f"over {training['horizon']} steps; batch {cfg['batch']}; gradient clipping {cfg['grad_clip']:g}; "
        f"EMA {cfg['ema_decay']} (shipped weights)",
        (f"- Loss: MSE to the noise prediction of the teacher `{metadata['distilled_from']['path']}` (step "
         f"{metadata['distilled_from']['step']}; distillation) + {cfg['freq_loss']:g} x abar(t)-weighted L1 on "
         "|FFT| of the x0 estimate" if metadata.get("distilled_from") else
         f"- Loss: noise MSE + {cfg['freq_loss']:g} x abar(t)-weighted L1 on |FFT| of the x0 estimate"),
        f"- Arithmetic: {_arithmetic(cfg, training)}; seed {cfg['seed']}",
        "",
        "## Training run",
        "",
        f"- Steps: {training['steps']} ({training['steps'] * cfg['batch']} crops) in {hours:.2f} h on "
        + ("a CUDA GPU" if str(cfg.get("device", "cpu")).startswith("cuda") else
           f"a CPU with {training['threads']} torch thread(s)"),
    ]
    if log:
        first, best, last = log[0], min(log, key=lambda r: r["val_loss_ema"]), log[-1]
        lines += [
            "- Validation (noise MSE on fixed held-out crops, fixed t and noise; EMA weights): "
            f"{first['val_loss_ema']:.4f} at step {first['step']}, best {best['val_loss_ema']:.4f} at step "
            f"{best['step']}, last {last['val_loss_ema']:.4f} at step {last['step']} "
            f"(by t: {last.get('val_loss_ema_by_t')})",
            f"- Full curve: `{paths.log.name}` (one JSON record per validation)",
        ]
    lines += [""]
    results = f"{RESULTS_HEADING}\n\n_Not measured yet: reconstruction-task results (PSNR/SSIM per task) go here._\n"
    if paths.card.exists():
        old = paths.card.read_text()
        if RESULTS_HEADING in old:
            results = old[old.index(RESULTS_HEADING):]
    paths.card.parent.mkdir(parents=True, exist_ok=True)
    paths.card.write_text("\n".join(lines) + "\n" + results)
    return paths.card
