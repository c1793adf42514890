"""Publishing to the Comfy registry: what the published package holds, the registry's lint, the publish workflow.

The registry's publish step is comfy-cli's `comfy node publish` (run by Comfy-Org/publish-node-action): it packs
the git-tracked files minus the `.comfyignore` patterns (gitignore syntax, matched with pathspec's gitwildmatch)
plus `[tool.comfy] includes`, after `ruff check . -q --select S102,S307,E702` (comfy-cli
comfy_cli/command/custom_nodes/command.py and file_utils.py, read at e805d26, Aug 2026). The same rules are
applied here, so a change that would ship tests or miss a runtime file, or add an exec/eval, fails here first.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import COMFY, REPO

REGISTRY_RULES = "S102,S307,E702"  # exec, eval, several statements on one line
PLACEHOLDER = "comfyui-fewstep/ComfyUI-FewStep"  # pyproject's declared placeholder repository
RUNTIME_FOLDERS = ("nodes/", "fewstep/", "js/", "workflows/")
RUNTIME_FILES = ("__init__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE", "icon.svg")
NOT_PUBLISHED = ("tests/", "benchmarks/", "scripts/", ".ci/", ".github/", "artifacts/")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the registry packs git-tracked files")
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


def published_files() -> list[str]:
    """The files `comfy node publish` would pack, by comfy-cli's rules."""
    import pathspec

    lines = (REPO / ".comfyignore").read_text().splitlines()
    spec = pathspec.PathSpec.from_lines("gitwildmatch", [x.strip() for x in lines
                                                         if x.strip() and not x.lstrip().startswith("#")])
    includes = [i.strip("/") for i in pyproject()["tool"]["comfy"].get("includes", [])]

    def forced(path):
        return any(path == i or path.startswith(i + "/") for i in includes)

    return [f for f in tracked_files() if forced(f) or not spec.match_file(f)]


def test_published_package_holds_the_runtime_files_and_no_tooling():
    files = published_files()
    tracked = tracked_files()
    runtime = [f for f in tracked if f.startswith(RUNTIME_FOLDERS)]
    assert {"nodes/__init__.py", "fewstep/__init__.py", "js/fewstep_sigmas.js"} <= set(runtime)
    assert [f for f in runtime if f.endswith(".json") and f.startswith("workflows/")], "no workflows"
    missing = [f for f in [*RUNTIME_FILES, *runtime] if f not in files]
    assert not missing, f"runtime files left out of the package by .comfyignore: {missing}"
    shipped_tooling = [f for f in files if f.startswith(NOT_PUBLISHED) or "__pycache__" in f
                       or f.endswith((".pyc", ".safetensors", ".ckpt"))]
    assert not shipped_tooling, f"published but not needed at run time: {shipped_tooling}"
    assert any(f.startswith("tests/") for f in tracked) and any(f.startswith("benchmarks/") for f in tracked)


def declared_nodes() -> list[str]:
    """The node ids nodes/__init__.py declares in NODE_CLASS_MAPPINGS (read from the source, not imported)."""
    tree = ast.parse((REPO / "nodes" / "__init__.py").read_text())
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", "") == "NODE_CLASS_MAPPINGS"
                                                     for t in statement.targets):
            return [key.value for key in statement.value.keys]
    raise AssertionError("nodes/__init__.py declares no NODE_CLASS_MAPPINGS")


