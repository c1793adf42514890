"""Start a real ComfyUI server (``main.py``) with this pack installed, for tests, the demo and benchmarks.

Everything the server writes goes into one work folder: an ``extra_model_paths.yaml`` that adds its
``models/checkpoints`` and ``custom_nodes`` folders, the output / input / temp folders, the user
folder where the ComfyUI version has one, and ``server.log``. The ComfyUI tree itself (COMFYUI_PATH
or PINNED) is not modified, so several servers can share it.

    with ComfyServer(workdir, checkpoints={"model.safetensors": path}) as server:
        prompt_id = server.queue(api_prompt)
        entry = server.wait(prompt_id)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfyui_runtime import REPO, comfyui_path  # noqa: E402

PACK_NAME = "ComfyUI-FewStep"
PROBE_PACK = Path(__file__).resolve().parent / "eval_probe"  # pass in extra_custom_nodes to count evaluations


class PromptRejected(Exception):
    """ComfyUI refused a prompt (HTTP 400 from /prompt); ``error`` is its JSON reply."""

    def __init__(self, error: dict):
        self.error = error
        super().__init__(json.dumps(error, indent=1)[:4000])


class PromptFailed(Exception):
    """A queued prompt ended with an execution error; ``entry`` is its /history entry."""

    def __init__(self, entry: dict):
        self.entry = entry
        super().__init__(json.dumps(entry.get("status", {}), indent=1)[:4000])


def probe_evaluations(server: "ComfyServer", prompt_id: str) -> list[dict]:
    """The model evaluations the probe pack (PROBE_PACK) saw for a prompt: each a dict of its sigmas,
    latent shape, model, time and ``calls``. Consecutive calls at the same sigmas are one evaluation
    (ComfyUI may split a cond / uncond batch into several calls)."""
    groups = []
    for call in server.get_json(f"/fewstep_probe/calls/{prompt_id}"):
        if groups and groups[-1]["sigmas"] == call["sigmas"]:
            groups[-1]["calls"] += 1
        else:
            groups.append({**call, "calls": 1})
    return groups


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM the server when the process that started it dies
    (a killed test run must not leave a server holding gigabytes)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """A ComfyUI server process on a loopback port, with the pack and the given checkpoints."""

    def __init__(self, workdir: Path, *, comfyui: Path | None = None, checkpoints: dict[str, Path] | None = None,
                 extra_custom_nodes: list[Path] = (), args: list[str] = (), startup_timeout: float = 300.0,
                 env: dict[str, str] | None = None):
        self.workdir = Path(workdir).resolve()
        self.comfyui = Path(comfyui) if comfyui else comfyui_path()
        self.checkpoints = dict(checkpoints or {})
        self.extra_custom_nodes = [Path(p).resolve() for p in extra_custom_nodes]
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.env = env or {}
        self.port = None
        self.process = None
        self.client_id = uuid.uuid4().hex

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "output"

    @property
    def input_dir(self) -> Path:
        return self.workdir / "input"

    def _prepare(self) -> list[str]:
        w = self.workdir
        for sub in ("models/checkpoints", "models/diffusion_models", "custom_nodes", "output", "input", "temp", "user"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        for name, path in self.checkpoints.items():
            link = w / "models" / "checkpoints" / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(path).resolve())
        for source in [REPO, *self.extra_custom_nodes]:
            link = w / "custom_nodes" / (PACK_NAME if source == REPO else source.name)
            if not link.exists():
                link.symlink_to(source, target_is_directory=True)
        config = w / "extra_model_paths.yaml"
        config.write_text(f"fewstep_server:\n  base_path: {json.dumps(str(w))}\n"
                          "  checkpoints: models/checkpoints\n  diffusion_models: models/diffusion_models\n"
                          "  unet: models/diffusion_models\n  custom_nodes: custom_nodes\n")
        options = (self.comfyui / "comfy" / "cli_args.py").read_text()
        command = [sys.executable, "-u", str(self.comfyui / "main.py"), "--listen", "127.0.0.1",
                   "--port", str(self.port), "--extra-model-paths-config", str(config),
                   "--output-directory", str(w / "output"), "--input-directory", str(w / "input"),
                   "--temp-directory", str(w / "temp"), "--disable-auto-launch"]
        if "--user-directory" in options:
            command += ["--user-directory", str(w / "user")]
        if "--database-url" in options:
            command += ["--database-url", "sqlite:///:memory:"]
        import torch

        if not torch.cuda.is_available() and "--cpu" not in self.args:
            command.append("--cpu")
        return command + self.args

    def start(self) -> "ComfyServer":
        self.port = free_port()
        command = self._prepare()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get_json("/queue", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ---- HTTP -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, data=None, timeout: float = 60) -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str, timeout: float = 60):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise urllib.error.URLError(f"GET {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def post_json(self, path: str, data, timeout: float = 60) -> tuple[int, object]:
        status, body = self.request("POST", path, data, timeout=timeout)
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    def free_models(self) -> None:
        """Ask the server to unload its models and drop its cached outputs (POST /free; it does so between prompts,
        and the next prompt that needs a model loads it again)."""
        status, reply = self.post_json("/free", {"unload_models": True, "free_memory": True})
        if status != 200:
            raise RuntimeError(f"POST /free: HTTP {status}: {reply}")

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def queue(self, prompt: dict) -> str:
        status, reply = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            raise PromptRejected(reply if isinstance(reply, dict) else {"error": reply, "status": status})
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, check: bool = True) -> dict:
        """The prompt's /history entry once it has finished; PromptFailed on an execution error (check)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}")
            entry = history.get(prompt_id)
            if entry is not None:
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    if check and status.get("status_str") == "error":
                        raise PromptFailed(entry)
                    return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def output_images(self, entry: dict) -> list[Path]:
        """The image files a finished prompt wrote (SaveImage outputs), in node order."""
        files = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                if image.get("type", "output") == "output":
                    files.append(self.output_dir / image.get("subfolder", "") / image["filename"])
        return files


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Start ComfyUI with this pack on a loopback port until Ctrl-C.")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    options = parser.parse_args()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="fewstep-server-"))
    with ComfyServer(workdir, checkpoints={p.name: p for p in options.checkpoint}) as server:
        print(f"ComfyUI at {server.url} (work folder {workdir}); Ctrl-C stops it")
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
