"""``infinitystar serve``: the web demo (gradio) over one loaded model, on localhost by default."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from infinitystar.cli.model_options import add_model_arguments, load_pipeline
from infinitystar.cli.outputs import check_output_folder

DEMO_EXTRA_HINT = "the web demo needs gradio: pip install 'infinitystar[demo]'"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="start the web demo (the built-in model unless --checkpoint is given)",
        description="Serve a web page for text-to-video, text-to-image, image-to-video and video continuation. "
        "Generation runs one request at a time; other visitors wait in a queue. Bound to 127.0.0.1 unless --host "
        "says otherwise (use --host 0.0.0.0 to serve your network; there is no authentication).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_model_arguments(p, parallel=False)  # one process: the other ranks would have to follow each request
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload in MB (default 50)")
    p.add_argument(
        "--max-duration", type=int, help="longest video offered, in seconds (default: twice the model's window)"
    )
    p.add_argument("--output-dir", help="where results are written (default: a new temporary folder)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait before new ones are refused")
    p.set_defaults(func=run)


def _check_port(port: int) -> int:
    if not 0 < port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    return port


def run(args: argparse.Namespace) -> int:
    _check_port(args.port)
    # gradio reports usage to its authors unless told not to; a local demo should not phone home
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with _own_gradio_cache():  # set before gradio is imported: it reads the variable at import too
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(f"infinitystar: error: {DEMO_EXTRA_HINT}", file=sys.stderr)
        return 2

    from infinitystar.app.handlers import DemoSettings, default_output_dir
    from infinitystar.app.page import launch_app

    settings = DemoSettings(
        max_upload_mb=args.max_upload_mb,
        max_duration=args.max_duration,
        output_dir=None,
        queue_size=args.queue_size,
    )
    if args.output_dir:  # before the model loads: a folder that cannot hold results is refused now
        check_output_folder(args.output_dir, "--output-dir")
    # a missing built-in model, a wrong folder or a bad checkpoint raise ValueError / FileNotFoundError
    # with a message for people; cli.main prints it without a traceback and exits with status 2
    pipe = load_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
    temporary = not args.output_dir
    output_dir = default_output_dir() if temporary else Path(args.output_dir)  # created after the model loads
    settings = dataclasses.replace(settings, output_dir=output_dir)
    kept = "a temporary folder, removed when the server stops (--output-dir keeps them)" if temporary else "kept"
    print(f"loaded model ({pipe.config.resolution}) on {pipe.device}; results go to {output_dir} ({kept})")
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)")
    with _stop_cleanly(output_dir if temporary else None):
        launch_app(pipe, settings, host=args.host, port=args.port, block=True)
    return 0


@contextlib.contextmanager
def _own_gradio_cache():
    """gradio's copies of uploads and results go to a folder of this server (unless GRADIO_TEMP_DIR says where),
    removed when it stops: a stopped demo leaves no temporary files behind."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    cache = tempfile.mkdtemp(prefix="infinitystar-demo-cache-")
    os.environ["GRADIO_TEMP_DIR"] = cache
    try:
        yield
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)
        shutil.rmtree(cache, ignore_errors=True)


@contextlib.contextmanager
def _stop_cleanly(temporary: Path | None):
    """SIGTERM (``kill``, a service manager) stops the server like Ctrl-C, so that gradio closes and deletes its
    cached files; the temporary results folder is removed on the way out."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
