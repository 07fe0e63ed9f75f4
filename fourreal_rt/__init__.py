"""fourreal-rt: fast inference for 4D video (a view x time grid of frames) with a two-stream DiT.

`import fourreal_rt` never compiles or needs CUDA; compiled kernels load lazily on first use.
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: keep `import fourreal_rt` cheap
    if name in ("Pipeline", "Grid"):
        from .runtime import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)


__all__ = ["Pipeline", "Grid", "__version__"]
