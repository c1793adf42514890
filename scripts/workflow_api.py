"""Convert a UI-format workflow (what the ComfyUI page saves and loads) into the API prompt format
(what ``POST /prompt`` takes), driven by the node definitions the ComfyUI under test reports
(``/object_info``, or ``object_info_of(nodes)`` in process).

The frontend stores a node's widget values as a flat list, ``widgets_values``, in the order of the
node's widget inputs (required, then optional). Two frontend-only widgets also take a slot there:
the "control_after_generate" choice after a seed (an INT named ``seed`` / ``noise_seed``, or one
declared with ``control_after_generate``) and the upload button after an ``image_upload`` combo.
Frontend-only nodes (Note, MarkdownNote) are dropped; Reroute and PrimitiveNode are resolved.

    python scripts/workflow_api.py workflows/fewstep_sd15_5step.json > prompt.json
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
PASS_THROUGH = {"Reroute"}
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    """A workflow that cannot be converted; the message names the node."""


def node_label(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(title) if title else ''})"


def widget_inputs(definition: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) of each widget input of a node definition, in the frontend's order."""
    inputs = definition.get("input", {})
    order = definition.get("input_order", {})
    widgets = []
    for section in ("required", "optional"):
        specs = inputs.get(section, {}) or {}
        for name in order.get(section, list(specs)):
            spec = specs[name]
            kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            if options.get("forceInput") or options.get("rawLink"):
                continue
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append((name, spec, section == "optional"))
    return widgets


def extra_slots(name: str, spec: list) -> int:
    """Frontend-only values stored after this widget's own value."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if options.get("control_after_generate") or (kind == "INT" and name in SEED_NAMES):
        return 1
    if options.get("image_upload") or options.get("video_upload") or options.get("audio_upload"):
        return 1
    return 0


def _widget_values(node: dict, definition: dict) -> dict:
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some nodes save a name -> value mapping
        return dict(values)
    widgets = widget_inputs(definition)
    expected = sum(1 + extra_slots(name, spec) for name, spec, _ in widgets)
    if len(values) != expected:  # exact: a missing value in the middle would shift every later one
        names = ", ".join(name + (" (+control)" if extra_slots(name, spec) else "") for name, spec, _ in widgets)
        raise WorkflowError(f"{node_label(node)}: {len(values)} widget values, but the node's definition has "
                            f"{expected} widget slots: {names}")
    result, position = {}, 0
    for name, spec, _ in widgets:
        result[name] = values[position]
        extra = extra_slots(name, spec)
        if extra and spec[0] == "INT" and not isinstance(values[position + 1], str):
            raise WorkflowError(f"{node_label(node)}: after {name!r} the workflow must store the control_after_"
                                f"generate value ({sorted(CONTROL_VALUES)}), got {values[position + 1]!r}")
        position += 1 + extra
    return result


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt {node id: {class_type, inputs, _meta}} of a UI-format workflow."""
    if "nodes" not in workflow or "links" not in workflow:
        raise WorkflowError("not a UI-format workflow (no 'nodes' / 'links'); API-format files need no conversion")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {}
    for link in workflow["links"]:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            links[link[0]] = (link[1], link[2])

    def source(link_id, seen=()):
        """[origin node id, output slot] of a link, through Reroutes; or ("value", v) for a PrimitiveNode."""
        origin_id, slot = links[link_id]
        origin = nodes[origin_id]
        if origin["type"] in PASS_THROUGH and origin_id not in seen:
            upstream = (origin.get("inputs") or [{}])[0].get("link")
            if upstream is None:
                raise WorkflowError(f"{node_label(origin)} has no input")
            return source(upstream, (*seen, origin_id))
        if origin["type"] == "PrimitiveNode":
            return ("value", (origin.get("widgets_values") or [None])[0])
        if origin.get("mode") == BYPASSED:
            raise WorkflowError(f"{node_label(origin)} is bypassed; un-bypass or remove it before converting")
        return [str(origin_id), slot]

    prompt = {}
    for node in workflow["nodes"]:
        kind = node.get("type")
        if kind in FRONTEND_ONLY or kind in PASS_THROUGH or kind == "PrimitiveNode" or node.get("mode") == MUTED:
            continue
        if node.get("mode") == BYPASSED:
            raise WorkflowError(f"{node_label(node)} is bypassed; the converter does not resolve bypassed nodes")
        definition = object_info.get(kind)
        if definition is None:
            raise WorkflowError(f"{node_label(node)}: unknown node type {kind!r} (not in this ComfyUI's "
                                "object_info: a missing custom node?)")
        inputs = _widget_values(node, definition)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            value = source(slot["link"])
            inputs[slot["name"]] = value[1] if isinstance(value, tuple) else value
        required = definition.get("input", {}).get("required", {})
        declared = {**required, **(definition.get("input", {}).get("optional") or {})}
        missing = [name for name in required if name not in inputs]
        if missing:
            raise WorkflowError(f"{node_label(node)}: required input(s) {missing} not connected")
        unknown = [name for name in inputs if name not in declared]
        if unknown:
            raise WorkflowError(f"{node_label(node)}: input(s) {unknown} are not in the node's definition")
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs,
                                   "_meta": {"title": node.get("title") or definition.get("display_name", kind)}}
    return prompt


def with_seed(prompt: dict, seed: int) -> dict:
    """A copy of an API prompt in which every sampler draws its noise from ``seed`` (SamplerCustom's
    ``noise_seed``, KSampler's and Few-Step KSampler's ``seed``)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] == "SamplerCustom":
            node["inputs"]["noise_seed"] = seed
        elif node["class_type"] in ("KSampler", "FewStepKSampler"):
            node["inputs"]["seed"] = seed
    return prompt


def object_info_of(node_class_mappings: dict) -> dict:
    """object_info for classic node classes in process (the subset of fields the converter reads)."""
    info = {}
    for name, cls in node_class_mappings.items():
        try:
            types = cls.INPUT_TYPES()
        except Exception:  # noqa: BLE001  (a broken third-party node must not stop the conversion of others)
            continue
        info[name] = {"input": {k: types[k] for k in ("required", "optional") if k in types},
                      "input_order": {k: list(types[k]) for k in ("required", "optional") if k in types}}
    return info


def main(argv=None) -> None:
    import argparse
    import sys
    import urllib.request

    parser = argparse.ArgumentParser(description="UI-format workflow -> API prompt JSON on stdout.")
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI to read /object_info from")
    options = parser.parse_args(argv)
    with urllib.request.urlopen(options.server + "/object_info", timeout=60) as response:
        info = json.load(response)
    try:
        prompt = to_api(json.loads(options.workflow.read_text()), info)
    except WorkflowError as error:
        sys.exit(f"{options.workflow}: {error}")
    json.dump(prompt, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
