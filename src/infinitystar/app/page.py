"""The web demo: a gradio page over one loaded :class:`~infinitystar.generation.pipeline.InfinityStarPipeline`.

Three layers, so that everything but the page itself is testable without a browser:

* :mod:`infinitystar.app.checks`: plain checks of what a person types or uploads
  (:func:`~infinitystar.app.checks.check_prompt_text`, :func:`~infinitystar.app.checks.resolve_seed`,
  :func:`~infinitystar.app.checks.check_upload`, ...), raising
  :class:`~infinitystar.app.checks.DemoInputError` with a message meant for the person at the page;
* :mod:`infinitystar.app.handlers`: plain functions that generate, save and update the gallery
  (:func:`~infinitystar.app.handlers.generate_media`, :func:`~infinitystar.app.handlers.add_to_gallery`, ...);
* this module: :func:`build_app`, which lays the page out (one tab per mode, a gallery of the session's
  results) and wires the handlers to it, turning their errors into ``gr.Error`` toasts, and
  :func:`launch_app`, which serves it. gradio is imported only inside those functions, so
  ``import infinitystar.app.page`` works without the ``demo`` extra.

Generation runs one request at a time (the model is not re-entrant and a second request would only
halve the speed of both): every generate button shares one queue slot, further users wait in the
queue and see their position, and a full queue refuses politely instead of crashing the server.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infinitystar.app.checks import (
    AUTO_ASPECT,
    IMAGE_UPLOAD_SUFFIXES,
    MAX_SEED,
    MODES,
    UPLOAD_ERROR_PREFIX,
    VIDEO_UPLOAD_SUFFIXES,
    DemoInputError,
    accepted_suffixes,
    inspect_upload,
)
from infinitystar.app.handlers import (
    LORA_SCALE_MAX,
    DemoSettings,
    add_to_gallery,
    aspect_choices,
    default_output_dir,
    generate_media,
    guidance_range,
    max_duration,
    model_summary,
)
from infinitystar.app.lenient import lenient
from infinitystar.app.upload_guard import upload_guard_script

if TYPE_CHECKING:  # pragma: no cover
    from infinitystar.generation.pipeline import InfinityStarPipeline

__all__ = ["GENERATION_CONCURRENCY_ID", "TAB_KEYS", "build_app", "launch_app", "launch_options"]

#: gradio's cache of uploads and results: every hour, files older than a day are deleted (all of them at shutdown)
CACHE_CLEANUP = (3600, 24 * 3600)
#: the modes whose tab takes an upload
UPLOAD_MODES = ("image-to-video", "continuation")
#: the generation events share this queue slot, so only one runs at a time
GENERATION_CONCURRENCY_ID = "generation"
#: each mode's short key: the tab's id, the prefix of its components' elem_ids and its API name
TAB_KEYS: dict[str, str] = {
    "text-to-video": "t2v",
    "text-to-image": "t2i",
    "image-to-video": "i2v",
    "continuation": "v2v",
}


@dataclass
class _Tab:
    """The components of one mode's tab that the event wiring needs."""

    mode: str
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return TAB_KEYS[self.mode]

    @property
    def upload_kind(self) -> str | None:
        """'image' or 'video' for the tabs that take an upload, else None."""
        return {"image-to-video": "image", "continuation": "video"}.get(self.mode)


