"""fourreal-rt build.

Pure Python by default. The CUDA kernels in csrc/ are built only when asked
(FOURREAL_BUILD_CUDA=1) or when a CUDA toolchain AND a GPU are present; `nvcc` alone (as on
CPU-only CI) is not enough. Building them needs torch importable (`--no-build-isolation`).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup


def cuda_extensions():
    flag = os.environ.get("FOURREAL_BUILD_CUDA", "auto")
    if flag == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:
        return [], {}
    if flag != "1" and not (shutil.which("nvcc") and torch.cuda.is_available()):
        return [], {}
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*.cu"))
    if not sources:
        return [], {}
    # Hopper (the fp8 / wgmma paths) and Ampere; FOURREAL_CUDA_ARCHS=90a builds one target, in half the time
    archs = os.environ.get("FOURREAL_CUDA_ARCHS", "90a,80").split(",")
    ext = CUDAExtension(
        "fourreal_rt._C", sources,
        extra_compile_args={"cxx": ["-O3", "-std=c++17"],
                            "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo",
                                     *[f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]]})
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()

setup(
    name="fourreal-rt",
    version="0.1.0",
    description="Fast inference for 4D video (view x time grids) with a two-stream diffusion transformer",
    packages=find_packages(include=["fourreal_rt", "fourreal_rt.*"]) + ["fourreal_rt.export"],
    package_dir={"fourreal_rt.export": "export"},
    package_data={"fourreal_rt": ["weights/*/*.json", "weights/*/*.safetensors"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4", "numpy", "click>=8", "av>=12", "safetensors", "tqdm", "pillow", "scikit-image",
        "onnx", "onnxscript", "onnxruntime", "onnxruntime-extensions",
    ],
    extras_require={"test": ["pytest"], "build": ["pybind11", "ninja"]},
    entry_points={"console_scripts": ["fourreal-rt=fourreal_rt.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