def test_published_package_alone_loads_in_comfyui(tmp_path):
    """Only the published files, as a custom node folder, loaded by ComfyUI's own loader in a fresh process:
    every node and the front-end folder are there (nothing needed at run time is left out)."""
    pack = tmp_path / "custom_nodes" / "ComfyUI-FewStep"
    for name in published_files():
        (pack / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, pack / name)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO / "scripts")!r})
        from comfyui_runtime import import_comfy, run_maybe_async
        import_comfy()
        import nodes
        assert run_maybe_async(nodes.load_custom_node({str(pack)!r})) is not False
        ours = sorted(k for k, v in nodes.NODE_CLASS_MAPPINGS.items()
                      if {str(pack)!r} in (sys.modules[v.__module__].__file__ or ""))
        print("NODES", ",".join(ours))
        print("WEB", any(os.path.samefile(d, {str(pack / "js")!r}) for d in nodes.EXTENSION_WEB_DIRS.values()))
    """)
    env = {**os.environ, "COMFYUI_PATH": str(COMFY)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"NODES {','.join(sorted(declared_nodes()))}" in result.stdout, result.stderr
    assert "WEB True" in result.stdout


def ruff(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "ruff", "check", "-q", "--no-cache", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_registry_lint_passes_on_the_published_files_and_the_whole_checkout():
    python = [f for f in published_files() if f.endswith(".py")]
    assert "nodes/freeu.py" in python and "fewstep/schedule.py" in python
    on_published = ruff("--select", REGISTRY_RULES, *python)
    assert on_published.returncode == 0 and not on_published.stdout.strip(), on_published.stdout
    as_the_registry = ruff(".", "--select", REGISTRY_RULES)  # comfy-cli lints the whole checkout
    assert as_the_registry.returncode == 0 and not as_the_registry.stdout.strip(), as_the_registry.stdout


def test_registry_lint_catches_what_it_bans(tmp_path):
    (tmp_path / "bad.py").write_text('exec("x = 1")\ny = eval("1 + 1")\na = 1; b = 2\n')
    result = ruff("--select", REGISTRY_RULES, "bad.py", cwd=tmp_path)
    assert result.returncode == 1
    assert {"S102", "S307", "E702"} <= set(re.findall(r"\b(S102|S307|E702)\b", result.stdout)), result.stdout


def test_publish_workflow_publishes_on_a_version_change_from_the_owner_only():
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "publish_action.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert trigger["push"]["branches"] == ["main"] and trigger["push"]["paths"] == ["pyproject.toml"]
    assert workflow["permissions"]["issues"] == "write"  # the action files an issue on lint findings
    (job,) = workflow["jobs"].values()
    owner = pyproject()["project"]["urls"]["Repository"].split("/")[3]
    assert job["if"].replace(" ", "") == "${{github.repository_owner=='%s'}}" % owner  # forks never publish
    steps = job["steps"]
    guard = next(i for i, s in enumerate(steps) if "scripts/check_publishable.py" in s.get("run", ""))
    publish = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("Comfy-Org/publish-node-action@"))
    assert guard < publish
    assert steps[publish]["with"]["personal_access_token"] == "${{ secrets.REGISTRY_ACCESS_TOKEN }}"


def check_publishable(tmp_path, text, repository):
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_REPOSITORY"}
    if repository:
        env["GITHUB_REPOSITORY"] = repository
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_publishable.py"), str(path)],
                          capture_output=True, text=True, env=env)


def test_publish_guard_refuses_the_placeholder_and_any_other_repository(tmp_path):
    text = (REPO / "pyproject.toml").read_text()
    assert pyproject()["tool"]["fewstep"]["repository-is-placeholder"] is True
    assert pyproject()["project"]["urls"]["Repository"] == f"https://github.com/{PLACEHOLDER}"

    today = check_publishable(tmp_path, text, PLACEHOLDER)  # even run from a repository of that name
    assert today.returncode == 1 and "placeholder" in today.stderr, today.stderr

    real = re.sub(r"\n\[tool\.fewstep\]\n.*?(?=\n\[|\Z)", "", text, flags=re.S)  # what a maintainer does
    assert "[tool.fewstep]" not in real and "[tool.ruff]" in real
    allowed = check_publishable(tmp_path, real, PLACEHOLDER)
    assert allowed.returncode == 0, allowed.stderr
    fork = check_publishable(tmp_path, real, "someone/ComfyUI-FewStep")
    assert fork.returncode == 1 and "is not this repository" in fork.stderr
    outside_actions = check_publishable(tmp_path, real, None)
    assert outside_actions.returncode == 1 and "GITHUB_REPOSITORY" in outside_actions.stderr
