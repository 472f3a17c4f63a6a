"""What this machine offers: detected hardware plus what the operator declares.

Detection never fails the worker: a tool that is missing is skipped quietly, a
tool that is present but misbehaves is logged and skipped. Parsers are pure
functions of the tools' text output so they can be tested on sample outputs.
Hardware classes are only inferred from devices (``cuda``, ``rocm``, ``mps``);
``webgpu``/``webnn`` depend on flags and drivers a version number cannot prove,
so they count only when declared.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping

import msgspec
import psutil

from dtf.core.model import BrowserInfo, Capabilities, GpuInfo, HardwareClass
from dtf.errors import InvalidRequest

logger = logging.getLogger(__name__)

TOOL_TIMEOUT_S = 5.0
NVIDIA_QUERY = "index,name,memory.total,compute_cap"
# Browser name as matched by task requirements -> executables that provide it.
BROWSER_EXECUTABLES: dict[str, tuple[str, ...]] = {
    "chromium": ("chromium", "chromium-browser"),
    "chrome": ("google-chrome", "google-chrome-stable"),
    "firefox": ("firefox",),
    "edge": ("microsoft-edge", "microsoft-edge-stable"),
}
VENDOR_CLASSES = {
    "nvidia": HardwareClass.CUDA,
    "amd": HardwareClass.ROCM,
    "apple": HardwareClass.MPS,
}
_VERSION = re.compile(r"\b(\d+)(?:\.\d+)+\b|\b(\d+)\b")
_ROCM_FIELD = re.compile(r"^GPU\[(\d+)\]\s*:\s*(.+?):\s*(.*?)\s*$")


# -- pure parsers ------------------------------------------------------------


def parse_nvidia_smi(output: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,memory.total[,compute_cap]
    --format=csv,noheader,nounits``; lines that do not parse are skipped."""
    gpus = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        memory_mib = _number(fields[2])
        compute = _number(fields[3]) if len(fields) > 3 else None
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                model=fields[1],
                memory_gb=round(memory_mib / 1024, 1) if memory_mib is not None else 0.0,
                compute_capability=compute,
                index=int(fields[0]),
            )
        )
    return gpus


def parse_rocm_smi(output: str) -> list[GpuInfo]:
    """Parse ``rocm-smi --showproductname --showmeminfo vram`` text output."""
    fields: dict[int, dict[str, str]] = {}
    for line in output.splitlines():
        match = _ROCM_FIELD.match(line.strip())
        if match:
            fields.setdefault(int(match[1]), {})[match[2].strip()] = match[3]
    gpus = []
    for index, values in sorted(fields.items()):
        model = values.get("Card series") or values.get("Card model")
        if not model:
            continue
        memory_bytes = _number(values.get("VRAM Total Memory (B)", ""))
        memory_gb = round(memory_bytes / 1024**3, 1) if memory_bytes is not None else 0.0
        gpus.append(GpuInfo(vendor="amd", model=model, memory_gb=memory_gb, index=index))
    return gpus


def parse_browser_version(output: str) -> tuple[str, int | None]:
    """``Chromium 120.0.6099.109 built on Debian`` -> ("120.0.6099.109", 120)."""
    match = _VERSION.search(output)
    if match is None:
        return "", None
    return match[0], int(match[1] or match[2])


