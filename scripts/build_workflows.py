"""Write the bundled workflows (workflows/*.json, UI format) from the node definitions of a real ComfyUI.

Sockets, widget order and defaults come from the nodes' own INPUT_TYPES / RETURN_TYPES, so a
workflow cannot drift from the nodes it uses; the recipe numbers come from fewstep/recipes.py.
Run it after changing a node's inputs or a recipe, then scripts/build_thumbnails.py (the template
browser's pictures; a test fails while they show an older workflow), and commit the result:

    python scripts/build_workflows.py            # PINNED ComfyUI (or COMFYUI_PATH)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from comfyui_runtime import REPO  # noqa: E402
from workflow_graph import COLUMNS, GAP, GREEN, PURPLE, SIZES, TITLE, Graph  # noqa: E402

sys.path.insert(0, str(REPO))  # fewstep/ (plain maths) for the recipe numbers
from fewstep.solvers import UNIPC_SOLVERS  # noqa: E402
from fewstep.unipc import auto_order  # noqa: E402

WORKFLOWS = REPO / "workflows"
SD15_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"
# The all-in-one checkpoints ComfyUI's own SD3.5 and Flux examples load with CheckpointLoaderSimple (model, text
# encoders and VAE in one file); a user with separate files swaps the loader for UNETLoader + the CLIP loaders.
SD35_CHECKPOINT = "sd3.5_large_fp8_scaled.safetensors"
FLUX_CHECKPOINT = "flux1-dev-fp8.safetensors"
SD35_CFG = 4.5  # ComfyUI's SD3.5 large example
FLUX_GUIDANCE = 3.5  # Flux dev: distilled guidance through FluxGuidance, cfg 1 (one evaluation per step)
POSITIVE = ("a cozy wooden cabin in a snowy pine forest at dusk, warm light in the windows, "
            "photograph, highly detailed")
NEGATIVE = "blurry, low quality, deformed, watermark, text"
SEED = 42
SD15_CFG = 7.5  # the paper evaluates guidance 5.5 and 7.5
SDXL_CFG = 5.5
# SamplerCustom at the top of column D, VAE Decode under it
CUSTOM_POS = (COLUMNS["D"], 40)
DECODE_POS = (COLUMNS["D"], CUSTOM_POS[1] + SIZES["SamplerCustom"][2] + GAP + TITLE)


def prompts(g: Graph, checkpoint: str):
    """Loader (column A) and the two prompts (column B)."""
    loader = g.node("CheckpointLoaderSimple", (COLUMNS["A"], 140), {"ckpt_name": checkpoint})
    positive = g.node("CLIPTextEncode", (COLUMNS["B"], 40), {"text": POSITIVE}, title="Positive prompt",
                      colors=GREEN)
    negative = g.node("CLIPTextEncode", (COLUMNS["B"], g.below(positive)), {"text": NEGATIVE},
                      title="Negative prompt", size=(400, 120), colors=PURPLE)
    g.connect(loader, "CLIP", positive, "clip")
    g.connect(loader, "CLIP", negative, "clip")
    return loader, positive, negative


def image_prefix(start: str, recipe_name: str) -> str:
    """SaveImage's filename_prefix for a recipe: ``start`` + the name without dots, spaces or dashes."""
    return start + recipe_name.replace(".", "").replace(" ", "_").replace("-", "").lower()


