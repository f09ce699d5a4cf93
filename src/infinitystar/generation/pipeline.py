"""The user-facing pipeline: load a model once, then generate images and videos from prompts.

A shell over the pieces: :mod:`.layouts` reads and writes model folders, :mod:`.plan` checks a call and
cuts it into windows, :mod:`.inputs` brings images and videos to the model's size, and the scale-by-scale loop
itself is :func:`~infinitystar.generation.loop.generate_latent`. Nothing here re-implements the model: it composes the
VAE, the quantizer, the loop and the text encoder.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from infinitystar.devices import dtype_name, parse_dtype, resolve_device
from infinitystar.generation.calls import plan_calls
from infinitystar.generation.inputs import load_image_input, load_video_input
from infinitystar.generation.layouts import (
    Components,
    load_components,
    model_folder,
    parse_vae_dtype,
    read_transformer_config,
    save_own_layout,
)
from infinitystar.generation.loop import SamplingOptions, StepRecord, generate_latent
from infinitystar.generation.lora import LoraLoaderMixin
from infinitystar.generation.output import GenerationResult
from infinitystar.generation.parallel import ParallelConfig, ParallelRun, start_parallel
from infinitystar.generation.placement import PlacementError, checked_placement, place_components
from infinitystar.generation.plan import (
    PipelineConfig,
    Request,
    Window,
    check_continuation,
    check_negative_prompt,
    plan_request,
    plan_windows,
    sampling_options,
    window_prompts,
)
from infinitystar.generation.settings import settings_record
from infinitystar.hub import HubOptions
from infinitystar.media import frames_to_uint8
from infinitystar.models.quantizer import encode_pyramid
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.transformer.offload import offload_of
from infinitystar.models.vae.model import VideoVAE
from infinitystar.schedule import Schedule
from infinitystar.sizes import FPS, latent_frames, nearest_template, parse_aspect_ratio
from infinitystar.text.encoders import TextEncoder


class InfinityStarPipeline(LoraLoaderMixin):
    """Text-to-image, text-to-video, image-to-video, video continuation and long video.

    Build it with :meth:`from_pretrained` (the built-in model, our saved layout or the released
    checkpoints) or from components. Call it with a prompt::

        pipe = InfinityStarPipeline.from_pretrained()           # the built-in default model
        out = pipe("a red circle moving right on a black background", seed=0)
        out.save("circle.mp4"); out.frames.shape                # (T, H, W, 3) uint8

    Under ``torchrun``, ``from_pretrained(..., parallel=ParallelConfig(sp_size=2, cfg_parallel=True))`` splits each
    video over the processes (:mod:`.parallel`): every rank calls the pipeline with the same arguments; rank 0
    (``pipe.is_main``) gets the frames, the other ranks the latents only (``frames`` None).
    """

    def __init__(
        self,
        transformer: InfinityTransformer,
        vae: VideoVAE,
        text_encoder: TextEncoder,
        config: PipelineConfig | None = None,
        *,
        offload_text_encoder: bool = False,
        parallel: ParallelRun | None = None,
    ) -> None:
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.config = config or PipelineConfig()
        self.offload_text_encoder = offload_text_encoder
        self.parallel = parallel
        self.progress_bar_config: dict[str, Any] = {}
        self.name_or_path: str | None = None  #: the name of its folder ('builtin': the built-in model), for metadata
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
        quantize: str | None = None,
        offload: str | None = None,
        vae_dtype: str | torch.dtype = "fp32",
        transformer_weights: str | Path | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        parallel: ParallelConfig | None = None,
    ) -> InfinityStarPipeline:
        """Load a model folder or a Hugging Face repo id; ``path=None`` loads the built-in default model.

        ``path`` is our saved layout (``model_index.json``) or the released one (a folder with
        ``infinitystar_8b_{720p,480p}_weights/``, ``infinitystar_videovae.pth`` and
        ``text_encoder/flan-t5-xl-official/``, or one of the weights folders itself), or a repo id of either
        (``"FoundationVision/InfinityStar"``): only what this call needs is downloaded (the chosen resolution's
        transformer, the VAE, the text encoder) into the hub cache, at ``revision``, in ``cache_dir``; with
        ``local_files_only`` (or ``HF_HUB_OFFLINE=1``) nothing is downloaded. A local path always wins.
        ``resolution`` picks the 480p or 720p weights when both are present (default 720p).
        ``dtype``: the transformer's blocks (default bf16 on CUDA, fp32 on CPU; embeddings and
        heads stay fp32). ``vae_dtype``: the VAE's, fp32 (default, as the original) or bf16 (less memory at
        decode, other pixels). ``quantize``: ``'int8'`` or ``'fp8'`` stores the blocks' linear weights in 8 bits
        (weight-only, torchao). ``offload``: ``'text'`` moves T5 to the CPU after each encoding (as
        ``offload_text_encoder=True``), ``'blocks'`` streams the transformer blocks from the CPU, ``'all'`` both.
        ``config`` overrides the generation settings the folder implies. ``transformer_weights`` replaces the
        folder's transformer (a fine-tuned one: the original's ``global_step_N.pth``, safetensors).
        ``revision`` / ``cache_dir`` / ``local_files_only``: for a Hugging Face repo id ``path``. ``parallel`` splits
        every generation over the processes of a ``torchrun`` launch (each rank then takes its own GPU unless
        ``device`` names one); a setup that cannot work (process count, heads, devices) fails here, before the
        weights load.
        """
        hub = HubOptions(revision, cache_dir, local_files_only)
        folder = model_folder(path, resolution, hub)
        run = None
        if parallel is not None and parallel.enabled:
            run = start_parallel(parallel, device, read_transformer_config(folder, resolution))
            device = run.device
        device = resolve_device(device)
        dtype = parse_dtype(dtype, device)
        vae_dtype = parse_vae_dtype(vae_dtype)
        place = checked_placement(device, quantize, offload, offload_text_encoder, parallel=run is not None)
        parts = load_components(
            folder,
            place.load_device,
            dtype,
            resolution,
            config,
            vae_dtype=vae_dtype,
            transformer_weights=transformer_weights,
        )
        place_components(parts, place)
        if run is not None:
            run.shard_weights(parts.transformer)
        t, vae, text = parts.transformer, parts.vae, parts.text_encoder
        pipe = cls(t, vae, text, parts.config, offload_text_encoder=place.offload_text, parallel=run)
        pipe.name_or_path = "builtin" if path is None else Path(path).name  # the name only: no private folders
        return pipe

    def save_pretrained(self, folder: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write our layout (``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``); ``dtype`` (e.g.
        fp16) stores the floating-point weights in that type (loading casts them back). A quantized transformer is
        refused: save the full-precision pipeline and quantize when loading."""
        return save_own_layout(Components(self.transformer, self.vae, self.text_encoder, self.config), folder, dtype)

    def to(self, device: str | torch.device) -> InfinityStarPipeline:
        if offload_of(self.transformer) is not None:
            raise PlacementError(
                f"this pipeline streams its transformer blocks to {self.device}; to run on {device}, load it again "
                f"with device={str(device)!r}"
            )
        self.transformer.to(device)
        self.vae.to(device)
        if not self.offload_text_encoder:
            self.text_encoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def is_main(self) -> bool:
        """Whether this process returns the frames: always in one process, rank 0 of a parallel generation."""
        return self.parallel is None or self.parallel.is_main

    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm options for the step progress bar, e.g. ``disable=True``."""
        self.progress_bar_config = dict(kwargs)

    # ---- schedules -----------------------------------------------------------------------------

    def schedule(self, h_div_w: float, num_latent_frames: int) -> Schedule:
        """The schedule of one window: the model's resolution and repetitions, the template of ``h_div_w``."""
        return self.config.schedule(h_div_w, num_latent_frames)

    def pixel_size(self, aspect_ratio: str | float) -> tuple[int, int]:
        """(height, width) of the videos this model makes at an aspect ratio ('16:9' or h/w)."""
        return self.schedule(nearest_template(parse_aspect_ratio(aspect_ratio)), 1).pixel_hw

    # ---- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        *,
        window_prompts: Sequence[str] | None = None,
        num_videos_per_prompt: int = 1,
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
    ) -> GenerationResult | list[GenerationResult]:
        """Generate an image (``duration=0``) or a video of ``duration`` seconds.

        ``prompt``: a str gives one :class:`GenerationResult`; a list of prompts is a batch of independent outputs
        (diffusers' convention), returned as a list, prompt by prompt, ``num_videos_per_prompt`` each (a list too
        when that is above 1). Output k of every prompt uses ``seed + k``. ``window_prompts``: instead of
        ``prompt``, one prompt per window of one long video (the last one repeats; prompts beyond the last window
        are reported with a warning). ``image``: image-to-video (its bits force the first frame). ``video``:
        continuation (its last frames force the next ones; the output starts with it). ``aspect_ratio``: 'W:H' or
        h/w, default the input's (image or video) or the model's. ``seed`` (0 to 2**63-1; None or -1: a random one,
        returned in ``result.seed``) or ``generator`` (one output only) makes the output reproducible.
        ``guidance``: 'apg', 'cfg' or 'none'; ``guidance_scale`` its strength (>= 0; a warning above 100).
        ``temperatures``: (image pyramid, video clips) or one value per scale (>= 0.001; a warning above 3).
        ``callback(done, total, record)`` runs after every scale step. Every argument of every output is checked
        before the first one is generated.
        """
        plan = plan_calls(prompt, window_prompts, num_videos_per_prompt, seed, generator)
        request = dict(image=image, video=video, duration=duration, resolution=resolution, aspect_ratio=aspect_ratio)
        requests = [plan_request(self.config, job.prompts, output_type=output_type, **request) for job in plan.jobs]
        options = sampling_options(self.config, guidance, guidance_scale, temperatures, sampler)
        if plan.from_list and len({job.prompts for job in plan.jobs}) > 1 and requests[0].mode == "long video":
            warnings.warn(
                "a list of prompts is a batch of separate videos (diffusers' convention); for one long video with one "
                "prompt per window pass window_prompts=[...] instead",
                UserWarning,
                stacklevel=3,
            )
        negative_prompt = check_negative_prompt(negative_prompt, options)
        extra = dict(negative_prompt=negative_prompt, prompt_suffix=prompt_suffix, exact_forcing=exact_forcing)
        results = [
            self._generate(job, req, options, image, video, callback, progress, **extra)
            for job, req in zip(plan.jobs, requests)
        ]
        return results[0] if plan.single else results

    def _generate(
        self, job, req: Request, options, image, video, callback, progress, *, negative_prompt, prompt_suffix,
        exact_forcing,
    ) -> GenerationResult:  # fmt: skip
        """One output of a call (planned and checked by :meth:`__call__`)."""
        t_start = time.perf_counter()
        known = self._load_input(image, video, req)
        windows = plan_windows(0 if known is None else known.shape[1], req.target_frames, self.config)
        timings = {"prepare": time.perf_counter() - t_start}
        generator = job.generator or torch.Generator(device=self.device).manual_seed(job.seed)
        used = window_prompts(self.config, req.prompts, windows, prompt_suffix)
        texts = self._encode_window_prompts(used, timings)
        negative = self._encode_negative(negative_prompt, options, timings)
        frames, latents = self._run_windows(
            req, windows, known, texts, negative, options, generator, exact_forcing, callback, progress, timings
        )
        if frames is not None:
            uint8 = frames_to_uint8(frames[None])[0]  # [T, H, W, 3]
            frames = uint8.numpy() if req.output_type == "np" else uint8
        timings["total"] = time.perf_counter() - t_start
        settings = settings_record(
            prompts=req.prompts[: len(windows)],
            mode=req.mode,
            seed=job.seed,
            options=options,
            frames_shape=None if frames is None else tuple(frames.shape),
            seconds=req.seconds,
            fps=FPS,
            resolution=self.config.resolution,
            model=self.name_or_path,
            device=str(self.device),
            dtype=dtype_name(self.transformer.compute_dtype),
            negative_prompt=negative_prompt,
            prompt_suffix=prompt_suffix,
            image=image,
            video=video,
        )
        return GenerationResult(frames, job.seed, req.prompts[0], req.mode, FPS, latents, used, timings, settings)

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

    def _run_windows(
        self, req, windows, known, texts, negative, options, generator, exact_forcing, callback, progress, timings
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """Generate window after window; returns the frames so far (None for latents only) and each latent."""
        from tqdm.auto import tqdm

        schedules = [self.schedule(req.h_div_w, latent_frames(w.frames)) for w in windows]
        total = sum(s.num_steps for s in schedules)
        bar_cfg = {"disable": not progress or not self.is_main, "unit": "step", "desc": req.mode}
        bar_cfg.update(self.progress_bar_config)
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
                forced = self._forced_bits(frames, w, sched, generator, timings)
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
                    parallel=self.parallel,
                )
                timings["transformer"] = timings.get("transformer", 0.0) + time.perf_counter() - t0
                latents.append(out.latent)
                if (req.output_type == "latent" and len(windows) == 1) or not self.is_main:
                    continue  # no frames to make (a parallel run decodes on rank 0)
                decoded = self._timed(timings, "decode", self._decode, out.latent)  # [3, T, H, W]
                frames = self._append(frames, decoded, w, first=(i == 0))
        return (None if req.output_type == "latent" or not self.is_main else frames), latents

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
        """``negative_prompt`` was checked by ``__call__`` (``check_negative_prompt``: None for none or empty)."""
        if negative_prompt is None:
            return None  # the learned null text, as the original
        t0 = time.perf_counter()
        feats = self._run_text_encoder([negative_prompt])[0]
        timings["text"] = timings.get("text", 0.0) + time.perf_counter() - t0
        return feats

    def _forced_bits(self, frames, w: Window, schedule: Schedule, generator, timings) -> list[torch.Tensor] | None:
        """The window's teacher-forced bits; in a parallel run rank 0 encodes them (the only rank with the frames and
        the generator's state) and broadcasts them."""
        if self.parallel is not None and not self.is_main:
            return self.parallel.broadcast_forced(None, schedule)
        forced = self._timed(timings, "encode", self._context_bits, frames, w, schedule, generator)
        return forced if self.parallel is None else self.parallel.broadcast_forced(forced, schedule)

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
