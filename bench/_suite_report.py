"""What the suite writes as it goes: one JSON line per step and check in ``gpu.jsonl`` (appended, so reruns add
up and ``summarize.py`` gives ranges over them) and ``table.md`` (this run only), rewritten after every record so
that a run cut short still leaves its table. Rows are ``summarize.py``'s: the README's performance table format."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from _common import describe_gemm
from infinitystar.files import append_jsonl, write_text
from summarize import HEADER, row, threads

STEP_HEADER = "| step | what | status |\n|---|---|---|"
CHECK_HEADER = "| check | what | result | figure | seconds |\n|---|---|---|---|---:|"


PHASE_HEADER = "| step | seconds by phase | first video (warm-up) | peak reserved |\n|---|---|---:|---:|"


def _phases(r: dict) -> str:
    """A ran step's phases (those that took any time), its warm-up video and the allocator's reserved peak."""
    phases = ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items() if v >= 0.005)
    warm = "" if r.get("warmup_s") is None else f"{r['warmup_s']:.1f} s"
    if r.get("compile_s") is not None:
        warm += f" (compiling ~{r['compile_s']:.0f} s)"
    reserved = "" if r.get("peak_reserved_gib") is None else f"{r['peak_reserved_gib']:.2f} GiB"
    return f"| {r['step']} | {phases} | {warm} | {reserved} |"


class Report:
    def __init__(self, out: Path, smoke: bool, budget: float):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.smoke = smoke
        self.budget = budget
        self.run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.records: list[dict] = []
        self.intro = ""
        self.used: float | None = None

    def _add(self, record: dict) -> None:
        record = {"run": self.run_id, **record}
        self.records.append(record)
        with open(self.out / "gpu.jsonl", "a", encoding="utf-8") as f:
            append_jsonl(f, record)
        write_text(self.out / "table.md", self.table())

    def header(
        self, device: torch.device, gemm: dict, built_s: float | None, dump: Path | None, note: str = ""
    ) -> None:
        """The run's first record: device, GEMM rate, the models (``built_s`` None: none built, no step selected)."""
        cpu = f"CPU, {threads(torch.get_num_threads())}"
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
        model = (
            "smoke run: the tiny preset (random fp32 weights) and the built-in text encoder on the CPU, 480p -> "
            "0.016M and 720p -> 0.06M budgets, 5 s -> 1 s"
            if self.smoke
            else "8B (random weights: bf16 blocks, fp32 embeddings and heads), random Flan-T5-XL fed 128 random token "
            "ids, the released VAE's architecture (random, bf16)"
        )
        built = f"{model}, built in {built_s:.1f} s{note}; " if built_s is not None else ""
        self.intro = (
            f"{name}, torch {torch.__version__}; GEMM rate {describe_gemm(gemm)}; {built}"
            f"parity dump: {dump or 'none found'}; budget {self.budget:.0f} s"
        )
        self._add(
            {
                "kind": "header",
                "device_name": name,
                "torch": torch.__version__,
                "gemm": gemm,
                "build_s": built_s,
                "dump": str(dump) if dump else None,
                "budget_s": self.budget,
            }
        )

    def step(self, step, status: str, reason: str) -> None:
        print(f"   {step.name}: {status}: {reason}", flush=True)
        self._add({"kind": "step", "step": step.name, "title": step.title, "status": status, "reason": reason})

    def ran(self, step, record: dict, command: str) -> None:
        print(f"   {step.name}: {row([{**record, 'command': command}])}", flush=True)
        self._add(
            {"kind": "step", "step": step.name, "title": step.title, "status": "ran", "command": command} | record
        )

    def check(self, check, status: str, figure: str, details: dict | None = None, seconds: float | None = None) -> None:
        print(f"   {check.name}: {status}: {figure}", flush=True)
        self._add(
            {
                "kind": "check",
                "check": check.name,
                "title": check.title,
                "status": status,
                "figure": figure,
                "details": details or {},
                "seconds": seconds,
            }
        )

    def finish(self, used_s: float) -> None:
        self.used = used_s
        write_text(self.out / "table.md", self.table())

    def table(self) -> str:
        """This run's markdown: the rows that ran (README format), the steps that did not, the checks."""
        ran = [r for r in self.records if r.get("kind") == "step" and r["status"] == "ran"]
        other = [r for r in self.records if r.get("kind") == "step" and r["status"] != "ran"]
        checks = [r for r in self.records if r.get("kind") == "check"]
        used = f"; {self.used:.0f} s used" if self.used is not None else " (in progress)"
        lines = [f"# gpu_suite{' --smoke' if self.smoke else ''} {self.run_id}", "", self.intro + used, "", HEADER]
        lines += [row([r]) for r in ran]
        if ran:
            lines += ["", PHASE_HEADER] + [_phases(r) for r in ran]
        if other:
            lines += ["", STEP_HEADER]
            lines += [f"| {r['step']} | {r['title']} | {r['status']}: {r['reason']} |" for r in other]
        if checks:
            lines += ["", CHECK_HEADER]
            for c in checks:
                sec = "" if c.get("seconds") is None else f"{c['seconds']:.1f}"
                lines.append(f"| {c['check']} | {c['title']} | {c['status']} | {c['figure']} | {sec} |")
        return "\n".join(lines) + "\n"
