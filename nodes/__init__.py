"""ComfyUI node classes of the pack; the maths they call lives in ../fewstep."""

from .freeu import TimedFreeU
from .ksampler import FewStepKSampler
from .sampler import FewStepDPMPPSampler
from .sigmas import FewStepSigmas
from .tuner import FewStepScheduleTuner
from .unipc_sampler import FewStepUniPCSampler

NODE_CLASS_MAPPINGS = {
    "FewStepSigmas": FewStepSigmas,
    "FewStepDPMPPSampler": FewStepDPMPPSampler,
    "FewStepUniPCSampler": FewStepUniPCSampler,
    "TimedFreeU": TimedFreeU,
    "FewStepScheduleTuner": FewStepScheduleTuner,
    "FewStepKSampler": FewStepKSampler,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "FewStepSigmas": "Few-Step Sigmas",
    "FewStepDPMPPSampler": "Few-Step DPM++ Sampler",
    "FewStepUniPCSampler": "Few-Step UniPC Sampler",
    "TimedFreeU": "Timed FreeU",
    "FewStepScheduleTuner": "Few-Step Schedule Tuner",
    "FewStepKSampler": "Few-Step KSampler",
}
