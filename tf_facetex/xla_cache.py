"""A persistent XLA compilation cache for the command-line tools: later runs load the compiled programs
(the UV-fit loop, the renderer's stages) instead of compiling them again (first call ~17 s -> ~6 s for the UV
fit on 2 loaded cores, scripts/bench_uv_fit.py).

TensorFlow reads ``TF_XLA_FLAGS`` once, at the first XLA compilation, so this must run before any XLA work
(`tf_facetex.cli.run` calls it before a script's main). The cache lives in ``<cache_dir>/xla`` (about 1 MB
per compiled program; XLA keys entries by the program's fingerprint, so a changed program never loads a
stale entry). ``TF_FACETEX_XLA_CACHE=0`` turns it off; a cache directory already in ``TF_XLA_FLAGS`` wins.
"""
import os

FLAG = "--tf_xla_persistent_cache_directory"


def enable_persistent_xla_cache(directory=None) -> str:
    """Points XLA's persistent cache at ``directory`` (default ``paths.cache_dir() / 'xla'``).

    Returns the directory in use ('' when disabled). Never raises: a cache is an optimisation.
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if os.environ.get("TF_FACETEX_XLA_CACHE", "1") == "0":
        return ""
    if FLAG in flags:
        return flags.split(FLAG + "=", 1)[-1].split()[0] if FLAG + "=" in flags else ""
    try:
        if directory is None:
            from tf_facetex import paths
            directory = paths.cache_dir() / "xla"
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return ""
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={directory}".strip()
    return str(directory)
