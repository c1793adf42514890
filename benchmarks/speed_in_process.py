"""Speed, part 2: sampler overhead and FreeU cost, in process, on the checkpoint CheckpointLoaderSimple loads.

Through SamplerCustom: the time inside the sampler function with the UNet call skipped, per step, for the
pack's solvers against core dpmpp_2m / euler / uni_pc on the same sigmas (equal NFE); the UNet time per
evaluation with no FreeU, core FreeU and Timed FreeU; and the FreeU patches alone, replayed on recorded
decoder features.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from speed_workflows import CHECKPOINT_NAME, REPO

sys.path.insert(0, str(REPO / "scripts"))
from comfyui_runtime import import_comfy, load_pack  # noqa: E402


@dataclass
class SamplerOverhead:
    """Times inside one sampler function with the UNet call skipped, over rounds."""

    label: str
    nfe: int
    seconds: list[float] = field(default_factory=list)  # inside the sampler function, UNet skipped

    @property
    def per_step(self) -> float:
        """Median seconds per model evaluation."""
        return statistics.median(self.seconds) / self.nfe


def load_comfy():
    """Import ComfyUI under test and load the pack: (nodes, custom sampler nodes, FreeU nodes, pack)."""
    import_comfy()
    from comfy_extras import nodes_custom_sampler, nodes_freelunch

    import nodes

    return nodes, nodes_custom_sampler, nodes_freelunch, load_pack()


def measure_in_process(checkpoint: Path, size: int, repeats: int, overhead_repeats: int, patch_repeats: int,
                       log=print):
    """(sampler overheads, UNet seconds per evaluation and FreeU patch seconds per evaluation for each FreeU
    variant), on the loaded checkpoint."""
    nodes, custom, freelunch, pack = load_comfy()
    import folder_paths
    mappings = pack.NODE_CLASS_MAPPINGS
    with tempfile.TemporaryDirectory(prefix="fewstep-speed-") as folder, torch.inference_mode():
        os.symlink(checkpoint, os.path.join(folder, CHECKPOINT_NAME))
        folder_paths.add_model_folder_path("checkpoints", folder)
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_NAME)[:3]
        positive = nodes.CLIPTextEncode().encode(clip, "a cozy wooden cabin in a snowy forest, photograph")[0]
        negative = nodes.CLIPTextEncode().encode(clip, "blurry, low quality")[0]
        empty = nodes.EmptyLatentImage().generate(size, size, 1)[0]
        sigmas = {name: mappings["FewStepSigmas"]().get_sigmas(
            model, recipe=name, denoise=1.0, steps=5, base_steps=8, base_rho=5.0, end_index=6, time_rho=1.2)[0]
            for name in ("SD1.5 5-step", "SD1.5 8-step", "SD1.5 8-step UniPC", "SDXL 6-step UniPC")}
    ours = {s: mappings["FewStepDPMPPSampler"]().get_sampler(s, "last_sigma")[0] for s in ("dpmpp_1s", "dpmpp_2m")}
    unipc = mappings["FewStepUniPCSampler"]()
    ours["unipc"] = unipc.get_sampler("auto", "bh1", False, "last_sigma", "noise")[0]
    ours["unipc_afs"] = unipc.get_sampler("auto", "bh1", True, "last_sigma", "noise")[0]
    core = {s: custom.KSamplerSelect().get_sampler(s)[0] for s in ("dpmpp_2m", "euler", "uni_pc")}

    def sample(patched, sampler, schedule):
        with torch.inference_mode():
            out = custom.SamplerCustom().sample(patched, True, 7, 7.5, positive, negative, sampler, schedule,
                                                empty)[0]["samples"]
        if not torch.isfinite(out).all():
            raise RuntimeError("non-finite latent")

    # (a) Sampler overhead: everything SamplerCustom's sampler function does per step (our solver or
    # core's, ComfyUI's guidance and batching, callbacks) with the UNet call itself skipped, so the
    # UNet's time and its noise drop out. The skipped call returns a zero prediction.
    skipped = model.clone()
    skipped.set_model_unet_function_wrapper(lambda apply_model, args: torch.zeros_like(args["input"]))
    cases = {  # label: (sampler, sigmas)
        "ours dpmpp_2m": (ours["dpmpp_2m"], "SD1.5 8-step"),
        "core dpmpp_2m": (core["dpmpp_2m"], "SD1.5 8-step"),
        "ours dpmpp_1s": (ours["dpmpp_1s"], "SD1.5 5-step"),
        "core euler": (core["euler"], "SD1.5 5-step"),
        # UniPC: ours (order auto = 2 at 8 evaluations; AFS at 6) against core uni_pc (order 3) on the same sigmas
        "ours unipc": (ours["unipc"], "SD1.5 8-step UniPC"),
        "core uni_pc": (core["uni_pc"], "SD1.5 8-step UniPC"),
        "ours unipc_afs": (ours["unipc_afs"], "SDXL 6-step UniPC"),
        "core uni_pc, 6 steps": (core["uni_pc"], "SDXL 6-step UniPC"),
    }
    overheads = {label: SamplerOverhead(f"{label}, {s} sigmas", len(sigmas[s]) - 1) for label, (_, s) in cases.items()}
    timed_samplers = {}
    for label, (sampler, _) in cases.items():
        timed, inner = copy.copy(sampler), sampler.sampler_function

        def sampler_function(*args, _inner=inner, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                overheads[_label].seconds.append(time.perf_counter() - start)

        timed.sampler_function = sampler_function
        timed_samplers[label] = timed
    for repeat in range(overhead_repeats + 1):  # the first round warms up
        for label, (_, schedule) in cases.items():
            sample(skipped, timed_samplers[label], sigmas[schedule])
        if repeat == 0:
            for o in overheads.values():
                o.seconds.clear()
    log(f"  sampler overheads: {overhead_repeats} rounds done")

    # (b) UNet time per evaluation with each FreeU variant, one evaluation per run (two sigmas),
    # the variants taking turns. On a busy CPU this is noisy at the percent level, so (c) times the
    # patches alone.
    freeu = (1.1, 1.1, 0.9, 0.2)
    variants = {
        "no FreeU": model,
        "core FreeU": freelunch.FreeU().patch(model, *freeu)[0],
        "Timed FreeU (every step)": mappings["TimedFreeU"]().patch(model, *freeu, "v1", 1, -1, 0.0, 1.0)[0],
        "Timed FreeU (steps 2..4)": mappings["TimedFreeU"]().patch(model, *freeu, "v1", 2, 4, 0.0, 1.0)[0],
    }
    whole = ("no FreeU", "core FreeU", "Timed FreeU (every step)")  # a 1-step run is outside the 2..4 window
    per_eval = {name: [] for name in whole}
    timed_models = {}
    for name in whole:
        timed = variants[name].clone()

        def unet(apply_model, args, _name=name):
            start = time.perf_counter()
            out = apply_model(args["input"], args["timestep"], **args["c"])
            per_eval[_name].append(time.perf_counter() - start)
            return out

        timed.set_model_unet_function_wrapper(unet)
        timed_models[name] = timed
    names = list(whole)
    for repeat in range(repeats + 1):  # the first round warms up
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            sample(timed_models[name], ours["dpmpp_1s"], sigmas["SD1.5 5-step"][2:4])
        if repeat == 0:
            for times in per_eval.values():
                times.clear()
        else:
            log(f"  UNet evaluations: round {repeat}/{repeats} done")

    # (c) The patches alone, per UNet evaluation: record the decoder features (h, hsp) and the
    # options each output-block patch receives during one real evaluation at step 3 of the 5-step
    # recipe, then replay them through each variant's patches.
    recorded, step = [], []
    recorder = model.clone()
    recorder.set_model_output_block_patch(
        lambda h, hsp, options: (recorded.append((len(step), h.clone(), hsp.clone(), dict(options))), (h, hsp))[1])
    recorder.set_model_unet_function_wrapper(
        lambda apply_model, args: (step.append(1), apply_model(args["input"], args["timestep"], **args["c"]))[1])
    sample(recorder, ours["dpmpp_1s"], sigmas["SD1.5 5-step"][:4])  # steps 1..3 of the recipe
    blocks = [(h, hsp, options) for index, h, hsp, options in recorded if index == 3]
    patch_cost = {}
    for name, variant in variants.items():
        patches = variant.model_options.get("transformer_options", {}).get("patches", {}).get("output_block_patch", [])
        times = []
        for _ in range(patch_repeats + 1):
            inputs = [(h.clone(), hsp.clone(), {**options, "sigmas": options["sigmas"].clone()})
                      for h, hsp, options in blocks]  # fresh tensors: core FreeU scales h in place
            start = time.perf_counter()
            with torch.inference_mode():
                for h, hsp, options in inputs:
                    for patch in patches:
                        h, hsp = patch(h, hsp, options)
            times.append(time.perf_counter() - start)
        patch_cost[name] = statistics.median(times[1:])
    log(f"  FreeU patches: {patch_repeats} replays of {len(blocks)} decoder blocks done")
    return overheads, {name: statistics.median(times) for name, times in per_eval.items()}, patch_cost