def build_app(pipe: InfinityStarPipeline, settings: DemoSettings | None = None):
    """The gradio page over ``pipe``: one tab per mode, the session's gallery below.

    Every component a test or a script needs has an ``elem_id``: ``{tab}-prompt``, ``{tab}-seed``,
    ``{tab}-random-seed``, ``{tab}-duration``, ``{tab}-aspect``, ``{tab}-guidance``,
    ``{tab}-generate``, ``{tab}-result`` (video or image), ``{tab}-download``, ``{tab}-info``,
    ``{tab}-lora-{name}`` (one scale slider per LoRA adapter the server loaded, ``serve --lora``),
    ``{tab}-upload`` and ``{tab}-upload-status`` (image-to-video and continuation), and ``gallery``,
    with tab in t2v, t2i, i2v, v2v. Launch it with :func:`launch_app` (which sets the queue and the
    upload limits).
    """
    import gradio as gr

    settings = settings or DemoSettings()
    run = _generation_handler(gr, pipe, settings, settings.output_dir or default_output_dir())
    # delete_cache: gradio's copies of uploads and results are deleted after a day, and all of them when the server
    # stops (the default temporary output folder is removed by `serve` itself)
    with gr.Blocks(title="InfinityStar", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown("# InfinityStar\nText-to-video, text-to-image, image-to-video and video continuation.")
        gr.Markdown(model_summary(pipe, settings), elem_id="model-summary")
        session_gallery = gr.State([])
        tabs = _tabs(gr, pipe, settings)
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
            _wire_upload(gr, tab, settings)
            _wire_generate(gr, tab, run, session_gallery, gallery)
    return demo


def _generation_handler(gr, pipe: InfinityStarPipeline, settings: DemoSettings, output_dir: Path) -> Callable:
    """The function every Generate button calls: :func:`generate_media` under one lock, its errors as toasts.

    A bad input is a toast with the check's message; any other failure (a bug, out of memory) is a toast
    that says the server still runs, so one failed request never takes the demo down.
    """
    lock = threading.Lock()

    adapters = list(pipe.lora_adapters)  # one slider per adapter the server loaded, in this order

    # gradio finds the progress bar by its default and inserts it at its position among the positional inputs;
    # the LoRA sliders' values follow it
    def run(
        mode, prompt, upload, duration, aspect, seed, randomize, scale, gallery,
        progress=gr.Progress(),  # noqa: B008
        *lora_values,
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
                lora_scales=dict(zip(adapters, lora_values)),
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
        # the seed box shows the seed used (also a random one), so that it can be kept or noted
        return str(result.path), str(result.path), result.summary(), result.seed, gallery

    return run


def _tabs(gr, pipe: InfinityStarPipeline, settings: DemoSettings) -> list[_Tab]:
    """One tab per mode (inputs left, result right), in the order of :data:`~infinitystar.app.checks.MODES`."""
    tabs: list[_Tab] = []
    with gr.Tabs():
        for mode in MODES:
            tab = _Tab(mode)
            with gr.Tab(mode, id=tab.key, elem_id=f"tab-{tab.key}"), gr.Row():
                with gr.Column(scale=1):
                    _input_panel(gr, tab, pipe, settings)
                with gr.Column(scale=1):
                    _output_panel(gr, tab)
            tabs.append(tab)
    return tabs


def _input_panel(gr, tab: _Tab, pipe: InfinityStarPipeline, settings: DemoSettings) -> None:
    """The left column of a tab: upload (when the mode takes one), prompt, seed, duration, aspect, guidance."""
    i, key, cfg, kind = tab.inputs, tab.key, pipe.config, tab.upload_kind
    longest = max_duration(pipe, settings)
    g_low, g_high = guidance_range(pipe)
    default_seconds = max(1, min(cfg.default_duration or cfg.max_duration, longest))
    if kind is not None:
        suffixes = IMAGE_UPLOAD_SUFFIXES if kind == "image" else VIDEO_UPLOAD_SUFFIXES
        label = f"{kind} ({accepted_suffixes(suffixes)}, up to {settings.max_upload_mb:g} MB)"
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
    with_auto = kind is not None
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
    i["lora"] = [
        gr.Slider(
            0.0,
            LORA_SCALE_MAX,
            value=scale,
            step=0.05,
            label=f"LoRA {name} (scale; 0 = off)",
            elem_id=f"{key}-lora-{name}",
        )  # fmt: skip
        for name, scale in pipe.lora_adapters.items()
    ]
    i["button"] = gr.Button("Generate", variant="primary", elem_id=f"{key}-generate")
    for name in ("seed", "duration", "aspect", "guidance"):  # their values go to the demo's checks (app/lenient.py)
        if name in i:
            lenient(i[name])


def _output_panel(gr, tab: _Tab) -> None:
    """The right column of a tab: the result (an image for text-to-image, else a video), its summary, a download."""
    o, key = tab.outputs, tab.key
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


def _wire_upload(gr, tab: _Tab, settings: DemoSettings) -> None:
    """Check an upload as soon as it arrives: preview and 'Ready' status, or a warning and the reason it was
    rejected (before anyone presses Generate). Tabs without an upload are left alone."""
    kind = tab.upload_kind
    if kind is None:
        return
    i = tab.inputs

    def on_upload(path):
        preview, status = inspect_upload(path, kind, settings.max_upload_bytes)
        if status.startswith(UPLOAD_ERROR_PREFIX):
            gr.Warning(status.removeprefix(UPLOAD_ERROR_PREFIX))
        return preview, status

    i["upload"].change(
        on_upload,
        inputs=i["upload"],
        outputs=[i["preview"], i["upload_status"]],
        concurrency_limit=4,
        concurrency_id="uploads",
        api_visibility="private",
    )


def _wire_generate(gr, tab: _Tab, run: Callable, session_gallery, gallery) -> None:
    """The tab's Generate button: ``run`` in the one shared generation slot, then the gallery refreshed.

    Inputs a mode lacks (no upload, no duration for text-to-image) are passed as None, so every tab calls
    the same ``run``.
    """
    i, o = tab.inputs, tab.outputs
    mode_box = gr.State(tab.mode)
    none = gr.State(None)
    i["button"].click(
        run,
        inputs=[
            mode_box,
            i["prompt"],
            i.get("upload", none),
            i.get("duration", none),
            i["aspect"],
            i["seed"],
            i["random_seed"],
            i["guidance"],
            session_gallery,
            *i["lora"],
        ],
        outputs=[o["result"], o["download"], o["info"], i["seed"], session_gallery],
        concurrency_limit=1,
        concurrency_id=GENERATION_CONCURRENCY_ID,
        api_name=tab.key,
    ).success(  # the gallery changes only when a generation succeeded (a failure leaves it as it was)
        lambda items: items, inputs=session_gallery, outputs=gallery, queue=False, api_visibility="private"
    )


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
    uploads = {f"{key}-upload": f"{key}-upload-status" for mode, key in TAB_KEYS.items() if mode in UPLOAD_MODES}
    options["head"] = upload_guard_script(uploads, settings.max_upload_bytes)  # oversize: a message, not "Error"
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
    temporary = settings.output_dir is None
    if temporary:  # fixed here so that launch can allow serving it
        settings = dataclasses.replace(settings, output_dir=default_output_dir())
    demo = build_app(pipe, settings)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    options = launch_options(settings, host, port, settings.output_dir)
    demo.launch(prevent_thread_lock=not block, **options)
    if temporary and block:  # the server has stopped: its temporary results go with it
        shutil.rmtree(settings.output_dir, ignore_errors=True)
    return demo
