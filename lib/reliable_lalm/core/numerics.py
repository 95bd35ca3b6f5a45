"""What decides a run's floating-point numerics: the CPU, torch's kernels, the math libraries,
threads and the environment variables that select code paths.

Recorded in every result-store manifest (:func:`reliable_lalm.core.results.device_description`)
because the same code on two CPUs can give different bits: LoRA SFT on an AMD EPYC and on an Intel
Xeon was measured to diverge at step 1 (seventh significant digit) while evaluation of
one adapter gives the same outputs everywhere. When two stores disagree, these fields say whether
the machines (or their settings) differed.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any

# Environment variables that change which kernels run or how they reduce (so, possibly, the bits).
NUMERICS_ENV = (
    "ATEN_CPU_CAPABILITY",        # torch's CPU kernel dispatch level (default, avx2, avx512, ...)
    "MKL_CBWR",                   # MKL conditional numerical reproducibility (COMPATIBLE, AVX2, ...)
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_NUM_THREADS", "MKL_DYNAMIC",
    "OMP_NUM_THREADS", "OMP_DYNAMIC", "OMP_SCHEDULE",
    "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
    "TORCH_MKLDNN_MATMUL_MIN_DIM", "TORCH_USE_CUDA_DSA",
    "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE", "CUDA_LAUNCH_BLOCKING",
    "PYTORCH_CUDA_ALLOC_CONF",
)
NUMERICS_ENV_PREFIXES = ("ONEDNN_", "DNNL_", "KMP_", "GOMP_")


def numerics_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The set numerics-relevant environment variables (names in :data:`NUMERICS_ENV` or starting
    with :data:`NUMERICS_ENV_PREFIXES`); unset ones are left out."""
    env = os.environ if environ is None else environ
    return {k: env[k] for k in sorted(env)
            if k in NUMERICS_ENV or k.startswith(NUMERICS_ENV_PREFIXES)}


def cpu_description(cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU vendor, model name and instruction-set flags that matter to kernels (Linux /proc/cpuinfo;
    other systems get ``platform.processor()``)."""
    info: dict[str, Any] = {"cpu_vendor": None, "cpu_model": platform.processor() or None}
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(200_000)
    except OSError:
        return info
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the first processor block describes them all on common machines
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    info["cpu_vendor"] = first.get("vendor_id") or first.get("CPU implementer")
    info["cpu_model"] = first.get("model name") or first.get("Processor") or info["cpu_model"]
    if "cpu family" in first:
        info["cpu_family_model_stepping"] = [first.get("cpu family"), first.get("model"), first.get("stepping")]
    flags = set((first.get("flags") or first.get("Features") or "").split())
    wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "amx_tile", "amx_bf16", "neon", "asimd", "sve")
    info["cpu_flags"] = [f for f in wanted if f in flags]
    return info


def torch_numerics(torch: Any) -> dict[str, Any]:
    """The CPU capability, math-library versions and thread counts of ``torch`` (the loaded module)."""
    out: dict[str, Any] = {"torch": torch.__version__}
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older torch
        out["cpu_capability"] = None
    out["mkl_available"] = bool(torch.backends.mkl.is_available())
    out["mkldnn_enabled"] = bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    try:
        config = torch.__config__.show()
    except Exception:  # noqa: BLE001
        config = ""
    for name, pattern in (("mkl_version", r"Intel\(R\) (?:oneAPI )?Math Kernel Library Version ([^\s]+(?: [^\s]+){0,2})"),
                          ("onednn_version", r"(?:oneDNN|MKL-DNN|Intel\(R\) MKL-DNN) v([\d.]+)"),
                          ("openmp", r"OpenMP (\d+)"), ("lapack", r"LAPACK is enabled \(usually provided by ([^)]*)\)"),
                          ("blas_info", r"BLAS_INFO=([^,\s]+)"), ("cxx_flags_capability", r"CPU capability usage: (\S+)")):
        match = re.search(pattern, config)
        out[name] = match.group(1).strip() if match else None
    out["num_threads"] = torch.get_num_threads()
    out["num_interop_threads"] = torch.get_num_interop_threads()
    out["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
        out["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return out


def numerics_description() -> dict[str, Any]:
    """Everything above in one dict (CPU, torch kernels and libraries, threads, environment).

    torch is only described when it is already imported: the scoring core never imports it (a store
    written by pure scoring code does not pay for it)."""
    out: dict[str, Any] = {**cpu_description(), "env": numerics_environment()}
    torch = sys.modules.get("torch")
    if torch is not None:
        out.update(torch_numerics(torch))
    return out
