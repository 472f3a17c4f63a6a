"""Hardware detection parsers and operator declarations."""

from __future__ import annotations

import pytest

from dtf.core.model import Capabilities, GpuInfo, HardwareClass
from dtf.errors import InvalidRequest
from dtf.worker.hardware import (
    declare,
    detect,
    parse_browser_version,
    parse_cpu_model,
    parse_declared_gpu,
    parse_nvidia_smi,
    parse_rocm_smi,
)

ROCM_SMI_OUTPUT = """\
========================= ROCm System Management Interface =========================
=================================== Product Info ===================================
GPU[0]\t\t: Card series: \t\tInstinct MI210
GPU[0]\t\t: Card model: \t\t0x0c34
GPU[0]\t\t: Card vendor: \t\tAdvanced Micro Devices, Inc. [AMD/ATI]
GPU[1]\t\t: Card series: \t\tInstinct MI210
================================== Memory Usage ====================================
GPU[0]\t\t: VRAM Total Memory (B): 68702699520
GPU[0]\t\t: VRAM Total Used Memory (B): 10960896
GPU[1]\t\t: VRAM Total Memory (B): 68702699520
====================================================================================
"""


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        # one modern GPU with compute capability
        (
            "0, NVIDIA A100-SXM4-80GB, 81920, 8.0\n",
            [GpuInfo("nvidia", "NVIDIA A100-SXM4-80GB", 80.0, 8.0, 0)],
        ),
        # two GPUs, extra whitespace, trailing blank line
        (
            "0, Tesla T4, 15360, 7.5\n1,  NVIDIA GeForce RTX 4090 , 24564, 8.9\n\n",
            [
                GpuInfo("nvidia", "Tesla T4", 15.0, 7.5, 0),
                GpuInfo("nvidia", "NVIDIA GeForce RTX 4090", 24.0, 8.9, 1),
            ],
        ),
        # old driver queried without compute_cap; memory not available
        ("0, Tesla K80, [N/A]\n", [GpuInfo("nvidia", "Tesla K80", 0.0, None, 0)]),
        # compute capability not supported is tolerated
        ("0, Tesla P4, 7611, [N/A]\n", [GpuInfo("nvidia", "Tesla P4", 7.4, None, 0)]),
        # an error message instead of CSV yields no GPUs
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
            [],
        ),
        # empty output
        ("", []),
    ],
)
def test_parse_nvidia_smi(output: str, expected: list[GpuInfo]) -> None:
    assert parse_nvidia_smi(output) == expected


def test_parse_rocm_smi_reads_product_and_memory() -> None:
    assert parse_rocm_smi(ROCM_SMI_OUTPUT) == [
        GpuInfo("amd", "Instinct MI210", 64.0, None, 0),
        GpuInfo("amd", "Instinct MI210", 64.0, None, 1),
    ]


def test_parse_rocm_smi_tolerates_garbage() -> None:
    assert parse_rocm_smi("ERROR: no AMD GPUs found\n") == []


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        # Debian chromium appends build information with another version
        (
            "Chromium 120.0.6099.109 built on Debian 12.4, running on Debian 12.4\n",
            ("120.0.6099.109", 120),
        ),
        # Google Chrome
        ("Google Chrome 126.0.6478.126 \n", ("126.0.6478.126", 126)),
        # Firefox
        ("Mozilla Firefox 128.0\n", ("128.0", 128)),
        # Edge
        ("Microsoft Edge 120.0.2210.91 unknown\n", ("120.0.2210.91", 120)),
        # a bare major version
        ("SomeBrowser 99\n", ("99", 99)),
        # no version at all
        ("", ("", None)),
    ],
)
def test_parse_browser_version(output: str, expected: tuple[str, int | None]) -> None:
    assert parse_browser_version(output) == expected


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        # x86: "model" is a number, "model name" the text
        (
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\n"
            "model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\n",
            "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
        ),
        # Raspberry Pi: no model name, Hardware and Model lines at the end
        (
            "processor\t: 0\nBogoMIPS\t: 108.00\nHardware\t: BCM2835\n"
            "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
            "BCM2835",
        ),
        # nothing usable
        ("processor\t: 0\n", ""),
    ],
)
def test_parse_cpu_model(cpuinfo: str, expected: str) -> None:
    assert parse_cpu_model(cpuinfo) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # model, memory and compute capability
        ("A100:80:8.0", GpuInfo("nvidia", "A100", 80.0, 8.0, declared=True)),
        # model and memory only: vendor unknown
        ("MI300X:192", GpuInfo("unknown", "MI300X", 192.0, None, declared=True)),
        # model only
        ("H100", GpuInfo("unknown", "H100", 0.0, None, declared=True)),
    ],
)
def test_parse_declared_gpu(value: str, expected: GpuInfo) -> None:
    assert parse_declared_gpu(value) == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "''"),  # empty
        (":80", "':80'"),  # no model
        ("A100:lots", "'lots'"),  # memory not a number
        ("A100:80:eight", "'eight'"),  # compute capability not a number
        ("A100:-1", "'-1'"),  # negative memory
        ("A100:80:8.0:extra", "'A100:80:8.0:extra'"),  # too many parts
    ],
)
def test_parse_declared_gpu_rejects_bad_values(value: str, named: str) -> None:
    with pytest.raises(InvalidRequest, match="MODEL\\[:MEMORY_GB") as excinfo:
        parse_declared_gpu(value)
    assert named in excinfo.value.message


def test_declare_adds_classes_gpus_and_labels() -> None:
    detected = Capabilities(
        hardware=[HardwareClass.CPU, HardwareClass.CUDA],
        gpus=[GpuInfo("nvidia", "Tesla T4", 15.0, 7.5, 0)],
        labels={"zone": "a", "rack": "1"},
        cpu_count=8,
    )
    declared = declare(
        detected,
        [HardwareClass.WEBGPU, HardwareClass.CUDA],
        [parse_declared_gpu("A100:80:8.0")],
        {"zone": "b"},
    )
    assert declared.hardware == [HardwareClass.CPU, HardwareClass.CUDA, HardwareClass.WEBGPU]
    assert declared.declared_hardware == [HardwareClass.WEBGPU, HardwareClass.CUDA]
    assert declared.gpus[1] == GpuInfo("nvidia", "A100", 80.0, 8.0, index=1, declared=True)
    assert declared.labels == {"zone": "b", "rack": "1"}
    assert declared.cpu_count == 8


def test_declare_nothing_keeps_capabilities() -> None:
    detected = Capabilities(cpu_count=4, hostname="h")
    assert declare(detected, [], [], {}) == detected


def test_detect_reports_this_machine() -> None:
    capabilities = detect()
    assert HardwareClass.CPU in capabilities.hardware
    assert capabilities.cpu_count >= 1
    assert capabilities.memory_gb > 0
    assert capabilities.python_version.count(".") == 2
