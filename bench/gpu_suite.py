"""Every GPU figure and CUDA check of the project in one process, within a time budget.

    python bench/gpu_suite.py --out $OUT                 # on a GPU: 8B rows, then the checks (default budget 420 s)
    python bench/gpu_suite.py --smoke                    # the same code on the CPU with the tiny preset (< 2 min)
    python bench/gpu_suite.py --list                     # the steps and checks, and which this version can run
    python bench/gpu_suite.py --only 720p,720p-compile   # some of them (names from --list)

It builds the 8B architecture with random bf16 weights (blocks bf16, the rest fp32, as the pipeline loads the
release), a random Flan-T5-XL encoder fed random token ids (no tokenizer, no download) and the released VAE's
architecture once, then measures the steps of ``_suite_steps.STEPS`` in order of value (8B T2V 480p and 720p 5 s,
each memory setting this version has, ``--compile``, I2V with forced steps skipped and computed), then runs the
correctness checks of ``_suite_checks.CHECKS`` (the parity dump on the device in fp32 and bf16, FlexAttention
training against dense, FSDP2 with a DCP save and exact resume, the VAE decode in bf16). Before each step it prints
its estimate (FLOPs of the schedule at the measured GEMM rate) and skips it if it cannot finish in the time left
(time is kept back for the checks); a step that runs past the budget stops between two scale steps.

Written to ``--out`` as they finish: ``gpu.jsonl`` (one record per step and check, appended: reruns add up) and
``table.md`` (this run's rows in the README's format, what did not run and why, the checks). Needs only torch,
numpy, safetensors, tqdm and transformers (the random T5); runs from the checkout without installing; never imports
PyAV. The parity dump is looked for in ``--parity``, ``INFINITYSTAR_PARITY_DIRS``, ``shared/parity/`` inside the
checkout and ``../shared/parity/``; without one the parity checks are listed as not run.
"""

from __future__ import annotations

import time

T0 = time.monotonic()  # the budget counts from the start of the process

import argparse  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # the checkout's package, installed or not

import torch  # noqa: E402