def parse_cpu_model(cpuinfo: str) -> str:
    """The CPU model from /proc/cpuinfo (x86 ``model name``, ARM ``Hardware``/``Model``)."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            found.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "hardware", "model", "cpu model", "processor"):
        if key in found and not found[key].isdigit():
            return found[key]
    return ""


def parse_declared_gpu(value: str) -> GpuInfo:
    """``MODEL[:MEMORY_GB[:COMPUTE_CAPABILITY]]``, e.g. ``A100:80:8.0``."""
    parts = value.split(":")
    hint = "expected MODEL[:MEMORY_GB[:COMPUTE_CAPABILITY]], e.g. A100:80:8.0"
    if not 1 <= len(parts) <= 3 or not parts[0].strip():
        raise InvalidRequest(f"bad GPU declaration {value!r}: {hint}", field="declare_gpu")
    memory_gb = _declared_number(value, parts, 1, "memory in GB", hint)
    compute = _declared_number(value, parts, 2, "compute capability", hint)
    return GpuInfo(
        vendor="nvidia" if compute is not None else "unknown",
        model=parts[0].strip(),
        memory_gb=memory_gb or 0.0,
        compute_capability=compute,
        declared=True,
    )


def _declared_number(
    value: str, parts: list[str], index: int, what: str, hint: str
) -> float | None:
    if len(parts) <= index:
        return None
    number = _number(parts[index])
    if number is None or number < 0:
        raise InvalidRequest(
            f"bad GPU declaration {value!r}: {what} {parts[index]!r} is not a non-negative "
            f"number; {hint}",
            field="declare_gpu",
        )
    return number


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


# -- declarations ------------------------------------------------------------


def declare(
    capabilities: Capabilities,
    hardware: Iterable[HardwareClass],
    gpus: Iterable[GpuInfo],
    labels: Mapping[str, str],
) -> Capabilities:
    """Add what the operator declares. Declared classes go into ``hardware``
    (so they match) and ``declared_hardware`` (so they show as declared);
    declared labels override detected ones."""
    declared_classes = list(hardware)
    next_index = len(capabilities.gpus)
    declared_gpus = [
        msgspec.structs.replace(gpu, index=next_index + offset, declared=True)
        for offset, gpu in enumerate(gpus)
    ]
    return msgspec.structs.replace(
        capabilities,
        hardware=list(dict.fromkeys([*capabilities.hardware, *declared_classes])),
        declared_hardware=list(dict.fromkeys([*capabilities.declared_hardware, *declared_classes])),
        gpus=[*capabilities.gpus, *declared_gpus],
        labels={**capabilities.labels, **labels},
    )


# -- detection ---------------------------------------------------------------


def detect() -> Capabilities:
    """Detect this machine's hardware, browsers and platform."""
    gpus = [*detect_nvidia_gpus(), *detect_rocm_gpus(), *detect_mps_gpus()]
    hardware = [HardwareClass.CPU, *dict.fromkeys(VENDOR_CLASSES[g.vendor] for g in gpus)]
    return Capabilities(
        hardware=hardware,
        cpu_count=detect_cpu_count(),
        cpu_model=detect_cpu_model(),
        memory_gb=round(psutil.virtual_memory().total / 1024**3, 1),
        gpus=gpus,
        browsers=detect_browsers(),
        hostname=socket.gethostname(),
        platform=f"{sys.platform}-{platform.machine()}",
        python_version=platform.python_version(),
    )


def detect_cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def detect_cpu_model() -> str:
    if sys.platform == "darwin":
        model = run_tool(["sysctl", "-n", "machdep.cpu.brand_string"])
        if model:
            return model.strip()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            model = parse_cpu_model(cpuinfo.read())
    except OSError:
        model = ""
    return model or platform.processor() or platform.machine()


def detect_nvidia_gpus() -> list[GpuInfo]:
    if shutil.which("nvidia-smi") is None:
        return []
    base = ["nvidia-smi", "--format=csv,noheader,nounits"]
    output = run_tool([*base, f"--query-gpu={NVIDIA_QUERY}"])
    if output is None:
        # Drivers before 510 reject the compute_cap field; ask without it.
        output = run_tool([*base, "--query-gpu=index,name,memory.total"])
    return parse_nvidia_smi(output or "")


def detect_rocm_gpus() -> list[GpuInfo]:
    if shutil.which("rocm-smi") is None:
        return []
    return parse_rocm_smi(
        run_tool(["rocm-smi", "--showproductname", "--showmeminfo", "vram"]) or ""
    )


def detect_mps_gpus() -> list[GpuInfo]:
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return []
    memory_gb = round(psutil.virtual_memory().total / 1024**3, 1)
    return [GpuInfo(vendor="apple", model=detect_cpu_model(), memory_gb=memory_gb)]


def detect_browsers() -> list[BrowserInfo]:
    browsers = []
    for name, executables in BROWSER_EXECUTABLES.items():
        path = next(filter(None, map(shutil.which, executables)), None)
        if path is None:
            continue
        version, major = parse_browser_version(run_tool([path, "--version"]) or "")
        browsers.append(BrowserInfo(name=name, version=version, major=major, path=path))
    return browsers


def run_tool(argv: list[str]) -> str | None:
    """stdout of a short-lived tool, or None (logged) when it fails or hangs."""
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("hardware probe %s failed: %s", argv[0], exc, extra={"event": "probe"})
        return None
    if completed.returncode != 0:
        logger.warning(
            "hardware probe %s exited with %d: %s",
            " ".join(argv),
            completed.returncode,
            completed.stderr.strip()[-300:] or completed.stdout.strip()[-300:],
            extra={"event": "probe"},
        )
        return None
    return completed.stdout
