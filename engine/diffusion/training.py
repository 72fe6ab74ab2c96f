"""Training a prior: denoising score matching on random crops, with checkpoints that resume exactly.

One step: draw a batch of crops (:class:`.data.CropSampler`), a continuous time
``t ~ U[1/T, 1]`` and Gaussian noise per crop, make ``x_t``, and regress the noise
(MSE). Optionally an L1 loss on the magnitude spectrum of the Tweedie estimate
``x0_hat`` is added (``freq_loss`` weight), itself weighted by ``abar(t)`` so that
nearly-pure-noise steps, whose ``x0_hat`` means little, do not dominate.

**Distillation** (``teacher``): a smaller, faster student regresses a trained prior's
noise prediction at the same ``(x_t, t)`` instead of the drawn noise. The teacher's
output is the conditional mean the student would otherwise have to learn from single
noisy draws, so the student's target has far less variance and it learns faster; the
student then runs where the teacher is too slow (the live viewer on a plain CPU).

AdamW with linear warm-up and cosine decay to 10% of the peak rate over ``total_steps``
(the *horizon*; with only a time budget, it is set from the speed of the first steps so
the decay ends about when the time runs out, and the rate stays at 10% after it). An
EMA of the weights (0.999, warmed up as ``(1 + n) / (10 + n)``) is what ships. The run
stops at ``total_steps`` or when ``max_minutes`` have passed, and then saves; it also
saves every ``checkpoint_minutes``. A resumed run keeps its horizon unless given a new
``total_steps``. Resuming restores weights, EMA, optimizer, step, horizon and
all RNG states, so ``5 + 5`` steps equal ``10`` bit for bit (with float32 moments).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import DiffreconError
from ..runtime import bf16_is_fast
from .checkpoint import (
    PriorPaths,
    load_ema_weights,
    load_real_channel_into,
    load_training_state,
    read_metadata,
    save_prior,
    save_training_state,
)
from .augment import Augmentation
from .data import CropSampler, Normalisation, TrainingSource, validation_crops
from .model_card import write_model_card
from .schedules import NoiseSchedule, make_schedule
from .unet import UNet, autocast_context


@dataclass
class TrainConfig:
    modality: str = "mri"  # mri | ct | ultrasound
    channels: int = 2  # 2: complex MRI as real/imag; 1: real images
    size: int = 64  # crop size
    batch: int = 16
    lr: float = 2e-4
    warmup_steps: int = 500  # capped at a tenth of the horizon
    total_steps: int | None = None  # LR horizon and step limit; None: set from the time budget
    max_minutes: float | None = None  # time budget for this invocation
    schedule: str = "linear"
    width: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2, 3)
    res_blocks: int = 2
    attention_heads: int = 4
    freq_loss: float = 0.1
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    seed: int = 0
    autocast: bool = True  # bf16 on CPU: ~2-3x faster steps here
    val_every: int = 250
    val_count: int = 32
    checkpoint_minutes: float = 10.0
    exact_moments: bool = False  # float32 AdamW moments in the train file (bit-exact resume, 2x larger)
    teacher: str | None = None  # distil from this prior (.safetensors) instead of regressing the noise
    init_from: str | None = None  # start from this prior's (EMA) weights with a fresh optimizer
    prune: float | None = None  # with init_from: keep this fraction of its channels (.pruning) first
    time_width: int | None = None  # a pruned network's time embedding width (its parent's width)
    augment: tuple[str, ...] = ()  # generalising augmentations (see .augment.AUGMENTATION_NAMES)
    sizes: tuple[int, ...] = ()  # extra crop sizes drawn besides `size` (same pixels per batch)
    device: str = "cpu"  # where the network trains; crops and random draws stay on the CPU (same on any device)
    data: list[str] = field(default_factory=list)  # what was trained on, for the card
    # a conditional prior (classifier-free guidance, see .conditioning): the task whose degraded
    # image is its extra input, and the condition dropout rate that keeps it unconditional too
    conditional: str | None = None
    p_uncond: float = 0.15
    # a denoising prior: train only the noise levels sqrt((1 - abar) / abar) in [lo, hi] (model
    # units) that a noise-matched start enters at, instead of every t (they are t < 0.15 of a
    # linear schedule, so a full prior spends about a seventh of its steps there)
    noise_range: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["augment"] = list(self.augment)
        d["sizes"] = list(self.sizes)
        d["noise_range"] = list(self.noise_range) if self.noise_range else None
        return d


def trained_times(schedule: NoiseSchedule, noise_range: tuple[float, float] | None) -> tuple[float, float]:
    """The continuous times ``t`` a run draws from: all of ``[1/T, 1]``, or those whose noise
    level ``sqrt((1 - abar) / abar)`` lies in ``noise_range``."""
    if noise_range is None:
        return 1 / schedule.steps, 1.0
    lo, hi = noise_range
    if not 0 < lo < hi:
        raise DiffreconError(f"a noise range is two levels 0 < low < high; got {lo:g}, {hi:g}")
    ts = torch.linspace(1 / schedule.steps, 1.0, 4096, dtype=torch.float64)
    level = torch.expm1(-schedule.log_alpha_bar(ts).double()).sqrt()  # (1 - abar) / abar = 1/abar - 1
    inside = ts[(level >= lo) & (level <= hi)]
    if len(inside) < 2:
        raise DiffreconError(f"no training time of this schedule has a noise level in [{lo:g}, {hi:g}]")
    return float(inside[0]), float(inside[-1])


def learning_rate(step: int, peak: float, warmup: int, horizon: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``peak / 10`` at ``horizon`` (flat after)."""
    warmup = max(1, min(warmup, horizon // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def magnitude_spectrum_l1(x0_hat: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``weight * L1(|FFT x0_hat| - |FFT x0|)``; 2 channels are one complex image."""
    def spectrum(x: torch.Tensor) -> torch.Tensor:
        img = torch.complex(x[:, 0], x[:, 1]) if x.shape[1] == 2 else x[:, 0]
        return torch.fft.fft2(img, norm="ortho").abs()

    per_sample = (spectrum(x0_hat) - spectrum(x0)).abs().mean(dim=(-2, -1))
    return (weight * per_sample).mean()


class Trainer:
    """Owns the network, its EMA, the optimizer and every RNG of one training run."""

    def __init__(self, config: TrainConfig, sources: list[TrainingSource], out: str | Path, *,
                 condition_network: tuple[torch.nn.Module, dict[str, Any]] | None = None):
        """``condition_network``: for ``conditional="blind-spot"``, the frozen network whose output
        on a crop is that crop's condition, and what the prior's metadata records about it."""
        self.config = config
        self.condition_network = condition_network
        self.sources = sources
        self.paths = PriorPaths.for_weights(out)
        self.schedule: NoiseSchedule = make_schedule(config.schedule)
        self.t_range = trained_times(self.schedule, config.noise_range)
        self.normalisation = Normalisation.for_modality(config.modality)
        self.conditioning = None
        if config.conditional:
            from .conditioning import ConditioningTask

            if config.teacher:
                raise DiffreconError("a conditional prior cannot be distilled from an unconditional teacher; "
                                     "drop --distill-from or --conditional")
            self.conditioning = ConditioningTask.parse(config.conditional, config.p_uncond)
        # conditions and their dropout draw from their own stream, so unconditional runs keep theirs
        self.cond_rng = np.random.default_rng(config.seed + 2)
        torch.manual_seed(config.seed)  # weight init
        self.pruning: dict[str, Any] | None = None
        if config.prune is not None:
            self._prune_parent()
        self.model = UNet(config.channels, config.width, config.channel_mult, config.res_blocks,
                          config.attention_heads, cond_channels=config.channels if self.conditioning else 0,
                          time_width=config.time_width)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        aug = Augmentation.generalising(config.modality, tuple(config.augment)) if config.augment else None
        self.crops = CropSampler(sources, config.size, config.channels, seed=config.seed, augmentation=aug)
        if config.init_from:
            self.init_meta = self._init_from(config.init_from)
        self.noise_rng = torch.Generator().manual_seed(config.seed + 1)
        self.device = torch.device(config.device)
        self.model.to(self.device)
        self.ema.to(self.device)
        self.teacher = self._load_teacher(config.teacher) if config.teacher else None
        self.step = 0
        self.horizon = config.total_steps
        self.elapsed_s = 0.0  # training time over all invocations
        val = validation_crops(sources, config.size, config.channels, config.val_count)
        self.val_x0 = torch.from_numpy(val).to(self.device)
        val_rng = torch.Generator().manual_seed(4321)  # fixed t and noise: losses comparable across runs
        self.val_noise = torch.randn(self.val_x0.shape, generator=val_rng).to(self.device)
        if config.noise_range:  # the trained range only, so the loss measures what the prior is for
            self.val_t = torch.linspace(*self.t_range, len(val))
        else:
            self.val_t = torch.linspace(0.02, 0.98, len(val))  # on the CPU with the schedule's tables
        self.val_cond = None
        if self.conditioning is not None:
            fixed = np.random.default_rng(4322)  # fixed conditions too (never dropped in validation)
            self.val_cond = self._clean_condition(torch.from_numpy(val), fixed).to(self.device)

    def _load_teacher(self, path: str):
        """The prior to distil, checked against the student's settings."""
        from .checkpoint import load_prior

        teacher = load_prior(path)
        cfg = self.config
        if teacher.modality != cfg.modality or teacher.channels != cfg.channels:
            raise DiffreconError(f"{path}: a {teacher.modality} prior with {teacher.channels} channel(s) cannot "
                                 f"teach a {cfg.modality} prior with {cfg.channels}")
        if teacher.schedule.to_metadata() != self.schedule.to_metadata():
            raise DiffreconError(f"{path}: the teacher's noise schedule differs from --schedule {cfg.schedule}")
        if teacher.normalisation != self.normalisation.to_metadata():
            raise DiffreconError(f"{path}: the teacher normalises intensities differently")
        self.teacher_step = teacher.metadata.get("step")
        return teacher.model.eval().requires_grad_(False).to(self.config.device)

    def _prune_parent(self) -> None:
        """Set the architecture to ``init_from``'s network pruned to ``prune`` of its width."""
        from .checkpoint import load_prior
        from .pruning import describe, prune

        cfg = self.config
        if not cfg.init_from or cfg.prune is None:
            raise DiffreconError("pruning needs the prior to prune: give --init-from PRIOR.safetensors")
        parent = load_prior(cfg.init_from).model
        try:
            self._pruned, plan = prune(parent, cfg.prune)
        except ValueError as exc:
            raise DiffreconError(f"--prune {cfg.prune}: {exc}") from None
        pc = self._pruned.config
        cfg.width, cfg.time_width = pc["width"], pc.get("time_width")
        cfg.channel_mult, cfg.res_blocks, cfg.attention_heads = tuple(pc["channel_mult"]), pc["res_blocks"], \
            pc["attention_heads"]
        self.pruning = {**describe(plan, parent, self._pruned), "parent": Path(cfg.init_from).name}

    def _init_from(self, path: str) -> dict[str, Any]:
        """Start from a trained prior's EMA weights (fine-tuning; the optimizer starts fresh).

        A conditional network started from an unconditional prior gets zero weights on its
        condition channels: it begins as exactly that prior and learns to read the condition."""
        if self.config.prune is not None:  # the pruned copy of them (_prune_parent)
            self.model.load_state_dict(self._pruned.state_dict())
            meta = read_metadata(path)
        elif self.conditioning is not None and "cond_channels" not in read_metadata(path).get("unet_config", {}):
            from .conditioning import load_unconditional_into

            meta = load_unconditional_into(path, self.model)
        elif self.config.channels == 1:  # a complex prior may start a real one
            meta = load_real_channel_into(path, self.model)
        else:
            meta = load_ema_weights(path, self.model)
        cfg = self.config
        if meta.get("modality") != cfg.modality:
            raise DiffreconError(f"{path}: a {meta.get('modality')} prior cannot start a {cfg.modality} prior")
        if meta.get("schedule") != self.schedule.to_metadata():
            raise DiffreconError(f"{path}: its noise schedule differs from --schedule {cfg.schedule}")
        self.ema.load_state_dict(self.model.state_dict())
        earlier = meta.get("initialised_from", {}).get("steps_before", 0) or 0
        return {"path": Path(path).name, "step": meta.get("step"), "steps_before": earlier + (meta.get("step") or 0)}

    # ----- one step -----

    def _crop_size_and_batch(self) -> tuple[int, int]:
        """This step's crop size (drawn from ``size`` and ``sizes``) and a batch of the same pixel count."""
        cfg = self.config
        if not cfg.sizes:
            return cfg.size, cfg.batch
        options = (cfg.size, *cfg.sizes)
        size = int(options[self.crops.rng.integers(len(options))])
        return size, max(1, round(cfg.batch * (cfg.size / size) ** 2))

    def train_step(self) -> float:
        cfg = self.config
        size, batch = self._crop_size_and_batch()
        x0 = torch.from_numpy(self.crops.sample(batch, size))
        lo, hi = self.t_range
        t = torch.rand(batch, generator=self.noise_rng) * (hi - lo) + lo
        noise = torch.randn(x0.shape, generator=self.noise_rng)
        # The schedule's tables live on the CPU: t stays there for them, t_dev feeds the network.
        x0, noise, t_dev = x0.to(self.device), noise.to(self.device), t.to(self.device)
        x_t = self.schedule.add_noise(x0, noise, t)
        cond = self._training_condition(x0) if self.conditioning is not None else None
        target = noise
        if self.teacher is not None:
            with torch.no_grad(), autocast_context(cfg.autocast, self.device):
                target = self.teacher(x_t, t_dev).float()
        lr = learning_rate(self.step, cfg.lr, cfg.warmup_steps, self.horizon or 10**9)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with autocast_context(cfg.autocast, self.device):
            eps = self.model(x_t, t_dev) if cond is None else self.model(x_t, t_dev, cond)
        loss = F.mse_loss(eps.float(), target)
        if cfg.freq_loss > 0:
            x0_hat = self.schedule.x0_from_eps(x_t, eps.float(), t)
            weight = self.schedule.alpha_bar(t).to(self.device)
            loss = loss + cfg.freq_loss * magnitude_spectrum_l1(x0_hat, x0, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return float(loss.detach())

    def _training_condition(self, x0: torch.Tensor) -> torch.Tensor:
        """This batch's conditions (made from the clean crops on the CPU), with condition dropout."""
        from .conditioning import drop_condition

        cond = self._clean_condition(x0.cpu(), self.cond_rng)
        assert self.conditioning is not None
        cond, _ = drop_condition(cond, self.conditioning.p_uncond, self.cond_rng)
        return cond.to(self.device)

    def _clean_condition(self, x0: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The condition of crops ``x0`` before dropout: the task's degradation, or the blind-spot network's output."""
        assert self.conditioning is not None
        if self.conditioning.name != "blind-spot":
            return self.conditioning.training_condition(x0, rng)
        if self.condition_network is None:
            raise DiffreconError("a blind-spot conditional prior is trained by diffrecon train --self-supervised")
        with torch.no_grad():
            return self.condition_network[0](x0, torch.zeros(x0.shape[0])).float()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p, 1 - decay)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Noise-prediction MSE on the fixed held-out crops, for the raw and the EMA weights."""
        x_t = self.schedule.add_noise(self.val_x0, self.val_noise, self.val_t)
        out: dict[str, Any] = {}
        runs = [("val_loss", self.model, self.val_cond), ("val_loss_ema", self.ema, self.val_cond)]
        if self.val_cond is not None:  # a conditional prior: how its unconditional half does too
            runs.append(("val_loss_ema_uncond", self.ema, torch.zeros_like(self.val_cond)))
        for label, net, cond in runs:
            net.eval()
            per = []
            for i in range(0, len(x_t), 16):
                with autocast_context(self.config.autocast, self.device):
                    extra = () if cond is None else (cond[i : i + 16],)
                    eps = net(x_t[i : i + 16], self.val_t[i : i + 16].to(self.device), *extra)
                per.append((eps.float() - self.val_noise[i : i + 16]).pow(2).mean(dim=(1, 2, 3)))
            per_t = torch.cat(per).cpu()
            out[label] = float(per_t.mean())
            if label == "val_loss_ema":
                bands = {"t<0.33": self.val_t < 1 / 3, "0.33-0.67": (self.val_t >= 1 / 3) & (self.val_t < 2 / 3),
                         "t>=0.67": self.val_t >= 2 / 3}
                out["val_loss_ema_by_t"] = {k: round(float(per_t[m].mean()), 5) for k, m in bands.items()
                                            if bool(m.any())}  # a --noise-range run fills one band only
        return out

    # ----- the loop -----

    def run(self, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Train until ``total_steps``, the time budget or ``stop_after`` more steps; save; return the last log."""
        cfg = self.config
        start = time.monotonic()
        deadline = start + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
        if cfg.total_steps is None and deadline == math.inf and stop_after is None:
            raise DiffreconError("give a number of steps or a time budget (--steps or --minutes)")
        last_step = min(cfg.total_steps or math.inf, self.step + (stop_after if stop_after is not None else math.inf))
        last_ckpt = start
        losses: list[float] = []
        record: dict[str, Any] = {}
        tty = sys.stderr.isatty()
        # In a log file (nohup), one progress line a minute is plenty.
        bar = tqdm(total=cfg.total_steps or self.horizon, initial=self.step, disable=not progress, unit="step",
                   dynamic_ncols=tty, mininterval=1.0 if tty else 60.0, desc=self.paths.name)
        step_at_start, timing_start = self.step, time.monotonic()
        interrupted = False
        try:
            while self.step < last_step and time.monotonic() < deadline:
                losses.append(self.train_step())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
                if self.step - step_at_start == 5:
                    timing_start = time.monotonic()  # the first steps warm up oneDNN caches
                if self.horizon is None and deadline < math.inf and self.step - step_at_start == 25:
                    per_step = (time.monotonic() - timing_start) / 20
                    self.horizon = self.step + int((deadline - time.monotonic()) / per_step)
                    bar.total = self.horizon
                    bar.write(f"{per_step:.2f} s/step: learning-rate horizon set to {self.horizon} steps")
                now = time.monotonic()
                if self.step % cfg.val_every == 0:
                    record = self._log(losses, now - start)
                    losses = []
                    bar.write(json.dumps(record))
                if now - last_ckpt >= 60 * cfg.checkpoint_minutes:
                    self.save(now - start)
                    last_ckpt = now
        except KeyboardInterrupt:
            interrupted = True  # Ctrl-C: save what was learnt, then let the caller see the interrupt
        finally:
            bar.close()
        end = time.monotonic()
        if not interrupted and (losses or not record):
            record = self._log(losses, end - start)
        self.save(end - start)
        if interrupted:
            raise KeyboardInterrupt
        return record

    def _log(self, losses: list[float], run_s: float) -> dict[str, Any]:
        record = {"step": self.step, "elapsed_s": round(self.elapsed_s + run_s, 1),
                  "lr": learning_rate(max(self.step - 1, 0), self.config.lr, self.config.warmup_steps,
                                      self.horizon or 10**9),
                  "train_loss": round(float(np.mean(losses)), 5) if losses else None}
        record.update({k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.validate().items()})
        self.paths.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.paths.log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        return record

    # ----- checkpoints -----

    def _metadata(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "step": self.step,
            "schedule": self.schedule.to_metadata(),
            "normalisation": self.normalisation.to_metadata(),
            "modality": self.config.modality,
            **({"distilled_from": {"path": str(self.config.teacher), "step": self.teacher_step}}
               if self.teacher is not None else {}),
            **({"initialised_from": self.init_meta} if self.config.init_from else {}),
            **({"conditioning": {**self.conditioning.to_metadata(),
                                 **(self.condition_network[1] if self.condition_network else {})}}
               if self.conditioning is not None else {}),
            **({"pruned": self.pruning} if self.pruning else {}),
            **({"noise_range": list(self.config.noise_range)} if self.config.noise_range else {}),
            "training": {
                "steps": self.step, "horizon": self.horizon, "elapsed_s": round(elapsed_s, 1),
                "threads": torch.get_num_threads(), "config": self.config.to_json(),
                # what the arithmetic was, not what was asked for: autocast is a no-op where bf16 is emulated
                "bf16": bool(self.config.autocast and bf16_is_fast(self.device.type)),
                "sources": [{"name": s.name, "role": s.role, "held_out": s.held_out, "provenance": s.provenance}
                            for s in self.sources],
                "augmentation": self.crops.aug.enabled(),
            },
        }

    def save(self, run_s: float = 0.0) -> PriorPaths:
        """Write the prior, the resume state and the model card (each file atomically)."""
        elapsed = self.elapsed_s + run_s
        meta = self._metadata(elapsed)
        save_prior(self.paths.weights, self.ema, meta)
        rng = {"noise": self.noise_rng.get_state(), "torch_global": torch.get_rng_state()}
        save_training_state(
            self.paths.train_state, self.model, self.optimizer,
            {"step": self.step, "horizon": self.horizon, "elapsed_s": elapsed,
             "crop_rng": self.crops.state(), "config": self.config.to_json(),
             "cond_rng": self.cond_rng.bit_generator.state},
            rng, moments_dtype=torch.float32 if self.config.exact_moments else torch.bfloat16,
        )
        write_model_card(self.paths, meta, self.model.parameter_count())
        return self.paths

    def resume(self) -> bool:
        """Continue from ``NAME.train.safetensors`` if it exists; return whether it did."""
        if not self.paths.train_state.exists():
            return False
        if not self.paths.weights.exists():
            raise DiffreconError(f"{self.paths.weights}: missing, so {self.paths.train_state.name} cannot resume")
        meta, rng = load_training_state(self.paths.train_state, self.model, self.optimizer)
        ema_meta = load_ema_weights(self.paths.weights, self.ema)
        if ema_meta.get("step") != meta["step"]:
            raise DiffreconError(f"{self.paths.weights}: its step ({ema_meta.get('step')}) differs from "
                                 f"{self.paths.train_state.name} ({meta['step']}), so they cannot resume together")
        saved = meta["config"]
        for key in ("channels", "width", "channel_mult", "res_blocks", "attention_heads", "schedule", "modality",
                    "teacher", "conditional", "prune"):
            if saved.get(key) != self.config.to_json().get(key):
                raise DiffreconError(f"{self.paths.train_state}: was trained with {key}={saved.get(key)}, "
                                     f"not {self.config.to_json().get(key)}; drop --resume or match it")
        self.step = int(meta["step"])
        # An explicit step count on resume moves the horizon; otherwise the run keeps its own.
        if self.config.total_steps is None:
            self.horizon = meta["horizon"]
        self.elapsed_s = float(meta["elapsed_s"])
        self.crops.set_state(meta["crop_rng"])
        if "cond_rng" in meta:
            self.cond_rng.bit_generator.state = meta["cond_rng"]
        self.noise_rng.set_state(rng["noise"])
        torch.set_rng_state(rng["torch_global"])
        return True


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The validation records of a run (``NAME.train.jsonl``), oldest first."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["TrainConfig", "Trainer", "learning_rate", "magnitude_spectrum_l1", "read_log", "read_metadata"]