def text_to_image(g: Graph, checkpoint: str, resolution: int, cfg: float, prefix: str, note: str,
                  latent_kind: str = "EmptyLatentImage"):
    """Loader, prompts, empty latent, VAE decode and save: the frame every recipe workflow shares.

    Returns (loader, positive, negative, latent, decode) for the caller to wire a sampler into.
    """
    loader, positive, negative = prompts(g, checkpoint)
    latent = g.node(latent_kind, (COLUMNS["B"], g.below(negative)),
                    {"width": resolution, "height": resolution, "batch_size": 1})
    decode = g.node("VAEDecode", DECODE_POS)
    save = g.node("SaveImage", (COLUMNS["E"], 40), {"filename_prefix": prefix})
    g.connect(loader, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", save, "images")
    lines = -(-len(note) // 100) + note.count("\n")  # about 100 characters a line at width 760
    g.note(note, (COLUMNS["A"], g.below(loader, latent)), size=(760, max(150, 30 + 18 * lines)))
    return loader, positive, negative, latent, decode


def fewstep_sampling(g: Graph, recipe_name: str, model, positive, negative, latent, cfg: float, x=COLUMNS["C"], y=40,
                     denoise: float = 1.0, seed: int = SEED):
    """FewStepSigmas + FewStepDPMPPSampler + (Timed FreeU as the recipe says) + SamplerCustom."""
    from fewstep.recipes import RECIPES

    recipe = RECIPES[recipe_name]
    patched = model
    for f in recipe.freeu:
        freeu = g.node("TimedFreeU", (x, y), {
            "b1": f.b1, "b2": f.b2, "s1": f.s1, "s2": f.s2, "version": "v1",
            "first_step": f.first_step, "last_step": f.last_step})
        g.connect(patched, "MODEL", freeu, "model")
        patched = freeu
        y = g.below(freeu)
    own = {"steps": recipe.steps, "base_steps": recipe.base_steps, "base_rho": recipe.base_rho,
           "end_index": recipe.end_index, "time_rho": recipe.time_rho}  # shown, ignored until recipe = custom
    sigmas = g.node("FewStepSigmas", (x, y), {"recipe": recipe_name, "denoise": denoise, **own})
    g.connect(model, "MODEL", sigmas, "model")
    if recipe.solver in UNIPC_SOLVERS:  # the recipe's UniPC: order auto (by its evaluation count), bh1, AFS or not
        sampler = g.node("FewStepUniPCSampler", (x, g.below(sigmas)), {
            "order": "auto", "variant": "bh1", "afs": recipe.solver == "unipc_afs", "finish": "last_sigma",
            "prediction": "noise"})
    else:
        sampler = g.node("FewStepDPMPPSampler", (x, g.below(sigmas)), {"solver": recipe.solver,
                                                                     "finish": "last_sigma"})
    custom = g.node("SamplerCustom", CUSTOM_POS, {"add_noise": True, "noise_seed": seed, "cfg": cfg},
                    title=f"SamplerCustom ({recipe.steps} model evaluations)")
    for source, output, name in ((patched, "MODEL", "model"), (positive, "CONDITIONING", "positive"),
                                 (negative, "CONDITIONING", "negative"), (sampler, "SAMPLER", "sampler"),
                                 (sigmas, "SIGMAS", "sigmas"), (latent, "LATENT", "latent_image")):
        g.connect(source, output, custom, name)
    return custom


def freeu_text(recipe) -> str:
    if not recipe.freeu:
        return "No FreeU."
    parts = []
    for f in recipe.freeu:
        window = "every step" if (f.first_step, f.last_step) == (1, -1) else (
            f"step {f.first_step}" if f.first_step == f.last_step else
            f"the last {-f.first_step} steps ({f.first_step} to {f.last_step})"
            if f.first_step < 0 and f.last_step == -1 else f"steps {f.first_step}-{f.last_step}")
        parts.append(f"FreeU (b1 {f.b1}, b2 {f.b2}, s1 {f.s1}, s2 {f.s2}) at {window}")
    return "; ".join(parts) + " (Timed FreeU)."


def unipc_note(recipe_name: str, cfg: float) -> str:
    """The Note of a UniPC recipe workflow: the recipe, the solver, AFS and how Timed FreeU counts steps."""
    from fewstep.recipes import RECIPES

    r = RECIPES[recipe_name]
    afs = r.solver == "unipc_afs"
    order = auto_order(r.steps)
    text = (f"{recipe_name} recipe of the F-scheduler (arXiv 2510.02390 v3) for the ORIGINAL "
            f"{recipe_name.split()[0]} checkpoint at {r.resolution}x{r.resolution}: {r.steps} model evaluations with "
            f"Few-Step UniPC Sampler (noise form, bh1, order auto = {order} at {r.steps} evaluations) on an "
            f"early-stopping schedule (n={r.base_steps}, rho={r.base_rho:g}, k={r.end_index}, time rho "
            f"{r.time_rho:g}) that ends at a small non-zero sigma. ")
    if afs:
        text += ("Analytical first step (afs on): the model output at the first sigma is estimated from the pure-"
                 "noise start instead of evaluated, and a step is inserted half way (in timestep space) to the "
                 f"second sigma, so the schedule's {r.steps + 1} sigmas still cost {r.steps} evaluations, the first "
                 "at that midpoint. For txt2img (denoise 1) only. ")
    text += (f"{freeu_text(r)} Steps count model evaluations (step k = the k-th evaluation"
             f"{', step 1 at the midpoint' if afs else ''}); the graph on Few-Step Sigmas shades them.\n"
             f"Pick your checkpoint in the loader and press Queue. Guidance {cfg:g}.")
    return text


def recipe_workflow(definitions, recipe_name: str, checkpoint: str, cfg: float) -> dict:
    from fewstep.recipes import RECIPES

    r = RECIPES[recipe_name]
    if r.solver in UNIPC_SOLVERS:
        note = unipc_note(recipe_name, cfg)
    else:
        note = recipe_note(recipe_name, cfg)
    g = Graph(definitions)
    prefix = image_prefix("fewstep_", recipe_name)
    loader, positive, negative, latent, decode = text_to_image(g, checkpoint, r.resolution, cfg, prefix, note)
    custom = fewstep_sampling(g, recipe_name, loader, positive, negative, latent, cfg)
    g.connect(custom, "output", decode, "samples")
    return g.to_json()


def recipe_note(recipe_name: str, cfg: float) -> str:
    from fewstep.recipes import RECIPES

    r = RECIPES[recipe_name]
    solver = {"dpmpp_1s": "DPM++ 1S", "dpmpp_2m": "DPM++ 2M"}[r.solver]
    return (f"{recipe_name} recipe of 'Hyperparameters are all you need' (arXiv 2510.02390) for the ORIGINAL "
            f"{recipe_name.split()[0]} checkpoint at {r.resolution}x{r.resolution}: {r.steps} model evaluations "
            f"with {solver} on an early-stopping schedule (n={r.base_steps}, rho={r.base_rho:g}, k={r.end_index}, "
            f"time rho {r.time_rho:g}) that ends at a small non-zero sigma. {freeu_text(r)}\n"
            f"Pick your checkpoint in the loader and press Queue. Guidance {cfg:g} as in the paper.")


def ksampler_workflow(definitions, recipe_name: str, checkpoint: str, cfg: float) -> dict:
    """The minimal graph: loader, prompts, empty latent, Few-Step KSampler (the whole recipe), decode, save."""
    from fewstep.recipes import RECIPES

    r = RECIPES[recipe_name]
    solver = {"dpmpp_1s": "DPM++ 1S", "dpmpp_2m": "DPM++ 2M", "unipc": "UniPC (bh1, order auto)",
              "unipc_afs": "UniPC (bh1, order auto) with the analytical first step"}[r.solver]
    paper = ("the F-scheduler (arXiv 2510.02390 v3)" if r.solver in UNIPC_SOLVERS
             else "'Hyperparameters are all you need' (arXiv 2510.02390)")
    note = (f"Few-Step KSampler: the whole {recipe_name} recipe of {paper} in one node, for the ORIGINAL "
            f"{recipe_name.split()[0]} checkpoint at {r.resolution}x{r.resolution}: {r.steps} model evaluations with "
            f"{solver} on the early-stopping schedule and, with freeu = recipe, the recipe's own "
            f"{freeu_text(r).removesuffix(' (Timed FreeU).')}. The graph on the node shows the "
            "schedule and the FreeU steps. The same image, bit for bit, as the five-node graph "
            f"(workflow {'fewstep_sdxl_6step_unipc' if r.resolution == 1024 else 'fewstep_sd15_5step'}); use that "
            "one to change a single part.\n"
            f"Pick your checkpoint in the loader and press Queue. Guidance {cfg:g}.")
    g = Graph(definitions)
    prefix = image_prefix("fewstep_ksampler_", recipe_name)
    loader, positive, negative, latent, decode = text_to_image(g, checkpoint, r.resolution, cfg, prefix, note)
    decode["pos"] = [COLUMNS["D"], 40]
    sampler = g.node("FewStepKSampler", (COLUMNS["C"], 40), {"seed": SEED, "cfg": cfg, "recipe": recipe_name,
                                                             "freeu": "recipe", "denoise": 1.0},
                     colors=GREEN)  # no count in the title: the graph on the node follows the recipe
    for source, output, name in ((loader, "MODEL", "model"), (positive, "CONDITIONING", "positive"),
                                 (negative, "CONDITIONING", "negative"), (latent, "LATENT", "latent_image")):
        g.connect(source, output, sampler, name)
    g.connect(sampler, "output", decode, "samples")
    return g.to_json()


def flow_workflow(definitions, recipe_name: str, checkpoint: str, cfg: float, flux_guidance: float | None) -> dict:
    """Few-Step KSampler with a flow-model recipe (SD3.5, Flux): loader, prompts (Flux: FluxGuidance on the
    positive, cfg 1), EmptySD3LatentImage (16 channels), decode, save. Needs a ComfyUI with these models (0.3.x)."""
    from fewstep.recipes import RECIPES

    r = RECIPES[recipe_name]
    family = recipe_name.split()[0]
    guidance = (f"Flux dev is guidance-distilled: FluxGuidance {flux_guidance:g} on the prompt and cfg 1 (one model "
                "evaluation per step; a cfg above 1 doubles the evaluations)" if flux_guidance is not None
                else f"Guidance (cfg) {cfg:g}, as ComfyUI's SD3.5 example")
    axis = "ModelSamplingFlux: shift 1.15 at 1024x1024" if family == "Flux" else "ModelSamplingSD3: shift 3.0"
    note = (f"Few-Step KSampler with the {recipe_name} recipe, for the ORIGINAL {family} checkpoint at "
            f"{r.resolution}x{r.resolution}: {r.steps} model evaluations with UniPC ({r.variant or 'bh1'}, order "
            f"{r.order or 'auto'}) and the analytical first step on an early-stopping schedule. The paper has no "
            f"recipe for flow-matching models: this one was tuned by the pack's tuner on small proxies of the "
            f"{family} time axis (docs/flow_recipes.md), not on {family} itself, so treat it as a starting point "
            "and tune your own with the Few-Step Schedule Tuner for a model you use often. The schedule is read on "
            f"the model's own time axis ({axis}"
            ", the model's default; change it there and the schedule moves as ComfyUI's schedulers do). No FreeU "
            f"(a DiT has no UNet). {guidance}.\n"
            "Pick your checkpoint in the loader (the all-in-one file with text encoders and VAE) and press Queue.")
    g = Graph(definitions)
    prefix = image_prefix("fewstep_ksampler_", recipe_name)
    loader, positive, negative, latent, decode = text_to_image(g, checkpoint, r.resolution, cfg, prefix, note,
                                                               latent_kind="EmptySD3LatentImage")
    decode["pos"] = [COLUMNS["D"], 40]
    # The model's time axis in the graph, spelled out: SD3.5's shift 3.0 and Flux's shift for 1024 x 1024 are the
    # models' own defaults, so these nodes change nothing; they show the user where the shift lives, and the
    # schedule graph reads its flow axis from them before the first run.
    if flux_guidance is None:
        shift = g.node("ModelSamplingSD3", (COLUMNS["C"], 40), {"shift": 3.0})
    else:
        shift = g.node("ModelSamplingFlux", (COLUMNS["C"], 40), {"max_shift": 1.15, "base_shift": 0.5,
                                                                 "width": r.resolution, "height": r.resolution})
    g.connect(loader, "MODEL", shift, "model")
    conditioning = positive
    y = g.below(shift)
    if flux_guidance is not None:
        conditioning = g.node("FluxGuidance", (COLUMNS["C"], y), {"guidance": flux_guidance})
        g.connect(positive, "CONDITIONING", conditioning, "conditioning")
        y = g.below(conditioning)
    sampler = g.node("FewStepKSampler", (COLUMNS["C"], y), {"seed": SEED, "cfg": cfg, "recipe": recipe_name,
                                                            "freeu": "off", "denoise": 1.0}, colors=GREEN)
    for source, output, name in ((shift, "MODEL", "model"), (conditioning, "CONDITIONING", "positive"),
                                 (negative, "CONDITIONING", "negative"), (latent, "LATENT", "latent_image")):
        g.connect(source, output, sampler, name)
    g.connect(sampler, "output", decode, "samples")
    return g.to_json()


def comparison_workflow(definitions) -> dict:
    """SD1.5 5-step next to ComfyUI's default 20-step DPM++2M Karras, same seed and prompt."""
    note = ("Side by side, same checkpoint, prompt and seed (42; change it in BOTH samplers): top, the SD1.5 "
            "5-step recipe (5 model evaluations: DPM++ 1S on the early-stopping schedule with FreeU); bottom, "
            "ComfyUI's usual 20-step DPM++ 2M Karras (20 evaluations). Both start from the same noise. The queue "
            "panel shows each sampler's time.")
    g = Graph(definitions)
    loader, positive, negative, latent, decode = text_to_image(g, SD15_CHECKPOINT, 512, SD15_CFG, "fewstep_5step",
                                                               note)
    decode["title"] = "VAE Decode (5 steps)"
    custom = fewstep_sampling(g, "SD1.5 5-step", loader, positive, negative, latent, SD15_CFG)
    g.connect(custom, "output", decode, "samples")
    ksampler = g.node("KSampler", (COLUMNS["D"], g.below(decode)),
                      {"seed": SEED, "steps": 20, "cfg": SD15_CFG, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                       "denoise": 1.0}, title="KSampler (20 steps, DPM++ 2M Karras)")
    for source, output, name in ((loader, "MODEL", "model"), (positive, "CONDITIONING", "positive"),
                                 (negative, "CONDITIONING", "negative"), (latent, "LATENT", "latent_image")):
        g.connect(source, output, ksampler, name)
    decode20 = g.node("VAEDecode", (COLUMNS["D"], g.below(ksampler)), title="VAE Decode (20 steps)")
    save = next(n for n in g.nodes if n["type"] == "SaveImage")
    save20 = g.node("SaveImage", (COLUMNS["E"], g.below(save)), {"filename_prefix": "dpmpp_2m_karras_20step"})
    g.connect(ksampler, "LATENT", decode20, "samples")
    g.connect(loader, "VAE", decode20, "vae")
    g.connect(decode20, "IMAGE", save20, "images")
    return g.to_json()


def img2img_workflow(definitions, denoise: float = 0.6) -> dict:
    """Load an image, encode it, and run the SD1.5 5-step recipe with Few-Step Sigmas' denoise."""
    note = (f"img2img with the SD1.5 5-step recipe: Few-Step Sigmas' denoise ({denoise:g}) starts the schedule "
            "lower (t_start = t_end + denoise x (999 - t_end)) and keeps 5 model evaluations and the same end sigma. "
            "Lower denoise keeps more of the input image. Load your image in Load Image; it is scaled to 512x512.")
    g = Graph(definitions)
    loader, positive, negative = prompts(g, SD15_CHECKPOINT)
    image = g.node("LoadImage", (COLUMNS["A"], g.below(loader)), {"image": "example.png"})
    scale = g.node("ImageScale", (COLUMNS["B"], g.below(negative)), {"upscale_method": "lanczos", "width": 512,
                                                                    "height": 512, "crop": "center"})
    encode = g.node("VAEEncode", (COLUMNS["B"], g.below(scale)))
    g.connect(image, "IMAGE", scale, "image")
    g.connect(scale, "IMAGE", encode, "pixels")
    g.connect(loader, "VAE", encode, "vae")
    custom = fewstep_sampling(g, "SD1.5 5-step", loader, positive, negative, encode, SD15_CFG, denoise=denoise)
    decode = g.node("VAEDecode", DECODE_POS)
    save = g.node("SaveImage", (COLUMNS["E"], 40), {"filename_prefix": "fewstep_img2img"})
    g.connect(custom, "output", decode, "samples")
    g.connect(loader, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", save, "images")
    g.note(note, (COLUMNS["A"], g.below(image, encode)), size=(760, 130))
    return g.to_json()


def tuner_workflow(definitions, nfe: int = 5, solver: str = "dpmpp_2m", tuning_size: int = 256) -> dict:
    """Tune a 5-step schedule for the loaded checkpoint, then sample with it."""
    note = (f"Few-Step Schedule Tuner: searches the {nfe}-evaluation schedule that brings DPM++ 2M closest to a "
            f"40-step reference of YOUR checkpoint (LoRAs included) on this prompt, starting from the paper's "
            f"recipe, at {tuning_size}x{tuning_size} for up to time_budget seconds, then samples with it at 512x512. "
            "The result is cached: queueing again with the same inputs does not tune again. To reuse the schedule "
            "elsewhere, paste the tuner's params text into Few-Step Sigmas (recipe custom, input params).")
    g = Graph(definitions)
    loader, positive, negative, latent, decode = text_to_image(g, SD15_CHECKPOINT, 512, SD15_CFG,
                                                               "fewstep_tuned_5step", note)
    small = g.node("EmptyLatentImage", (COLUMNS["B"], g.below(latent)),
                   {"width": tuning_size, "height": tuning_size, "batch_size": 1}, title="Tuning resolution")
    note_node = next(n for n in g.nodes if n["type"] == "Note")
    note_node["pos"][1] = g.below(loader, small)  # under the tuning latent, which comes after it
    tuner = g.node("FewStepScheduleTuner", (COLUMNS["C"], 40), {"cfg": SD15_CFG, "nfe": nfe, "solver": solver},
                   colors=PURPLE)
    for source, output, name in ((loader, "MODEL", "model"), (positive, "CONDITIONING", "positive"),
                                 (negative, "CONDITIONING", "negative"), (small, "LATENT", "latent_image")):
        g.connect(source, output, tuner, name)
    sampler = g.node("FewStepDPMPPSampler", (COLUMNS["C"], g.below(tuner)), {"solver": solver, "finish": "last_sigma"})
    custom = g.node("SamplerCustom", CUSTOM_POS, {"add_noise": True, "noise_seed": SEED, "cfg": SD15_CFG},
                    title=f"SamplerCustom ({nfe} model evaluations)")
    for source, output, name in ((loader, "MODEL", "model"), (positive, "CONDITIONING", "positive"),
                                 (negative, "CONDITIONING", "negative"), (sampler, "SAMPLER", "sampler"),
                                 (tuner, "sigmas", "sigmas"), (latent, "LATENT", "latent_image")):
        g.connect(source, output, custom, name)
    g.connect(custom, "output", decode, "samples")
    return g.to_json()


# file name -> builder; the names are public (users and the template browser see them)
def all_workflows(definitions) -> dict[str, dict]:
    workflows = {
        "fewstep_sd15_5step_ksampler": ksampler_workflow(definitions, "SD1.5 5-step", SD15_CHECKPOINT, SD15_CFG),
        "fewstep_sdxl_6step_unipc_ksampler": ksampler_workflow(definitions, "SDXL 6-step UniPC", SDXL_CHECKPOINT,
                                                               SDXL_CFG),
        "fewstep_sd15_5step": recipe_workflow(definitions, "SD1.5 5-step", SD15_CHECKPOINT, SD15_CFG),
        "fewstep_sd15_6step": recipe_workflow(definitions, "SD1.5 6-step", SD15_CHECKPOINT, SD15_CFG),
        "fewstep_sd15_8step": recipe_workflow(definitions, "SD1.5 8-step", SD15_CHECKPOINT, SD15_CFG),
        "fewstep_sdxl_6step": recipe_workflow(definitions, "SDXL 6-step", SDXL_CHECKPOINT, SDXL_CFG),
        "fewstep_sdxl_8step": recipe_workflow(definitions, "SDXL 8-step", SDXL_CHECKPOINT, SDXL_CFG),
        "fewstep_sdxl_6step_unipc": recipe_workflow(definitions, "SDXL 6-step UniPC", SDXL_CHECKPOINT, SDXL_CFG),
        "fewstep_sdxl_8step_unipc": recipe_workflow(definitions, "SDXL 8-step UniPC", SDXL_CHECKPOINT, SDXL_CFG),
        "fewstep_sd15_6step_unipc": recipe_workflow(definitions, "SD1.5 6-step UniPC", SD15_CHECKPOINT, SD15_CFG),
        "fewstep_sd15_5step_vs_20step": comparison_workflow(definitions),
        "fewstep_sd15_img2img": img2img_workflow(definitions),
        "fewstep_sd15_tune_5step": tuner_workflow(definitions),
    }
    if "EmptySD3LatentImage" in definitions:  # flow models: a ComfyUI with SD3 / Flux (PINNED, March 2024, has none)
        workflows["fewstep_sd35_8step_ksampler"] = flow_workflow(definitions, "SD3.5 8-step", SD35_CHECKPOINT,
                                                                 SD35_CFG, None)
        workflows["fewstep_flux_6step_ksampler"] = flow_workflow(definitions, "Flux 6-step", FLUX_CHECKPOINT, 1.0,
                                                                 FLUX_GUIDANCE)
    return workflows


def definitions_from_server() -> dict:
    """object_info of a real ComfyUI server (COMFYUI_PATH or PINNED) with the pack installed."""
    import tempfile

    from comfyui_server import ComfyServer

    with tempfile.TemporaryDirectory(prefix="fewstep-build-") as workdir, ComfyServer(Path(workdir)) as server:
        return server.object_info()


def main() -> None:
    definitions = definitions_from_server()
    WORKFLOWS.mkdir(exist_ok=True)
    for name, workflow in all_workflows(definitions).items():
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(workflow, indent=1) + "\n")
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
