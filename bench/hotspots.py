"""Reads a py-spy ``raw`` (collapsed stacks) profile and lists the hot spots: where the samples
were (self, by file:line), and which functions they were under (inclusive).

``python bench/hotspots.py bench/results/<run>-profile-ns_c1.txt [--top 25]``

The runner records these with ``py-spy record --format raw`` while it drives one workload
through the gateway (``bench/run.py --profile``). The raw file also loads in speedscope
(https://www.speedscope.app) or inferno/flamegraph.pl for a flame graph.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def short(path: str) -> str:
    """A file name without the checkout or site-packages prefix."""
    if path.startswith(ROOT):
        return path[len(ROOT):]
    for marker in ("site-packages/", "/lib/python3."):
        i = path.find(marker)
        if i >= 0:
            rest = path[i + len(marker):]
            return rest if marker == "site-packages/" else "stdlib/" + rest.split("/", 1)[-1]
    return path


def parse(text: str) -> tuple[list[tuple[list[tuple[str, str, int]], int]], int]:
    """Stacks (outermost first) of (function, file, line) with their sample counts."""
    stacks = []
    total = 0
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        stack_text, _, count_text = raw.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = []
        for part in stack_text.split(";"):
            match = FRAME.match(part.strip())
            if match:
                frames.append((match["func"], short(match["file"]), int(match["line"])))
        if frames:
            stacks.append((frames, count))
            total += count
    return stacks, total


def package(file: str) -> str:
    """What a frame's file belongs to: the project module, a library, or the standard library."""
    if file.startswith(("proxy/", "translators/")):
        return file.rsplit(".", 1)[0]
    if file.startswith("stdlib/"):
        return "stdlib " + file[7:].split("/", 1)[0].removesuffix(".py")
    if file.startswith("<"):
        return "python startup"
    if "/" not in file and not file.endswith(".py"):
        return "native " + file  # --native frames: the shared object or C file
    return file.split("/", 1)[0].removesuffix(".py")


def hot_spots(text: str, top: int = 25) -> dict[str, Any]:
    """Self samples by line and by package, inclusive samples by function, and the innermost
    project function of each stack."""
    stacks, total = parse(text)
    self_package: Counter[str] = Counter()
    self_line: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    project: Counter[str] = Counter()
    for frames, count in stacks:
        func, file, line = frames[-1]
        self_line[f"{file}:{line} {func}"] += count
        self_package[package(file)] += count
        seen: set[str] = set()
        seen_project: set[str] = set()
        for func, file, _ in frames:
            key = f"{file} {func}"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
            if file.startswith(("proxy/", "translators/")):
                # the innermost project frame of the stack, so work done in libraries on the
                # project's behalf is charged to the project line that asked for it
                seen_project = {key}
        for key in seen_project:
            project[key] += count

    def ranked(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"where": k, "samples": v, "percent": round(100 * v / total, 1)} for k, v in counter.most_common(top)] if total else []

    return {"samples": total, "self_by_package": ranked(self_package), "self": ranked(self_line),
            "inclusive": ranked(inclusive), "project_innermost": ranked(project)}


def render(spots: dict[str, Any]) -> str:
    lines = [f"{spots['samples']} samples"]
    for title, key in (("Self time by package (aiohttp/web.py run_app = the event loop and its C code)", "self_by_package"),
                       ("Self time by line", "self"), ("Inclusive time by function", "inclusive"),
                       ("Innermost project function on the stack (library work charged to its caller)", "project_innermost")):
        lines.append(f"\n{title}:")
        for item in spots[key]:
            lines.append(f"  {item['percent']:5.1f}%  {item['samples']:6d}  {item['where']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Hot spots of a py-spy raw profile.")
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(render(hot_spots(Path(args.file).read_text(), args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
