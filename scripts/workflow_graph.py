"""A UI-format workflow under construction (``Graph``) and the layout the bundled workflows share.

``scripts/build_workflows.py`` builds every bundled workflow with it; a node's widgets, sockets and defaults come
from the node definitions of a real ComfyUI (``workflow_api``).
"""

from __future__ import annotations

from workflow_api import extra_slots, widget_inputs

# Frontend colours of the two node kinds users edit (LiteGraph's green / purple presets)
GREEN, PURPLE = ("#232", "#353"), ("#323", "#535")

# Layout. A node's rectangle on screen is its title bar (TITLE above pos) and its body. Its size in the
# workflow is what the classic canvas needs (the old page, 1.27.10, 1.58.1 classic); Nodes 2.0 (Vue
# nodes) draws most nodes taller, whatever the size says. Nodes are stacked in columns leaving each
# node the room it takes in Nodes 2.0 (measured in 1.58.1 by tests/test_schedule_preview.py, rounded
# up) and GAP below that: the 1.58.1 classic canvas draws the node-source badge above the title bar.
TITLE = 30
GAP = 40
COLUMNS = {"A": 20, "B": 400, "C": 860, "D": 1240, "E": 1620}  # widths 320, 400, 320, 320, 420 + 60 apart
SIZES = {  # kind: (width, height in the classic canvas, height in Nodes 2.0), title bar excluded
    "CheckpointLoaderSimple": (320, 100, 110), "CLIPTextEncode": (400, 160, 120),
    "EmptyLatentImage": (320, 110, 120), "VAEDecode": (230, 50, 60), "VAEEncode": (230, 50, 60),
    "SaveImage": (420, 460, 460), "LoadImage": (320, 320, 360), "ImageScale": (320, 130, 150),
    "TimedFreeU": (300, 280, 310), "FewStepSigmas": (320, 410, 480),  # 410: widgets + the schedule graph
    "FewStepDPMPPSampler": (300, 114, 150),  # + the optional params widget (Nodes 2.0: 180 with the title, 1.58.1)
    "FewStepUniPCSampler": (300, 180, 260),
    "SamplerCustom": (320, 230, 230), "KSampler": (320, 270, 270),
    "FewStepScheduleTuner": (320, 324, 340),  # + learn (Nodes 2.0: 364 with the title, 1.58.1)
    "FewStepKSampler": (320, 450, 490),  # widgets + the schedule graph; Nodes 2.0: 482 measured in 1.58.1
    "EmptySD3LatentImage": (320, 110, 120), "FluxGuidance": (320, 60, 80),
    "ModelSamplingSD3": (320, 60, 80), "ModelSamplingFlux": (320, 130, 150),
}


class Graph:
    """A UI-format workflow under construction."""

    def __init__(self, definitions: dict):
        self.definitions = definitions
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.room: dict[int, int] = {}  # node id -> the height it takes in any mode (title bar excluded)

    def below(self, *nodes: dict) -> int:
        """The y (pos) of a node placed under the lowest of ``nodes``."""
        return max(n["pos"][1] + self.room[n["id"]] for n in nodes) + GAP + TITLE

    def node(self, kind: str, pos, widgets: dict | None = None, *, title=None, size=None, colors=None) -> dict:
        spec = self.definitions[kind]
        width, height, room = SIZES[kind]
        size = size or (width, height)
        widgets = dict(widgets or {})
        values = []
        for name, input_spec, _ in widget_inputs(spec):
            options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
            if name in widgets:
                value = widgets.pop(name)
            elif "default" in options:
                value = options["default"]
            elif isinstance(input_spec[0], list):
                value = input_spec[0][0]
            else:
                raise KeyError(f"{kind}.{name} has no default: give it a value")
            values.append(value)
            if extra_slots(name, input_spec):
                values.append("fixed" if input_spec[0] == "INT" else "image")
        if widgets:
            raise KeyError(f"{kind} has no widget(s) {sorted(widgets)}")
        widget_names = {name for name, _, _ in widget_inputs(spec)}
        sockets = [(name, s[0]) for section in ("required", "optional")
                   for name, s in (spec["input"].get(section) or {}).items() if name not in widget_names]
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0,
                "inputs": [{"name": name, "type": t, "link": None} for name, t in sockets],
                "outputs": [{"name": name, "type": t, "links": [], "slot_index": i}
                            for i, (name, t) in enumerate(zip(spec["output_name"], spec["output"]))],
                "properties": {"Node name for S&R": kind}, "widgets_values": values}
        self.room[node["id"]] = max(size[1], room)
        if title:
            node["title"] = title
        if colors:
            node["color"], node["bgcolor"] = colors
        self.nodes.append(node)
        return node

    def note(self, text: str, pos, size=(420, 200), title="About this workflow") -> dict:
        node = {"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "title": title,
                "properties": {"text": ""}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"}
        self.nodes.append(node)
        self.room[node["id"]] = size[1]
        return node

    def connect(self, source: dict, output, target: dict, input_name: str) -> None:
        slot = output if isinstance(output, int) else [o["name"] for o in source["outputs"]].index(output)
        target_slot = [i["name"] for i in target["inputs"]].index(input_name)
        link_id = len(self.links) + 1
        kind = source["outputs"][slot]["type"]
        self.links.append([link_id, source["id"], slot, target["id"], target_slot, kind])
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][target_slot]["link"] = link_id

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [40, 60]}}, "version": 0.4}
