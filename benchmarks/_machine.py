"""The machine description every benchmark prints above its table (shared by the scripts)."""

from __future__ import annotations

import os
import platform

_MIB = 2**20


def machine_lines() -> list[str]:
    """Markdown lines: CPUs, memory, platform, load average at the start, JAX and its device."""
    import jax

    cpu_model = platform.processor() or platform.machine()
    memory_gib = float("nan")
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            models = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu_model = models[0] if models else cpu_model
        with open("/proc/meminfo") as meminfo:
            memory_gib = int(meminfo.readline().split()[1]) / _MIB
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = jax.devices()[0]
    return [
        f"- machine: {os.cpu_count()} CPUs ({usable} usable), {cpu_model}, "
        f"{memory_gib:.1f} GiB RAM; {platform.platform()}; Python {platform.python_version()}",
        "- load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
        f"- JAX {jax.__version__} (jaxlib {jax.lib.__version__}); devices: {jax.device_count()} x "
        f"{device.platform} ({device.device_kind}); XLA_FLAGS: "
        f"`{os.environ.get('XLA_FLAGS', '') or 'unset'}`",
    ]
