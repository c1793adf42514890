"""A custom node pack for tests, the demo and benchmarks: records every model evaluation a ComfyUI server makes.

Never part of what users install: it is loaded next to ComfyUI-FewStep only in the servers that the
tests, the demo and the benchmarks start. It wraps
``comfy.model_base.BaseModel.apply_model`` (the one call every sampler makes to run the UNet / DiT)
and keeps, per prompt id, the sigmas of each call, the latent shape and the time; ``GET
/fewstep_probe/calls/{prompt_id}`` returns them and ``GET /fewstep_probe/memory`` the server's
resident memory. Counting calls inside the server cannot be fooled by progress messages or by
what a sampler claims.
"""

import resource
import time

import comfy.model_base
import server
from aiohttp import web

CALLS: dict[str, list[dict]] = {}


def _wrap(original):
    def apply_model(self, x, t, *args, **kwargs):
        prompt_id = getattr(server.PromptServer.instance, "last_prompt_id", None)
        CALLS.setdefault(str(prompt_id), []).append(
            {"sigmas": sorted({round(float(v), 6) for v in t.flatten()}), "shape": list(x.shape),
             "model": type(self).__name__, "time": time.monotonic()})
        return original(self, x, t, *args, **kwargs)

    apply_model.fewstep_probe = True
    return apply_model


if not getattr(comfy.model_base.BaseModel.apply_model, "fewstep_probe", False):
    comfy.model_base.BaseModel.apply_model = _wrap(comfy.model_base.BaseModel.apply_model)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


@server.PromptServer.instance.routes.get("/fewstep_probe/calls/{prompt_id}")
async def calls(request):
    return web.json_response(CALLS.get(request.match_info["prompt_id"], []))


@server.PromptServer.instance.routes.get("/fewstep_probe/memory")
async def memory(request):
    return web.json_response({"rss_kib": _rss_kib(),
                              "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


NODE_CLASS_MAPPINGS = {}
