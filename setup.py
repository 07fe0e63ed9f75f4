"""fourreal-rt build.

Pure Python by default. The CUDA kernels in csrc/ are built only when asked
(FOURREAL_BUILD_CUDA=1) or when a CUDA toolchain AND a GPU are present; `nvcc` alone (as on
CPU-only CI) is not enough. Building them needs torch importable (`--no-build-isolation`).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup


def cublaslt_paths():
    """(include dirs, link args) for cuBLASLt: the nvidia-cublas wheel's (the library torch itself loads), else the
    CUDA toolkit's. The soft sync and the gated residual call cuBLASLt directly (csrc/linear_residual.cpp)."""
    import importlib.util
    from torch.utils.cpp_extension import CUDA_HOME
    roots = []
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        roots += [os.path.join(base, sub) for sub in ("cu13", "cu12", "cublas")]
    if CUDA_HOME:
        roots.append(CUDA_HOME)
    for root in roots:
        header = os.path.join(root, "include", "cublasLt.h")
        for libdir in (os.path.join(root, "lib"), os.path.join(root, "lib64")):
            libs = sorted(glob.glob(os.path.join(libdir, "libcublasLt.so*")), key=len)
            if os.path.exists(header) and libs:
                return [os.path.dirname(header)], [f"-L{libdir}", f"-l:{os.path.basename(libs[0])}"]
    raise RuntimeError("building the CUDA kernels needs cuBLASLt (the nvidia-cublas wheel or the CUDA toolkit's)")


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
    cublas_include, cublas_link = cublaslt_paths()
    ext = CUDAExtension(
        "fourreal_rt._C", sources, include_dirs=cublas_include, extra_link_args=cublas_link,
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
        "torch>=2.4", "numpy", "click>=8", "av>=12", "safetensors>=0.4.3", "tqdm", "pillow", "scikit-image",
        "onnx", "onnxscript", "onnxruntime", "onnxruntime-extensions",
    ],
    # gpu: cuDNN's FP8 attention for --fp8 (cudnn-frontend's Python graph API; without it FP8 runs attention in bf16)
    extras_require={"test": ["pytest"], "build": ["pybind11", "ninja"], "gpu": ["nvidia-cudnn-frontend>=1.14"]},
    entry_points={"console_scripts": ["fourreal-rt=fourreal_rt.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
