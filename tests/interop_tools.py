"""Helpers of the slow interoperability tests (glTF validator, Chromium, Blender, LiteRT, Beam): install the client
tools with scripts/install_tools.sh (outside the repository and .venv) and reconstruct the demo photo once."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = pathlib.Path(os.environ.get("TF_FACETEX_TOOLS", pathlib.Path.home() / ".cache" / "tf_facetex"))
NPM_MODULES = TOOLS / "npm" / "node_modules"
LITERT_SITE = TOOLS / "litert_site"
BPY_PYTHON = TOOLS / "bpy_venv" / "bin" / "python"
BEAM_PYTHON = TOOLS / "beam_venv" / "bin" / "python"
_DEMO = {}


def install(*tools):
    """Runs scripts/install_tools.sh for ``tools`` (each is a no-op when already installed); fails loudly."""
    subprocess.run(["bash", str(ROOT / "scripts" / "install_tools.sh"), *tools], check=True, timeout=3600)


def run(args, timeout=900, env=None, **kwargs):
    """subprocess.run with text output and the repository on PYTHONPATH; raises with the output on failure."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    full_env.update(env or {})
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{args[:3]} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
                             f"stderr:\n{proc.stderr[-4000:]}")
    return proc


def demo_outputs(tmp_root: pathlib.Path) -> pathlib.Path:
    """The demo (scripts/reconstruct.py on the astronaut, default settings) run once per session: -> output dir."""
    if "out" not in _DEMO:
        from tf_facetex import io_utils
        import skimage.data

        photo = io_utils.write_image(tmp_root / "demo_input" / "astronaut.png", skimage.data.astronaut())
        out = tmp_root / "demo"
        run([sys.executable, ROOT / "scripts" / "reconstruct.py", "--input", photo, "--output_dir", out])
        _DEMO["out"] = out
    return _DEMO["out"]
