"""The user-facing pipeline: load a model once, then generate images and videos from prompts.

A shell over the pieces: :mod:`.layouts` reads and writes model folders, :mod:`.plan` checks a call and
cuts it into windows, :mod:`.inputs` brings images and videos to the model's size, and the scale-by-scale loop
itself is :func:`~infinitystar.generation.loop.generate_latent`. Nothing here re-implements the model: it composes the
VAE, the quantizer, the loop and the text encoder.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from infinitystar.devices import parse_dtype, resolve_device
from infinitystar.generation import lora
from infinitystar.generation.inputs import load_image_input, load_video_input
from infinitystar.generation.layouts import Components, load_components, model_folder, save_own_layout
from infinitystar.generation.loop import SamplingOptions, StepRecord, generate_latent
from infinitystar.generation.output import GenerationResult
from infinitystar.generation.plan import (
    PipelineConfig,
    Request,
    Window,
    check_continuation,
    plan_request,
    plan_windows,
    sampling_options,
    window_prompts,
)
from infinitystar.media import frames_to_uint8
from infinitystar.models.quantizer import encode_pyramid
from infinitystar.models.transformer import lora as lora_runtime
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.vae.model import VideoVAE
from infinitystar.schedule import Schedule, build_schedule
from infinitystar.sizes import FPS, latent_frames, nearest_template, parse_aspect_ratio
from infinitystar.text.encoders import TextEncoder
from infinitystar.text.prompts import check_prompt


class InfinityStarPipeline:
    """Text-to-image, text-to-video, image-to-video, video continuation and long video.

    Build it with :meth:`from_pretrained` (the built-in model, our saved layout or the released
    checkpoints) or from components. Call it with a prompt::

        pipe = InfinityStarPipeline.from_pretrained()           # the built-in default model
        out = pipe("a red circle moving right on a black background", seed=0)
        out.save("circle.mp4"); out.frames.shape                # (T, H, W, 3) uint8
    """

    def __init__(
        self,
        transformer: InfinityTransformer,
        vae: VideoVAE,
        text_encoder: TextEncoder,
        config: PipelineConfig | None = None,
        *,
        offload_text_encoder: bool = False,
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.config = config or PipelineConfig()
        self.offload_text_encoder = offload_text_encoder
        self.progress_bar_config: dict[str, Any] = {}
        if text_encoder.channels != transformer.cfg.text_channels:
            raise ValueError(
                f"the text encoder gives {text_encoder.channels}-channel features but the transformer expects "
                f"{transformer.cfg.text_channels}"
            )

    # ---- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        resolution: str | None = None,
        offload_text_encoder: bool = False,
        config: PipelineConfig | None = None,
    ) -> InfinityStarPipeline:
        """Load a model folder; ``path=None`` loads the built-in default model.

        ``path`` is our saved layout (``model_index.json``) or the released one (a folder with
        ``infinitystar_8b_{720p,480p}_weights/``, ``infinitystar_videovae.pth`` and
        ``text_encoder/flan-t5-xl-official/``, or one of the weights folders itself).
        ``resolution`` picks the 480p or 720p weights when both are present (default 720p).
        ``dtype``: the transformer's blocks (default bf16 on CUDA, fp32 on CPU; embeddings and
        heads stay fp32). ``offload_text_encoder`` moves T5 to the CPU after each encoding.
        ``config`` overrides the generation settings the folder implies.
        """
        device = resolve_device(device)
        dtype = parse_dtype(dtype, device)
        parts = load_components(model_folder(path), device, dtype, resolution, config)
        return cls(
            parts.transformer, parts.vae, parts.text_encoder, parts.config, offload_text_encoder=offload_text_encoder
        )

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write our layout (``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``); ``dtype`` (e.g.
        fp16) stores the floating-point weights in that type (loading casts them back)."""
        return save_own_layout(Components(self.transformer, self.vae, self.text_encoder, self.config), folder, dtype)

    def to(self, device: str | torch.device) -> InfinityStarPipeline:
        self.transformer.to(device)
        self.vae.to(device)
        if not self.offload_text_encoder:
            self.text_encoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm options for the step progress bar, e.g. ``disable=True``."""
        self.progress_bar_config = dict(kwargs)

    # ---- LoRA adapters (infinitystar.generation.lora) ------------------------------------------

    def load_lora(self, path_or_repo_id: str | Path, scale: float = 1.0, name: str | None = None) -> str:
        """Load a LoRA adapter onto the transformer and return its name; several can be loaded, each with its
        own ``scale``. ``path_or_repo_id``: an adapter folder (``adapter_config.json`` +
        ``adapter_model.safetensors``), a training run folder (its ``final/``) or a Hugging Face repo id. An adapter
        trained for another architecture is refused with the differing fields named."""
        return lora.load_lora(self.transformer, path_or_repo_id, scale, name)

    @property
    def lora_adapters(self) -> dict[str, float]:
        """``{name: scale}`` of the loaded adapters."""
        return lora_runtime.loaded_adapters(self.transformer)

    def set_lora_scale(self, scale: float, name: str | None = None) -> None:
        """Scale of adapter ``name`` (every adapter when None); 0 gives exactly the base model."""
        lora_runtime.set_scale(self.transformer, scale, name)

    def unload_lora(self, name: str | None = None) -> list[str]:
        """Remove adapter ``name`` (every adapter when None); what :meth:`fuse_lora` fused stays in the weights."""
        return lora_runtime.detach(self.transformer, name)

    def fuse_lora(self) -> list[str]:
        """Fuse the active adapters into the weights (base-model speed); :meth:`unfuse_lora` takes them out."""
        return lora_runtime.fuse(self.transformer)

    def unfuse_lora(self) -> list[str]:
        return lora_runtime.unfuse(self.transformer)

    # ---- schedules -----------------------------------------------------------------------------

    def schedule(self, h_div_w: float, num_latent_frames: int) -> Schedule:
        """The schedule of one window: the model's resolution and repetitions, the template of ``h_div_w``."""
        c = self.config
        return build_schedule(
            h_div_w,
            c.resolution,
            num_latent_frames,
            image_repetition=c.image_repetition,
            video_repetition=c.video_repetition,
            detail_scale_min_tokens=c.detail_scale_min_tokens,
            frames_per_clip=c.frames_per_clip,
        )

    def pixel_size(self, aspect_ratio: str | float) -> tuple[int, int]:
        """(height, width) of the videos this model makes at an aspect ratio ('16:9' or h/w)."""
        return self.schedule(nearest_template(parse_aspect_ratio(aspect_ratio)), 1).pixel_hw

    # ---- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        image: Any = None,
        video: Any = None,
        duration: float | None = None,
        resolution: str | None = None,
        aspect_ratio: str | float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        negative_prompt: str | None = None,
        guidance: str | None = None,
        guidance_scale: float | None = None,
        temperatures: tuple[float, float] | Sequence[float] | None = None,
        prompt_suffix: str | None = None,
        sampler: str = "multinomial",
        exact_forcing: bool = False,
        callback: Callable[[int, int, StepRecord], None] | None = None,
        output_type: str = "np",
        progress: bool = True,
    ) -> GenerationResult:
        """Generate an image (``duration=0``) or a video of ``duration`` seconds.

        ``image``: image-to-video (its bits force the first frame). ``video``: continuation (its
        last frames force the next ones; the output starts with it). ``prompt``: one prompt, or
        one per window of a long video (the last one repeats). ``aspect_ratio``: 'W:H' or h/w,
        default the input's (image or video) or the model's. ``seed`` / ``generator``: one of
        them makes the output reproducible; with neither a random seed is drawn and returned.
        ``guidance``: 'apg', 'cfg' or 'none'; ``guidance_scale`` its strength.
        ``temperatures``: (image pyramid, video clips) or one value per scale.
        ``callback(done, total, record)`` runs after every scale step.
        """
        t_start = time.perf_counter()
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        req = plan_request(
            self.config,
            prompts,
            image=image,
            video=video,
            duration=duration,
            resolution=resolution,
            aspect_ratio=aspect_ratio,
            output_type=output_type,
        )
        options = sampling_options(self.config, guidance, guidance_scale, temperatures, sampler)
        known = self._load_input(image, video, req)
        windows = plan_windows(0 if known is None else known.shape[1], req.target_frames, self.config)
        timings = {"prepare": time.perf_counter() - t_start}
        seed, generator = self._seeded(seed, generator)
        used = window_prompts(self.config, req.prompts, windows, prompt_suffix)
        texts = self._encode_window_prompts(used, timings)
        negative = self._encode_negative(negative_prompt, options, timings)
        frames, latents = self._run_windows(
            req, windows, known, texts, negative, options, generator, exact_forcing, callback, progress, timings
        )
        if frames is not None:
            uint8 = frames_to_uint8(frames[None])[0]  # [T, H, W, 3]
            frames = uint8.numpy() if output_type == "np" else uint8
        timings["total"] = time.perf_counter() - t_start
        return GenerationResult(frames, seed, req.prompts[0], req.mode, FPS, latents, used, timings)

    # ---- pieces of a call ----------------------------------------------------------------------

    def _load_input(self, image: Any, video: Any, req: Request) -> torch.Tensor | None:
        """The given frames at the model's size, float ``[3, N, H, W]`` in [-1, 1] on the CPU, or None."""
        size = self.pixel_size(req.h_div_w)
        if image is not None:
            return load_image_input(image, size)
        if video is not None:
            known = load_video_input(video, size)
            check_continuation(self.config, known.shape[1], req.target_frames)
            return known
        return None

    def _seeded(self, seed: int | None, generator: torch.Generator | None) -> tuple[int, torch.Generator]:
        """The seed and generator of a call: the generator given, else one seeded with ``seed`` (random if None)."""
        if generator is None:
            seed = secrets.randbits(31) if seed is None else int(seed)
            return seed, torch.Generator(device=self.device).manual_seed(seed)
        return (int(generator.initial_seed()) if seed is None else seed), generator

    def _run_windows(
        self, req, windows, known, texts, negative, options, generator, exact_forcing, callback, progress, timings
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Generate window after window; returns the frames so far (None for latents only) and each latent."""
        from tqdm.auto import tqdm

        schedules = [self.schedule(req.h_div_w, latent_frames(w.frames)) for w in windows]
        total = sum(s.num_steps for s in schedules)
        bar_cfg = {"disable": not progress, "unit": "step", "desc": req.mode, **self.progress_bar_config}
        frames = known  # float [3, N, H, W] in [-1, 1] on the CPU, or None
        latents: list[torch.Tensor] = []
        done = 0
        with tqdm(total=total, **bar_cfg) as bar:

            def on_step(record: StepRecord) -> None:
                nonlocal done
                done += 1
                bar.update(1)
                if callback is not None:
                    callback(done, total, record)

            for i, (w, sched) in enumerate(zip(windows, schedules)):
                forced = self._timed(timings, "encode", self._context_bits, frames, w, sched, generator)
                t0 = time.perf_counter()
                out = generate_latent(
                    self.transformer,
                    sched,
                    texts[i],
                    options=options,
                    generator=generator,
                    forced_bits=forced,
                    exact_forcing=exact_forcing,
                    negative_text=negative,
                    on_step=on_step,
                )
                timings["transformer"] = timings.get("transformer", 0.0) + time.perf_counter() - t0
                latents.append(out.latent)
                if req.output_type == "latent" and len(windows) == 1:
                    return None, latents
                decoded = self._timed(timings, "decode", self._decode, out.latent)  # [3, T, H, W]
                frames = self._append(frames, decoded, w, first=(i == 0))
        return (None if req.output_type == "latent" else frames), latents

    @staticmethod
    def _timed(timings: dict[str, float], phase: str, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        if result is not None:
            timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t0
        return result

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent).float().clamp(-1, 1)[0].cpu()  # [1, 3, T, H, W] -> [3, T, H, W]

    def _encode_window_prompts(self, used: list[str], timings) -> list[torch.Tensor]:
        """Text features per window, each distinct decorated prompt encoded once."""
        t0 = time.perf_counter()
        distinct = sorted(set(used), key=used.index)
        features = dict(zip(distinct, self._run_text_encoder(distinct)))
        timings["text"] = time.perf_counter() - t0
        return [features[u] for u in used]

    def _run_text_encoder(self, prompts: list[str]) -> list[torch.Tensor]:
        enc = self.text_encoder
        if self.offload_text_encoder and enc.device != self.device:
            enc.to(self.device)
        feats = enc.encode(prompts)
        if self.offload_text_encoder:
            enc.offload()
        return [f.to(self.device, torch.float32) for f in feats]

    def _encode_negative(self, negative_prompt, options: SamplingOptions, timings) -> torch.Tensor | None:
        if negative_prompt is None or negative_prompt == "":
            return None  # the learned null text, as the original
        if not options.guidance.active:
            raise ValueError("negative_prompt needs guidance (guidance='apg' or 'cfg' with a scale other than 1)")
        t0 = time.perf_counter()
        feats = self._run_text_encoder([check_prompt(negative_prompt, "negative_prompt")])[0]
        timings["text"] = timings.get("text", 0.0) + time.perf_counter() - t0
        return feats

    def _context_bits(self, frames, w: Window, schedule: Schedule, generator) -> list[torch.Tensor] | None:
        """Bits of a window's teacher-forced steps (None without context): its context frames, the last
        ``w.context_frames`` of the video so far, encoded and quantised over the window's first ``1 + clips``
        pyramids."""
        if not w.context_frames:
            return None
        context = frames[:, frames.shape[1] - w.context_frames :]  # [3, context, H, W]
        t = latent_frames(context.shape[1])
        clips = 1 + (t - 1) // self.config.frames_per_clip
        forced_schedule = schedule.truncate_clips(clips)
        if forced_schedule.num_latent_frames != t:
            raise AssertionError(f"context of {t} latent frames does not fill {clips} clips")  # plan_windows bug
        latent = self.vae.encode(
            context[None].to(self.device), sample=self.config.sample_posterior, generator=generator
        ).float()  # [1, 64, t, h, w]
        return encode_pyramid(latent, forced_schedule).bits

    @staticmethod
    def _append(frames: torch.Tensor | None, decoded: torch.Tensor, w: Window, first: bool) -> torch.Tensor:
        """Add a window's decoded frames to the video so far.

        The first window contributes all its frames (its context frames reconstructed, as the
        original shows them), after any given frames before its context; later windows add their
        new frames only.
        """
        if frames is None:
            return decoded
        if first:
            return torch.cat([frames[:, : frames.shape[1] - w.context_frames], decoded], dim=1)
        return torch.cat([frames, decoded[:, w.context_frames :]], dim=1)


__all__ = ["InfinityStarPipeline"]
