"""Headless demo: run a bundled workflow end to end on your checkpoint, next to ComfyUI's 20-step DPM++2M
Karras, and print the wall time and the number of model evaluations of each.

    make demo                                   # SD1.5 5-step, checkpoint found in ComfyUI's models/checkpoints
    make demo DEMO_ARGS="--checkpoint /path/to/model.safetensors --workflow fewstep_sd15_8step"
    make demo DEMO_ARGS="--random-weights --size 256"   # no checkpoint needed: timings and counts only
    .venv/bin/python scripts/demo.py --help

Without --checkpoint and with no checkpoint in ComfyUI's models/checkpoints (a fresh machine), it runs
on a checkpoint of the workflow's architecture with RANDOM weights (scripts/random_checkpoint.py, made
once into ~/.cache/comfyui-fewstep or $FEWSTEP_CACHE), as --random-weights does: the images are then
noise, and only the wall times and the model-evaluation counts mean anything.

It starts ComfyUI (COMFYUI_PATH, or the PINNED runtime the test command installs) with the pack on a
loopback port, posts the workflow to /prompt, waits for the image, then does the same with the
baseline: the same graph, checkpoint, prompt, seed and guidance with a KSampler (20 steps, dpmpp_2m,
karras) in place of the few-step sampler. Model evaluations are counted inside the server by the probe
pack (scripts/eval_probe). Images are written to --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from comfyui_runtime import REPO, comfyui_path  # noqa: E402
from comfyui_server import PROBE_PACK, ComfyServer, PromptFailed, PromptRejected, probe_evaluations  # noqa: E402
from workflow_api import WorkflowError, to_api, with_seed  # noqa: E402

WORKFLOWS = REPO / "workflows"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".sft")
FEWSTEP_NODES = {"FewStepSigmas", "FewStepDPMPPSampler", "TimedFreeU"}
NOISE_PREFIX = "RANDOM-WEIGHTS-noise_"  # file names of images made with random weights say so
RANDOM_SIZES = {"sd15": "about 2 GB", "sdxl": "about 7 GB"}
LABELS = {"sd15": "SD1.5", "sdxl": "SDXL"}  # architecture names as users know them


def find_checkpoint(comfyui: Path, wanted: str) -> Path | None:
    """The workflow's own checkpoint name in ComfyUI's models/checkpoints, else the first checkpoint there."""
    folder = comfyui / "models" / "checkpoints"
    if (folder / wanted).is_file():
        return folder / wanted
    found = sorted(p for p in folder.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    return found[0] if found else None


def architecture(workflow_name: str) -> str:
    """The checkpoint architecture a bundled workflow is made for: "sdxl" or "sd15"."""
    return "sdxl" if "sdxl" in workflow_name else "sd15"


def random_weights_notice(arch: str, when: str) -> str:
    """What the user must know about a run on random weights (printed before and after it)."""
    label = LABELS[arch]
    if when == "before":
        return (f"*** RANDOM WEIGHTS: a full-size {label} checkpoint with random weights, not a model: the images "
                "will be noise;\n*** only the wall times and the model-evaluation counts mean anything. For real "
                "images pass --checkpoint.")
    return (f"*** RANDOM WEIGHTS: the images are noise ({label} architecture, random weights); only the wall times "
            "and\n*** the model-evaluation counts above mean anything. For real images pass --checkpoint.")


def mark_noise(prompt: dict) -> dict:
    """The prompt with every SaveImage file name starting with NOISE_PREFIX."""
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = NOISE_PREFIX + node["inputs"]["filename_prefix"]
    return prompt


def baseline_prompt(prompt: dict) -> dict:
    """The same graph with each SamplerCustom replaced by a 20-step dpmpp_2m / karras KSampler on the model
    that feeds Few-Step Sigmas (no FreeU), same seed, guidance, conditioning, latent and denoise."""
    prompt = json.loads(json.dumps(prompt))
    for node_id, node in list(prompt.items()):
        if node["class_type"] != "SamplerCustom":
            continue
        inputs = node["inputs"]
        sigmas = prompt[inputs["sigmas"][0]]
        if sigmas["class_type"] != "FewStepSigmas":
            continue
        prompt[node_id] = {"class_type": "KSampler", "_meta": {"title": "KSampler (20 steps, DPM++ 2M Karras)"},
                           "inputs": {"model": sigmas["inputs"]["model"], "seed": inputs["noise_seed"], "steps": 20,
                                      "cfg": inputs["cfg"], "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                      "positive": inputs["positive"], "negative": inputs["negative"],
                                      "latent_image": inputs["latent_image"],
                                      "denoise": sigmas["inputs"].get("denoise", 1.0)}}
    used = {value[0] for node in prompt.values() for value in node["inputs"].values() if isinstance(value, list)}
    for node_id in [k for k, v in prompt.items() if v["class_type"] in FEWSTEP_NODES and k not in used]:
        del prompt[node_id]  # the few-step nodes the KSampler no longer needs
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = "baseline_dpmpp_2m_karras_20step"
    return prompt


def run(server: ComfyServer, prompt: dict, label: str, out: Path | None) -> tuple[float, int, list[Path]]:
    """Queue, wait, copy the images to ``out``: (wall seconds, model evaluations, images)."""
    start = time.perf_counter()
    prompt_id = server.queue(prompt)
    entry = server.wait(prompt_id, timeout=3600)
    seconds = time.perf_counter() - start
    images = []
    for path in server.output_images(entry) if out else []:
        target = out / path.name
        shutil.copyfile(path, target)
        images.append(target)
    count = len(probe_evaluations(server, prompt_id))
    print(f"  {label}: {seconds:.2f} s, {count} model evaluations", flush=True)
    return seconds, count, images


def main(argv=None) -> int:
    choices = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", default="fewstep_sd15_5step", choices=choices)
    parser.add_argument("--checkpoint", type=Path, help="a .safetensors / .ckpt file (default: the workflow's "
                        "checkpoint name, or the first checkpoint, in ComfyUI's models/checkpoints)")
    parser.add_argument("--size", type=int, help="width and height in pixels (default: the workflow's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--image", type=Path, help="input image for the img2img workflow")
    parser.add_argument("--out", type=Path, default=Path("fewstep-demo-output"))
    parser.add_argument("--no-baseline", action="store_true", help="skip the 20-step comparison run")
    parser.add_argument("--random-weights", action="store_true", help=(
        "run on a full-size checkpoint of the workflow's architecture with RANDOM weights (made once into "
        "~/.cache/comfyui-fewstep or $FEWSTEP_CACHE: about 2 GB for SD1.5, 7 GB for SDXL). The images are noise; "
        "only the timings and evaluation counts mean anything. The default when no checkpoint is found."))
    options = parser.parse_args(argv)
    if options.random_weights and options.checkpoint:
        parser.error("--random-weights and --checkpoint exclude each other")

    comfyui = comfyui_path()
    workflow = json.loads((WORKFLOWS / f"{options.workflow}.json").read_text())
    wanted = next(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    arch = architecture(options.workflow)
    where = comfyui / "models" / "checkpoints"
    random_weights = options.random_weights
    checkpoint = None if random_weights else options.checkpoint or find_checkpoint(comfyui, wanted)
    if options.checkpoint and not options.checkpoint.is_file():
        print(f"No checkpoint at {options.checkpoint}. Put one (for this workflow: {wanted}, or any "
              f"{LABELS[arch]} checkpoint) in\n  {where}\n"
              "or pass --checkpoint /path/to/model.safetensors (make demo DEMO_ARGS=\"--checkpoint ...\"), "
              "or --random-weights for a timing-only run.", file=sys.stderr)
        return 2
    if checkpoint is None and not random_weights:
        random_weights = True
        print(f"No checkpoint in {where} (for real images put {wanted} or any "
              f"{LABELS[arch]} checkpoint there, or pass --checkpoint).\n"
              "Running the same demo on random weights instead (--random-weights).")
    if random_weights:
        from random_checkpoint import checkpoint_path, random_checkpoint

        print(random_weights_notice(arch, "before"), flush=True)
        if not checkpoint_path(arch).exists():
            print(f"generating the random-weight {arch} checkpoint once ({RANDOM_SIZES[arch]}) into "
                  f"{checkpoint_path(arch).parent} ...", flush=True)
        checkpoint = random_checkpoint(arch)
    options.out.mkdir(parents=True, exist_ok=True)
    print(f"ComfyUI: {comfyui}\ncheckpoint: {checkpoint}{' (RANDOM weights)' if random_weights else ''}\n"
          f"workflow: {options.workflow}")
    with tempfile.TemporaryDirectory(prefix="fewstep-demo-") as workdir:
        print("starting ComfyUI ...", flush=True)
        with ComfyServer(Path(workdir), checkpoints={checkpoint.name: checkpoint}, extra_custom_nodes=[PROBE_PACK],
                         comfyui=comfyui) as server:
            try:
                prompt = to_api(workflow, server.object_info())
            except WorkflowError as error:
                print(f"{options.workflow}: {error}", file=sys.stderr)
                return 1
            for node in prompt.values():
                kind, inputs = node["class_type"], node["inputs"]
                if kind == "CheckpointLoaderSimple":
                    inputs["ckpt_name"] = checkpoint.name
                if options.size and kind in ("EmptyLatentImage", "ImageScale"):
                    inputs["width"] = inputs["height"] = options.size
                if kind == "LoadImage":
                    image = options.image or (comfyui / "input" / inputs["image"])
                    if not image.is_file():
                        print("The img2img workflow needs an input image: pass --image PATH", file=sys.stderr)
                        return 2
                    shutil.copyfile(image, server.input_dir / image.name)
                    inputs["image"] = image.name
            try:
                # a warm-up with another seed loads the models; ComfyUI's cache then serves the loader and the
                # text encoder to both timed runs alike, and the seed change makes the sampler run again
                run(server, with_seed(prompt, options.seed + 1), "warm-up (loads the checkpoint)", None)
                prompt = with_seed(prompt, options.seed)
                if random_weights:
                    mark_noise(prompt)
                seconds, evals, images = run(server, prompt, options.workflow, options.out)
                rows = [(options.workflow, evals, seconds, images)]
                if not options.no_baseline and "vs_20step" not in options.workflow:
                    base = baseline_prompt(prompt)
                    if random_weights:
                        mark_noise(base)
                    b_seconds, b_evals, b_images = run(server, base, "20-step DPM++ 2M Karras", options.out)
                    rows.append(("20-step DPM++ 2M Karras", b_evals, b_seconds, b_images))
            except (PromptRejected, PromptFailed) as error:
                print(f"ComfyUI refused or failed the prompt:\n{error}", file=sys.stderr)
                return 1
    print(f"\n{'run':<32} {'model evaluations':>17} {'wall time':>10}  image")
    for label, evals, seconds, images in rows:
        print(f"{label:<32} {evals:>17} {seconds:>9.2f}s  {', '.join(str(p) for p in images)}")
    if len(rows) == 2:
        print(f"\n{rows[0][0]} is {rows[1][2] / rows[0][2]:.2f}x faster than 20-step DPM++ 2M Karras "
              f"({rows[0][1]} vs {rows[1][1]} model evaluations)")
    if random_weights:
        print("\n" + random_weights_notice(arch, "after"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