from _common import describe_gemm, gemm_rate, random_transformer  # noqa: E402
from _generation import BudgetSpent, RunSpec, build_pipeline, measure, with_resolution  # noqa: E402
from _suite_checks import CHECKS, CheckContext, scratch  # noqa: E402
from _suite_parity import find_dump  # noqa: E402
from _suite_report import Report  # noqa: E402
from _suite_steps import SMOKE_RESOLUTIONS, STEPS, Rates, Step, estimate, parse_step  # noqa: E402
from infinitystar.cli.model_options import apply_runtime_options  # noqa: E402
from infinitystar.devices import parse_dtype  # noqa: E402
from infinitystar.generation.placement import Placement  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole process (default 420)")
    ap.add_argument("--out", help="output folder (default bench/results/gpu, or bench/results/smoke with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="the same code on the CPU with the tiny preset")
    ap.add_argument("--only", help="comma-separated step / check names to run (see --list)")
    ap.add_argument("--skip", help="comma-separated step / check names to leave out")
    ap.add_argument("--parity", help="the parity dump folder (default: searched, see above)")
    ap.add_argument("--list", action="store_true", help="print the steps and checks and whether they can run; exit")
    args = ap.parse_args(argv)
    known = {s.name for s in STEPS} | {c.name for c in CHECKS}
    for opt in ("only", "skip"):
        names = [n for n in (getattr(args, opt) or "").split(",") if n]
        unknown = sorted(set(names) - known)
        if unknown:
            ap.error(f"--{opt}: unknown name(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        setattr(args, opt, set(names) or None)
    if args.budget <= 0:
        ap.error(f"--budget must be > 0 seconds, got {args.budget}")
    if not args.smoke and not args.list and not torch.cuda.is_available():
        ap.error("no CUDA device here: the suite measures a GPU; run with --smoke for the CPU run of the same code")
    repo = Path(__file__).resolve().parents[1]
    args.out = Path(args.out or repo / "bench" / "results" / ("smoke" if args.smoke else "gpu"))
    return args


class Suite:
    """One run of the suite: the models, the clock, the rates the estimates use and the report."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.smoke = args.smoke
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.deadline = T0 + args.budget
        self.dump = find_dump(args.parity)
        self.report = Report(args.out, self.smoke, args.budget)
        self.pipe = None
        self.dirty = False  #: the transformer was changed by a step (quantized, offloaded, or a step failed)
        self.warmups: dict[str, float] = {}  #: the eager warm-up video's seconds per resolution
        self.text = "builtin" if self.smoke else "t5-xl"

    # -- what runs ---------------------------------------------------------------------------
    def selected(self, name: str) -> bool:
        a = self.args
        return (a.only is None or name in a.only) and not (a.skip and name in a.skip)

    def checks_reserve(self) -> float:
        """Seconds kept back for the checks that will run."""
        kind = self.device.type
        return sum(c.estimate_s[kind] for c in CHECKS if self.selected(c.name) and (self.dump or not c.needs_dump))

    def left(self, reserve: float = 0.0) -> float:
        return self.deadline - reserve - time.monotonic()

    # -- models ------------------------------------------------------------------------------
    def spec(self, step: Step | None = None, settings: dict | None = None) -> RunSpec:
        settings = settings or {}
        res = self.step_resolution(step) if step else None
        place = Placement.of(self.device, None, settings.get("offload"))
        return RunSpec(
            model="tiny" if self.smoke else "8b",
            device=self.device.type,
            dtype=None,
            resolution=res,
            duration=1 if self.smoke else 5,
            sampler="multinomial",
            token_chunk=settings.get("token_chunk"),
            compile=bool(settings.get("compile", False)),
            text=self.text,
            offload_text_encoder=place.offload_text,
            mode=step.mode if step else "t2v",
            exact_forcing=step.exact_forcing if step else False,
            quantize=settings.get("quantize"),
            offload_blocks=place.offload_blocks,
            vae_dtype=settings.get("vae_dtype", "fp32"),
        )

    def step_resolution(self, step: Step) -> str:
        return SMOKE_RESOLUTIONS[step.smoke_as or step.resolution] if self.smoke else step.resolution

    def build(self) -> None:
        """The GEMM rate (first, on a quiet device), then the pipeline, timed (not when no step is selected)."""
        dtype = parse_dtype(None, self.device)  # bf16 on the GPU, fp32 for the smoke run on the CPU
        self.gemm = gemm_rate(self.device, dtype)
        print(f"GEMM rate {describe_gemm(self.gemm)}", flush=True)
        if not any(self.selected(step.name) for step in STEPS):
            return self.report.header(self.device, self.gemm, None, self.dump)
        t0 = time.monotonic()
        note = ""
        try:
            self.pipe = build_pipeline(self.spec(), self.device)
        except Exception as exc:  # noqa: BLE001 - transformers absent or changed: measure the rest without T5
            if self.text == "builtin":
                raise
            traceback.print_exc()
            note = f"; the random T5-XL could not be built ({type(exc).__name__}: {exc}), the built-in encoder stood in"
            self.text = "builtin"
            self.pipe = build_pipeline(self.spec(), self.device)
        built = time.monotonic() - t0
        self.rates = Rates.guess(self.gemm["flops_per_s"], self.device.type == "cuda")
        self.rates.rebuild_s = built / 2  # the transformer is most of it
        self.report.header(self.device, self.gemm, built, self.dump, note)

    def rebuild_transformer(self) -> None:
        """A new random transformer in place of one a step changed (quantized, offloaded, or left half-done)."""
        self.pipe.transformer = None
        self.release_memory()
        spec = self.spec()
        dtype = parse_dtype(None, self.device)  # bf16 on the GPU, fp32 for the smoke run on the CPU
        self.pipe.transformer = random_transformer(spec.model, self.device, dtype).eval()
        self.dirty = False

    def release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- steps -------------------------------------------------------------------------------
    def run_steps(self) -> None:
        for step in STEPS:
            if self.selected(step.name):
                self.run_step(step)
                self.release_memory()

    def run_step(self, step: Step) -> None:
        """Detect, estimate, apply the settings, measure; every outcome is one record."""
        args, settings, reason = parse_step(step)
        if reason:
            return self.report.step(step, "not available", reason)
        resolution, duration = self.step_resolution(step), self.spec().duration
        est, how = estimate(step, self.pipe, resolution, duration, self.rates)
        reserve = self.checks_reserve()
        left = self.left(reserve)
        print(
            f"\n== {step.name}: {step.title}; estimate {est:.0f} s ({how}); {left:.0f} s left for the steps "
            f"({reserve:.0f} s kept for the checks)",
            flush=True,
        )
        if est > left:
            return self.report.step(step, "skipped", f"estimate {est:.0f} s > {max(left, 0):.0f} s left of the budget")
        try:
            self.measure_step(step, args, settings, resolution)
        except BudgetSpent as exc:
            self.report.step(step, "stopped", str(exc))
        except Exception as exc:  # noqa: BLE001 - an out-of-memory or a crash is a finding: record it, go on
            self.dirty = True
            traceback.print_exc()
            status = "out of memory" if "out of memory" in str(exc).lower() else "failed"
            self.report.step(step, status, first_line(exc))

    def measure_step(self, step: Step, args, settings: dict, resolution: str) -> None:
        if step.fresh_model or self.dirty:
            self.rebuild_transformer()
        self.dirty = step.fresh_model
        try:
            applied = apply_runtime_options(self.pipe, args)
        except (ValueError, TypeError) as exc:  # a setting this device or model does not support: its message
            self.dirty = True
            return self.report.step(step, "not supported here", f"{type(exc).__name__}: {exc}")
        missing = sorted(set(settings) - applied)
        if missing:
            reason = (
                f"not available in this version: the CLI accepts {', '.join(missing)} but "
                "cli.model_options.apply_runtime_options does not apply it to a built pipeline"
            )
            return self.report.step(step, "not available", reason)
        with_resolution(self.pipe, resolution)
        t0 = time.monotonic()
        record = measure(self.pipe, self.spec(step, settings), self.gemm, warmup=step.warmup, deadline=self.left_at())
        record.update(settings=settings, elapsed_s=time.monotonic() - t0)
        if record["warmup_s"] is not None and not step.compiles:
            self.warmups.setdefault(resolution, record["warmup_s"])
        if step.compiles and record["warmup_s"] is not None and resolution in self.warmups:
            record["compile_s"] = record["warmup_s"] - self.warmups[resolution]  # the eager first video's excess
        self.rates.learn(record)
        self.report.ran(step, record, self.command(step.name))

    def left_at(self) -> float:
        """The monotonic time at which a measured run stops: the budget less the checks' reserve."""
        return self.deadline - self.checks_reserve()

    def command(self, step_or_check: str) -> str:
        return f"python bench/gpu_suite.py{' --smoke' if self.smoke else ''} --only {step_or_check}"

    # -- checks ------------------------------------------------------------------------------
    def run_checks(self) -> None:
        self.pipe = None
        self.release_memory()
        for check in CHECKS:
            if not self.selected(check.name):
                continue
            if check.needs_dump and self.dump is None:
                self.report.check(check, "not run", "no parity dump found: copy ../shared/parity into shared/parity/")
                continue
            est, left = check.estimate_s[self.device.type], self.left()
            print(f"\n== check {check.name}: {check.title}; estimate {est:.0f} s; {left:.0f} s left", flush=True)
            if est > left:
                self.report.check(check, "skipped", f"estimate {est:.0f} s > {max(left, 0):.0f} s left of the budget")
                continue
            ctx = CheckContext(self.device, self.dump, scratch(self.args.out / "work", check.name))
            t0 = time.monotonic()
            try:
                result = check.run(ctx)
                self.report.check(check, result.status, result.figure, result.details, time.monotonic() - t0)
            except Exception as exc:  # noqa: BLE001 - a crash of a check is its FAIL
                traceback.print_exc()
                self.report.check(check, "FAIL", first_line(exc), {}, time.monotonic() - t0)
            self.release_memory()


def first_line(exc: BaseException) -> str:
    """``Type: the first line of the message`` (at most 300 characters), for a table cell."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def list_steps(args: argparse.Namespace) -> None:
    """What the suite would run here, without building anything."""
    print("| step | what | settings |\n|---|---|---|")
    for step in STEPS:
        _, settings, reason = parse_step(step)
        print(f"| {step.name} | {step.title} | {reason or settings or 'defaults'} |")
    dump = find_dump(args.parity)
    print("\n| check | what | needs |\n|---|---|---|")
    for check in CHECKS:
        needs = ("the parity dump: " + (str(dump) if dump else "NOT FOUND")) if check.needs_dump else ""
        print(f"| {check.name} | {check.title} | {needs} |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_steps(args)
        return 0
    suite = Suite(args)
    print(f"gpu_suite: {suite.device}, torch {torch.__version__}, budget {args.budget:.0f} s, out {args.out}")
    suite.build()
    suite.run_steps()
    suite.run_checks()
    suite.report.finish(time.monotonic() - T0)
    print("\n" + suite.report.table(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
