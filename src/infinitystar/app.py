"""The web demo: a gradio page over one loaded :class:`~infinitystar.pipeline.InfinityStarPipeline`.

Two layers, so that everything but the page itself is testable without a browser:

* plain handler functions (:func:`check_prompt_text`, :func:`resolve_seed`, :func:`check_upload`,
  :func:`inspect_upload`, :func:`generate_media`, :func:`add_to_gallery`, ...) that take and return
  ordinary Python values and raise :class:`DemoInputError` with a message meant for the person at the
  page;
* :func:`build_app`, which lays the page out (one tab per mode, a gallery of the session's results)
  and wires the handlers to it, turning their errors into ``gr.Error`` toasts. gradio is imported
  only there, so ``import infinitystar.app`` works without the ``demo`` extra.

Generation runs one request at a time (the model is not re-entrant and a second request would only
halve the speed of both): every generate button shares one queue slot, further users wait in the
queue and see their position, and a full queue refuses politely instead of crashing the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .naming import default_filename, unique_path
from .sizes import FPS

if TYPE_CHECKING:  # pragma: no cover
    from .gen_output import GenerationResult
    from .pipeline import InfinityStarPipeline

#: the four modes, in the order of the page's tabs
MODES: tuple[str, ...] = ("text-to-video", "text-to-image", "image-to-video", "continuation")
#: what the upload boxes accept (the formats the pipeline reads and browsers produce)
IMAGE_UPLOAD_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_UPLOAD_SUFFIXES: tuple[str, ...] = (".mp4", ".webm", ".mov")
#: aspect ratios offered (W:H); each maps to the nearest of the model's 15 templates
ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "21:9", "9:21")
#: the dropdown value meaning "take the aspect ratio of the uploaded image or video"
AUTO_ASPECT = "auto"
#: seeds the page accepts (what a person types; torch takes any 64-bit value)
MAX_SEED = 2**32 - 1
#: the generation events share this queue slot, so only one runs at a time
GENERATION_CONCURRENCY_ID = "generation"
PROMPT_MAX_CHARS = 2000
#: how the status box next to an upload starts when the file is rejected
UPLOAD_ERROR_PREFIX = "Rejected: "


class DemoInputError(ValueError):
    """An input the demo rejects; the message says what was wrong and what is accepted, and is shown in the page."""


@dataclass(frozen=True)
class DemoSettings:
    """Limits and places of one demo server.

    ``max_upload_mb``: the largest upload accepted (checked by gradio on upload and again by
    :func:`check_upload`). ``max_duration``: the longest duration offered in seconds (None: twice the
    model's trained length, i.e. at most two windows per request). ``output_dir``: where results are
    written (None: a fresh temporary folder). ``gallery_size``: results kept in a session's gallery.
    ``queue_size``: requests that may wait for the model before new ones are refused.
    """

    max_upload_mb: float = 50.0
    max_duration: int | None = None
    output_dir: Path | None = None
    gallery_size: int = 24
    queue_size: int = 16

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(f"max_upload_mb must be a positive number of megabytes, got {self.max_upload_mb}")
        if self.max_duration is not None and self.max_duration < 1:
            raise ValueError(f"max_duration must be at least 1 second, got {self.max_duration}")
        if self.gallery_size < 1 or self.queue_size < 1:
            raise ValueError("gallery_size and queue_size must be at least 1")
        if self.output_dir is not None:
            object.__setattr__(self, "output_dir", Path(self.output_dir))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class DemoResult:
    """One finished generation as the page shows it: the file, and what reproduces it."""

    path: Path
    prompt: str
    seed: int
    mode: str
    num_frames: int
    height: int
    width: int
    seconds: float

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1

    @property
    def caption(self) -> str:
        """The gallery caption: the seed first (it is what reproduces the result), then the prompt."""
        prompt = self.prompt if len(self.prompt) <= 80 else self.prompt[:77] + "..."
        return f"seed {self.seed} · {prompt}"

    def summary(self) -> str:
        """One markdown line under the result."""
        if self.is_image:
            what = f"image {self.width}×{self.height}"
        else:
            what = (
                f"{self.num_frames} frames ({(self.num_frames - 1) / FPS:g} s at {FPS} fps), {self.width}×{self.height}"
            )
        return f"**seed {self.seed}** · {self.mode} · {what} · generated in {self.seconds:.1f} s · `{self.path.name}`"


# --------------------------------------------------------------------------------------------
# Checking inputs (plain functions: the page and the tests call the same code)
# --------------------------------------------------------------------------------------------


def check_prompt_text(prompt: Any) -> str:
    """The prompt stripped of surrounding blanks; an empty or overlong prompt is a clear error."""
    if prompt is None or not isinstance(prompt, str) or not prompt.strip():
        raise DemoInputError("the prompt is empty: describe the image or video to generate")
    prompt = prompt.strip()
    if len(prompt) > PROMPT_MAX_CHARS:
        raise DemoInputError(f"the prompt has {len(prompt)} characters; at most {PROMPT_MAX_CHARS} are accepted")
    return prompt


def resolve_seed(seed: Any, randomize: bool) -> int | None:
    """The seed to generate with, or None to let the pipeline draw one (it returns the seed it drew).

    The page's number box gives floats or None; only whole numbers 0 .. 2**32 - 1 are accepted.
    """
    if randomize:
        return None
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        raise DemoInputError(f"no seed given: type a whole number from 0 to {MAX_SEED}, or tick 'random seed'")
    try:
        value = float(seed)
    except (TypeError, ValueError):
        raise DemoInputError(f"seed {seed!r} is not a number: give a whole number from 0 to {MAX_SEED}") from None
    if not math.isfinite(value) or value != int(value) or not 0 <= value <= MAX_SEED:
        raise DemoInputError(f"seed {seed!r} is not accepted: give a whole number from 0 to {MAX_SEED}")
    return int(value)


def _accepted(suffixes: Sequence[str]) -> str:
    return ", ".join(s.lstrip(".") for s in suffixes)


def check_upload(path: Any, kind: str, max_bytes: int) -> Path:
    """Check an uploaded image or video before the model sees it; return its path.

    ``kind`` is 'image' or 'video'. Checks, in order: something was uploaded, the file exists, its
    type is accepted, its size is within ``max_bytes``, and it decodes (an image fully; a video has a
    video stream whose first frame decodes). Each failure is one :class:`DemoInputError` naming the
    file and saying what is accepted.
    """
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}")
    suffixes = IMAGE_UPLOAD_SUFFIXES if kind == "image" else VIDEO_UPLOAD_SUFFIXES
    limit = f"{max_bytes / 2**20:g} MB"
    accepted = f"accepted: {_accepted(suffixes)} up to {limit}"
    if path is None or (isinstance(path, str) and not path):
        raise DemoInputError(f"no {kind} uploaded: upload one ({accepted})")
    path = Path(str(path))
    if not path.is_file():
        raise DemoInputError(f"the uploaded {kind} {path.name!r} is no longer on the server; upload it again")
    if path.suffix.lower() not in suffixes:
        raise DemoInputError(
            f"{path.name!r} is not a supported {kind} type ({path.suffix or 'no extension'}); {accepted}"
        )
    size = path.stat().st_size
    if size > max_bytes:
        raise DemoInputError(f"{path.name!r} is {size / 2**20:.1f} MB, larger than the {limit} limit")
    if size == 0:
        raise DemoInputError(f"{path.name!r} is empty (0 bytes); {accepted}")
    _check_decodes(path, kind, accepted)
    return path


def _check_decodes(path: Path, kind: str, accepted: str) -> None:
    """The upload decodes (an image fully, a video's first frame): a broken file fails here, not inside the model.

    The message names only the file's name (the path is the server's temporary copy) and what was wrong.
    """
    from .media.decode import verify_decodes
    from .media.probe import MediaError

    try:
        info = verify_decodes(path, kind)
    except MediaError as exc:
        reason = exc.reason or f"it is corrupt or not {'an image' if kind == 'image' else 'a video'}"
        raise DemoInputError(f"cannot read the {kind} {path.name!r}: {reason} ({accepted})") from exc
    if kind == "image" and min(info.width, info.height) < 2:
        raise DemoInputError(f"the image {path.name!r} is {info.width}×{info.height} pixels; it must be at least 2×2")


def inspect_upload(path: Any, kind: str, max_bytes: int) -> tuple[str | None, str]:
    """What the page shows right after an upload: (preview path or None, status markdown).

    Unlike :func:`check_upload` this never raises for a bad file: the message goes to the status box
    next to the upload, where it stays until the next upload.
    """
    if path is None:
        return None, ""
    try:
        ok = check_upload(path, kind, max_bytes)
    except DemoInputError as exc:
        return None, f"{UPLOAD_ERROR_PREFIX}{exc}"
    return str(ok), f"Ready: {ok.name} ({ok.stat().st_size / 2**20:.2f} MB)"


def check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise DemoInputError(f"unknown {what} {value!r}; accepted: {', '.join(choices)}")
    return value


def check_number(value: Any, what: str, low: float, high: float) -> float:
    """A finite number in [low, high] (the page's sliders and number boxes give floats or None)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DemoInputError(f"{what} must be a number from {low:g} to {high:g}, got {value!r}") from None
    if not (math.isfinite(x) and low <= x <= high):
        raise DemoInputError(f"{what} must be a number from {low:g} to {high:g}, got {value!r}")
    return x


# --------------------------------------------------------------------------------------------
# What the loaded model offers
# --------------------------------------------------------------------------------------------


def max_duration(pipe: InfinityStarPipeline, settings: DemoSettings) -> int:
    """The longest duration the page offers: the setting, else twice the model's trained length."""
    return settings.max_duration or 2 * pipe.config.max_duration


def guidance_range(pipe: InfinityStarPipeline) -> tuple[float, float]:
    """(min, max) of the guidance-scale slider: 1 (no guidance) to twice the model's default, at least 20."""
    return 1.0, float(max(20.0, 2 * pipe.config.guidance_scale))


def aspect_choices(pipe: InfinityStarPipeline, with_auto: bool = False) -> list[tuple[str, str]]:
    """Dropdown entries (label, value): each ratio with the pixel size this model makes for it."""
    out = [("auto (from the upload)", AUTO_ASPECT)] if with_auto else []
    for ratio in ASPECT_RATIOS:
        h, w = pipe.pixel_size(ratio)
        out.append((f"{ratio} · {w}×{h}", ratio))
    return out


def model_summary(pipe: InfinityStarPipeline, settings: DemoSettings) -> str:
    """Markdown describing the loaded model: the resolution is the model's, not a choice of the page."""
    c = pipe.config
    h, w = pipe.pixel_size(c.aspect_ratio)
    return (
        f"Model: **{c.resolution}** (fixed by the loaded weights; {c.aspect_ratio} is {w}×{h} pixels), "
        f"{FPS} fps, trained on up to {c.max_duration} s per window (longer videos are generated window after "
        f"window, up to {max_duration(pipe, settings)} s here), guidance {c.guidance} (default scale "
        f"{c.guidance_scale:g}), on {pipe.device}. Uploads: images ({_accepted(IMAGE_UPLOAD_SUFFIXES)}) and videos "
        f"({_accepted(VIDEO_UPLOAD_SUFFIXES)}) up to {settings.max_upload_mb:g} MB."
    )


# --------------------------------------------------------------------------------------------
# Generating
# --------------------------------------------------------------------------------------------


def generate_media(
    pipe: InfinityStarPipeline,
    mode: str,
    prompt: Any,
    *,
    output_dir: str | Path,
    image: Any = None,
    video: Any = None,
    duration: Any = None,
    aspect_ratio: Any = None,
    seed: Any = None,
    randomize_seed: bool = False,
    guidance_scale: Any = None,
    settings: DemoSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
    lock: threading.Lock | None = None,
) -> DemoResult:
    """Check the inputs of one request, generate, write the result (mp4 or png) into ``output_dir``.

    ``mode`` is one of :data:`MODES`; ``image`` / ``video`` are upload paths (image-to-video /
    continuation); ``duration`` in seconds (ignored for text-to-image; for a continuation, the length
    of the whole result including the given video); ``aspect_ratio`` one of :data:`ASPECT_RATIOS`,
    or ``'auto'`` / None (the upload's, else the model's); ``guidance_scale`` None for the model's.
    ``progress(done, total)`` is called after every scale step. ``lock`` serialises calls that share
    ``pipe``. Bad inputs raise :class:`DemoInputError`; the pipeline's own input errors (a video too
    short to continue, ...) come through as :class:`DemoInputError` with the pipeline's message.
    """
    settings = settings or DemoSettings()
    mode = check_choice(mode, MODES, "mode")
    prompt = check_prompt_text(prompt)
    seed_value = resolve_seed(seed, randomize_seed)
    limit = max_duration(pipe, settings)
    seconds = 0 if mode == "text-to-image" else int(round(check_number(duration, "duration (seconds)", 1, limit)))
    if aspect_ratio in (None, "", AUTO_ASPECT):
        aspect = None
    else:
        aspect = check_choice(aspect_ratio, ASPECT_RATIOS, "aspect ratio")
    low, high = guidance_range(pipe)
    scale = None if guidance_scale is None else check_number(guidance_scale, "guidance scale", low, high)
    kwargs: dict[str, Any] = {}
    if mode == "image-to-video":
        kwargs["image"] = str(check_upload(image, "image", settings.max_upload_bytes))
    elif mode == "continuation":
        kwargs["video"] = str(check_upload(video, "video", settings.max_upload_bytes))
    if aspect is None and not kwargs:
        aspect = pipe.config.aspect_ratio

    def callback(done: int, total: int, record: Any) -> None:
        if progress is not None:
            progress(done, total)

    t0 = time.perf_counter()
    try:
        with lock if lock is not None else contextlib.nullcontext():
            result = pipe(
                prompt,
                duration=seconds,
                aspect_ratio=aspect,
                seed=seed_value,
                guidance_scale=scale,
                callback=callback,
                output_type="np",
                progress=False,
                **kwargs,
            )
    except ValueError as exc:  # the pipeline's input checks: their message is for the user
        raise DemoInputError(str(exc)) from exc
    return save_result(result, output_dir, time.perf_counter() - t0)


def save_result(result: GenerationResult, output_dir: str | Path, seconds: float) -> DemoResult:
    """Write a pipeline result as ``{slug}_seed{seed}.mp4`` (H.264) or ``.png`` and describe it."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    frames = result.frames  # uint8 [T, H, W, 3]
    path = unique_path(folder, default_filename(result.prompt, result.seed, result.is_image))
    try:
        result.save(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    t, h, w = (int(v) for v in frames.shape[:3])
    return DemoResult(path, result.prompt, int(result.seed), result.mode, t, h, w, seconds)


def add_to_gallery(gallery: list | None, result: DemoResult, limit: int) -> list[tuple[str, str]]:
    """The session's gallery with ``result`` first, as gradio's (path, caption) pairs, at most ``limit`` long."""
    items = [(str(result.path), result.caption)] + [tuple(item) for item in (gallery or [])]
    return items[:limit]


def default_output_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="infinitystar-demo-"))


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


@dataclass
class _Tab:
    """The components of one mode's tab that the event wiring needs."""

    mode: str
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def build_app(pipe: InfinityStarPipeline, settings: DemoSettings | None = None):
    """The gradio page over ``pipe``: one tab per mode, the session's gallery below.

    Every component a test or a script needs has an ``elem_id``: ``{tab}-prompt``, ``{tab}-seed``,
    ``{tab}-random-seed``, ``{tab}-duration``, ``{tab}-aspect``, ``{tab}-guidance``,
    ``{tab}-generate``, ``{tab}-result`` (video or image), ``{tab}-download``, ``{tab}-info``,
    ``{tab}-upload`` and ``{tab}-upload-status`` (image-to-video and continuation), and ``gallery``,
    with tab in t2v, t2i, i2v, v2v. Launch it with :func:`launch_app` (which sets the queue and the
    upload limits).
    """
    import gradio as gr

    settings = settings or DemoSettings()
    output_dir = settings.output_dir or default_output_dir()
    lock = threading.Lock()
    cfg = pipe.config
    longest = max_duration(pipe, settings)
    g_low, g_high = guidance_range(pipe)
    default_seconds = max(1, min(cfg.default_duration or cfg.max_duration, longest))
    short = {"text-to-video": "t2v", "text-to-image": "t2i", "image-to-video": "i2v", "continuation": "v2v"}

    def run(
        mode, prompt, upload, duration, aspect, seed, randomize, scale, gallery,
        progress=gr.Progress(),  # noqa: B008 (gradio finds the progress bar by this default)
    ):  # fmt: skip
        def report(done: int, total: int) -> None:
            progress((done, total), desc="scale steps", unit="steps")

        try:
            result = generate_media(
                pipe,
                mode,
                prompt,
                output_dir=output_dir,
                image=upload if mode == "image-to-video" else None,
                video=upload if mode == "continuation" else None,
                duration=duration,
                aspect_ratio=aspect,
                seed=seed,
                randomize_seed=randomize,
                guidance_scale=scale,
                settings=settings,
                progress=report,
                lock=lock,
            )
        except DemoInputError as exc:
            raise gr.Error(str(exc), duration=None, print_exception=False) from exc
        except Exception as exc:  # a bug or an out-of-memory: say so, keep serving
            raise gr.Error(
                f"generation failed ({type(exc).__name__}: {exc}); the server is still running, "
                "try again or with other settings",
                duration=None,
            ) from exc
        gallery = add_to_gallery(gallery, result, settings.gallery_size)
        return str(result.path), str(result.path), result.summary(), gallery

    with gr.Blocks(title="InfinityStar", analytics_enabled=False) as demo:
        gr.Markdown("# InfinityStar\nText-to-video, text-to-image, image-to-video and video continuation.")
        gr.Markdown(model_summary(pipe, settings), elem_id="model-summary")
        session_gallery = gr.State([])
        tabs: list[_Tab] = []
        with gr.Tabs():
            for mode in MODES:
                tab = _Tab(mode)
                key = short[mode]
                with gr.Tab(mode, id=key, elem_id=f"tab-{key}"), gr.Row():
                    with gr.Column(scale=1):
                        _input_panel(gr, tab, key, pipe, settings, longest, default_seconds, g_low, g_high)
                    with gr.Column(scale=1):
                        _output_panel(gr, tab, key)
                tabs.append(tab)
        gallery = gr.Gallery(
            label="this session's results (newest first; the caption holds the seed)",
            elem_id="gallery",
            columns=6,
            fit_columns=False,  # small thumbnails even when the session has one result
            height=280,
            preview=False,
            object_fit="contain",
            interactive=False,
        )

        for tab in tabs:
            i, o = tab.inputs, tab.outputs
            mode_box = gr.State(tab.mode)
            upload = i.get("upload")
            if upload is not None:
                kind = "image" if tab.mode == "image-to-video" else "video"

                def on_upload(path, kind=kind):
                    preview, status = inspect_upload(path, kind, settings.max_upload_bytes)
                    if status.startswith(UPLOAD_ERROR_PREFIX):
                        gr.Warning(status.removeprefix(UPLOAD_ERROR_PREFIX))
                    return preview, status

                upload.change(
                    on_upload,
                    inputs=upload,
                    outputs=[i["preview"], i["upload_status"]],
                    concurrency_limit=4,
                    concurrency_id="uploads",
                    api_visibility="private",
                )
            none = gr.State(None)
            i["button"].click(
                run,
                inputs=[
                    mode_box,
                    i["prompt"],
                    upload if upload is not None else none,
                    i.get("duration", none),
                    i["aspect"],
                    i["seed"],
                    i["random_seed"],
                    i["guidance"],
                    session_gallery,
                ],
                outputs=[o["result"], o["download"], o["info"], session_gallery],
                concurrency_limit=1,
                concurrency_id=GENERATION_CONCURRENCY_ID,
                api_name=short[tab.mode],
            ).success(  # the gallery changes only when a generation succeeded (a failure leaves it as it was)
                lambda items: items, inputs=session_gallery, outputs=gallery, queue=False, api_visibility="private"
            )
    return demo


def _input_panel(gr, tab: _Tab, key: str, pipe, settings, longest, default_seconds, g_low, g_high) -> None:
    i = tab.inputs
    cfg = pipe.config
    if tab.mode in ("image-to-video", "continuation"):
        kind = "image" if tab.mode == "image-to-video" else "video"
        suffixes = IMAGE_UPLOAD_SUFFIXES if kind == "image" else VIDEO_UPLOAD_SUFFIXES
        label = f"{kind} ({_accepted(suffixes)}, up to {settings.max_upload_mb:g} MB)"
        if kind == "image":
            label = "first frame: " + label
        i["upload"] = gr.File(label=label, file_types=list(suffixes), type="filepath", elem_id=f"{key}-upload")
        i["upload_status"] = gr.Markdown("", elem_id=f"{key}-upload-status")
        preview_cls = gr.Image if kind == "image" else gr.Video
        i["preview"] = preview_cls(label="uploaded", interactive=False, height=200, elem_id=f"{key}-preview")
    i["prompt"] = gr.Textbox(
        label="prompt", lines=3, placeholder="describe the scene and its motion", elem_id=f"{key}-prompt"
    )
    with gr.Row():
        i["seed"] = gr.Number(label="seed", value=0, precision=0, minimum=0, maximum=MAX_SEED, elem_id=f"{key}-seed")
        i["random_seed"] = gr.Checkbox(label="random seed", value=True, elem_id=f"{key}-random-seed")
    if tab.mode != "text-to-image":
        value = default_seconds if tab.mode != "continuation" else min(longest, 2 * default_seconds)
        info = "whole seconds"
        if tab.mode == "continuation":
            info = "length of the whole result, including the uploaded video"
        i["duration"] = gr.Slider(
            1, longest, value=value, step=1, label="duration (s)", info=info, elem_id=f"{key}-duration"
        )
    with_auto = tab.mode in ("image-to-video", "continuation")
    i["aspect"] = gr.Dropdown(
        aspect_choices(pipe, with_auto=with_auto),
        value=AUTO_ASPECT if with_auto else cfg.aspect_ratio,
        label=f"aspect ratio (the model makes {cfg.resolution} sizes)",
        elem_id=f"{key}-aspect",
    )
    i["guidance"] = gr.Slider(
        g_low, g_high, value=cfg.guidance_scale, step=0.5, label=f"guidance scale ({cfg.guidance})",
        elem_id=f"{key}-guidance",
    )  # fmt: skip
    i["button"] = gr.Button("Generate", variant="primary", elem_id=f"{key}-generate")


def _output_panel(gr, tab: _Tab, key: str) -> None:
    o = tab.outputs
    if tab.mode == "text-to-image":
        o["result"] = gr.Image(
            label="result", type="filepath", interactive=False, buttons=["download"], elem_id=f"{key}-result"
        )
    else:
        o["result"] = gr.Video(
            label="result", interactive=False, loop=True, buttons=["download"], elem_id=f"{key}-result"
        )
    o["info"] = gr.Markdown("", elem_id=f"{key}-info")
    o["download"] = gr.File(label="download", interactive=False, elem_id=f"{key}-download")


def launch_options(settings: DemoSettings, host: str, port: int, output_dir: Path | None = None) -> dict[str, Any]:
    """The keyword arguments :func:`launch_app` gives ``Blocks.launch``: bound to ``host`` (localhost by
    default), uploads capped, results servable, no telemetry, no share link, no server-side rendering."""
    options: dict[str, Any] = {
        "server_name": host,
        "server_port": port,
        "max_file_size": settings.max_upload_bytes,
        "share": False,
        "ssr_mode": False,
        "show_error": False,
        "footer_links": ["gradio"],
    }
    if output_dir is not None:
        options["allowed_paths"] = [str(output_dir)]
    return options


def launch_app(
    pipe: InfinityStarPipeline,
    settings: DemoSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
):
    """Build the page, put generation behind a queue (one at a time, ``settings.queue_size`` waiting),
    and serve it. ``block=False`` returns the running ``Blocks`` (call ``.close()`` to stop)."""
    settings = settings or DemoSettings()
    if settings.output_dir is None:  # fixed here so that launch can allow serving it
        settings = dataclasses.replace(settings, output_dir=default_output_dir())
    demo = build_app(pipe, settings)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    options = launch_options(settings, host, port, settings.output_dir)
    demo.launch(prevent_thread_lock=not block, **options)
    return demo


__all__ = [
    "ASPECT_RATIOS",
    "AUTO_ASPECT",
    "DemoInputError",
    "DemoResult",
    "DemoSettings",
    "IMAGE_UPLOAD_SUFFIXES",
    "MAX_SEED",
    "MODES",
    "VIDEO_UPLOAD_SUFFIXES",
    "add_to_gallery",
    "aspect_choices",
    "build_app",
    "check_prompt_text",
    "check_upload",
    "generate_media",
    "inspect_upload",
    "launch_app",
    "launch_options",
    "model_summary",
    "resolve_seed",
    "save_result",
]
