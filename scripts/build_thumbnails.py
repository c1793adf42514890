"""Write a thumbnail for each bundled workflow (workflows/<name>.jpg), shown by ComfyUI's template browser.

A thumbnail is the workflow itself, loaded into a real ComfyUI page (the frontend of COMFYUI_PATH,
or PINNED's) in headless Chromium and fitted to the view: its nodes, its wiring and the schedule
graph drawn on Few-Step Sigmas. No image is generated (there are no weights here, and an image from
random weights would mislead). Run it after build_workflows.py, with the current frontend, and commit
the result:

    COMFYUI_PATH=/path/to/ComfyUI python scripts/build_thumbnails.py
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from comfyui_runtime import REPO  # noqa: E402
from comfyui_server import ComfyServer  # noqa: E402

WORKFLOWS = REPO / "workflows"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1200}
THUMBNAIL_SIZE = (800, 600)  # 4:3, as the template browser's cards
MARGIN = 40  # canvas pixels around the nodes
SETTINGS = {  # the graph alone: no template browser, minimap, canvas statistics or zoom buttons over it
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
}

# Scale and centre the canvas on the bounding box of all nodes (titles included).
FIT = """([width, height, margin]) => {
  const nodes = window.app.graph._nodes;
  const title = LiteGraph.NODE_TITLE_HEIGHT ?? 30;
  const left = Math.min(...nodes.map((n) => n.pos[0])) - margin;
  const top = Math.min(...nodes.map((n) => n.pos[1] - title)) - margin;
  const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + margin;
  const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + margin;
  const ds = window.app.canvas.ds;
  ds.scale = Math.min(width / (right - left), height / (bottom - top));
  ds.offset = [(width / ds.scale - (right - left)) / 2 - left, (height / ds.scale - (bottom - top)) / 2 - top];
  window.app.canvas.setDirty(true, true);
}"""


def workflow_files(workflow: dict) -> tuple[set[str], set[str]]:
    """(checkpoint names, input image names) a workflow's loaders name, so the page shows no missing file."""
    checkpoints, images = set(), set()
    for node in workflow["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            checkpoints.add(node["widgets_values"][0])
        elif node["type"] == "LoadImage":
            images.add(node["widgets_values"][0])
    return checkpoints, images


def source_tag(workflow_path: Path) -> str:
    """What a thumbnail's JPEG comment holds: the SHA-256 of the workflow file it shows (so a test can
    tell a thumbnail that is older than its workflow)."""
    return "fewstep-workflow-sha256:" + hashlib.sha256(workflow_path.read_bytes()).hexdigest()


def render(page, workflow: dict, tag: str) -> bytes:
    """A JPEG of ``workflow`` loaded into ``page`` (a ComfyUI page), fitted to THUMBNAIL_SIZE, with
    ``tag`` as its comment."""
    from PIL import Image

    page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
    page.wait_for_function("() => window.__fewstep.idle()", timeout=20000)
    canvas = page.evaluate("() => { const r = window.app.canvas.canvas.getBoundingClientRect(); "
                           "return [r.left, r.top, r.width, r.height]; }")
    page.evaluate(FIT, [canvas[2], canvas[3], MARGIN])
    page.wait_for_timeout(700)  # the schedule graph and the canvas redraw
    png = page.screenshot(clip={"x": canvas[0], "y": canvas[1], "width": canvas[2], "height": canvas[3]})
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.thumbnail(THUMBNAIL_SIZE, Image.LANCZOS)
    framed = Image.new("RGB", THUMBNAIL_SIZE, image.getpixel((0, 0)))
    framed.paste(image, ((THUMBNAIL_SIZE[0] - image.width) // 2, (THUMBNAIL_SIZE[1] - image.height) // 2))
    out = io.BytesIO()
    framed.save(out, "JPEG", quality=85, optimize=True, comment=tag.encode())
    return out.getvalue()


def main() -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium, or set CHROMIUM)")
    names = sorted(WORKFLOWS.glob("*.json"))
    workflows = {path: json.loads(path.read_text()) for path in names}
    checkpoints, images = set(), set()
    for workflow in workflows.values():
        found = workflow_files(workflow)
        checkpoints |= found[0]
        images |= found[1]
    with tempfile.TemporaryDirectory(prefix="fewstep-thumbnails-") as work:
        placeholders = {}
        for name in checkpoints:  # loaders only list names; nothing is queued
            placeholders[name] = Path(work) / name
            placeholders[name].write_bytes(b"")
        with ComfyServer(Path(work) / "server", checkpoints=placeholders) as server, sync_playwright() as playwright:
            for name in images:
                Image.linear_gradient("L").resize((512, 512)).convert("RGB").save(server.input_dir / name)
            for setting, value in SETTINGS.items():  # the current frontend's; the old page has none
                server.post_json(f"/settings/{setting}", value)
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(server.url)
            page.wait_for_function("() => window.app?.graph && window.__fewstep", timeout=120000)
            for path, workflow in workflows.items():
                target = path.with_suffix(".jpg")
                target.write_bytes(render(page, workflow, source_tag(path)))
                print(f"wrote {target.relative_to(REPO)}")
            browser.close()


if __name__ == "__main__":
    main()
