"""Speed: the SD1.5 few-step workflows against the 20-step DPM++2M Karras workflow, on one checkpoint.

    make bench-speed                         (or: python benchmarks/speed.py [--size 256] [--repeats 3])
    python benchmarks/speed.py --quick       (64x64, one repeat, no docs: the smoke test)
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/speed.py

The checkpoint is a full-size SD1.5-architecture checkpoint with RANDOM weights
(scripts/random_checkpoint.py): the speed of a network does not depend on its values.

1. Time to image: the bundled workflows (workflows/fewstep_sd15_{5,6,8}step.json, and the 20-step
   branch of fewstep_sd15_5step_vs_20step.json), converted by scripts/workflow_api.py and queued on
   a real ComfyUI server (scripts/comfyui_server.py) at a reduced resolution. Every workflow runs once
   to warm up (checkpoint load, prompt encoding); then the workflows take turns, each run with a new
   seed, so ComfyUI re-runs sampling, VAE decode and save while the loaded model and encoded prompts
   stay cached, as when a user queues again. Time = the server's own "Prompt executed in" figure.
   UNet calls are counted inside the server (scripts/eval_probe); peak memory is the server's peak
   resident set during that prompt (Linux VmHWM, reset before each prompt).
2. Sampler overhead and FreeU cost, in process with the same checkpoint loaded by
   CheckpointLoaderSimple, through SamplerCustom: the time inside the sampler function minus the
   time inside the UNet (ComfyUI's unet wrapper hook), per step, for our solvers against core
   dpmpp_2m / euler on the same sigmas (equal NFE); and the UNet time per evaluation with no FreeU,
   core FreeU and Timed FreeU (every step).

The modules, each importing only those above it:
    speed_workflows.py    part 1, time to image on a ComfyUI server
    speed_in_process.py   part 2, sampler overhead and FreeU cost in process
    speed_report.py       the tables, verdicts and docs/speed.md
    speed.py              this command line
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from speed_in_process import measure_in_process
from speed_report import machine, markdown, write_docs
from speed_workflows import REPO, time_workflows

sys.path.insert(0, str(REPO / "scripts"))
from comfyui_runtime import comfyui_label  # noqa: E402
from random_checkpoint import random_checkpoint  # noqa: E402


def main(argv=None):
    """The command line: time the workflows, measure in process, print the report, write docs and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None,
                        help="image width = height in pixels (default 64 on CPU, 512 on a GPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds of the workflows (default 3)")
    parser.add_argument("--overhead-repeats", type=int, default=None,
                        help="rounds of the sampler overheads (default 20)")
    parser.add_argument("--quick", action="store_true",
                        help="the smoke test: 64x64, one round, samplers cut to 1-2 UNet calls, no docs")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/speed.md")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads, here and in the server (default 1: on a busy machine more are slower)")
    parser.add_argument("--workdir", type=Path, help="the server's work folder (default: a temporary one)")
    options = parser.parse_args(argv)
    options.size = options.size or (512 if torch.cuda.is_available() and not options.quick else 64)
    options.repeats = options.repeats or (1 if options.quick else 3)
    options.overhead_repeats = options.overhead_repeats or (3 if options.quick else 20)
    options.patch_repeats = 5 if options.quick else 50
    if options.size % 64:
        parser.error(f"--size must be a multiple of 64 (the UNet downsamples the latent 3 times), got {options.size}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on kill
    torch.set_num_threads(options.threads)
    began = time.perf_counter()
    checkpoint = random_checkpoint("sd15")
    label = comfyui_label()
    print(f"# Speed on {label}, {machine()}, {options.size}x{options.size}")
    with tempfile.TemporaryDirectory(prefix="fewstep-speed-server-") as scratch:
        timings = time_workflows(checkpoint, options.size, options.repeats, options.workdir or Path(scratch),
                                 options.threads, options.quick)
    # After the server has stopped, so only one copy of the model is in memory.
    overheads, unet, patches = measure_in_process(checkpoint, options.size, options.repeats,
                                                  options.overhead_repeats, options.patch_repeats)
    text = markdown(label, options, timings, overheads, unet, patches, time.perf_counter() - began)
    print("\n" + text)
    if options.json:
        options.json.write_text(json.dumps({
            "label": label, "size": options.size, "text": text,
            "workflows": {k: vars(v) for k, v in timings.items()},
            "overheads": {k: {"nfe": v.nfe, "seconds": v.seconds, "per_step": v.per_step}
                          for k, v in overheads.items()},
            "unet_seconds": unet, "patch_seconds": patches}, indent=1))
    if not (options.quick or options.no_docs):
        print(f"wrote {write_docs(label, text)}")
    return timings, overheads, unet, patches


if __name__ == "__main__":
    main()
