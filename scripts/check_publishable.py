"""Refuse to publish to the Comfy registry while pyproject.toml's URLs are not this repository's.

    python3 scripts/check_publishable.py [path/to/pyproject.toml]

Run by .github/workflows/publish_action.yml before the registry's publish step, with GITHUB_REPOSITORY
(owner/name) set by GitHub Actions. Exit status 0: publishable; 1: refused, with the reason.
Refused while
- [tool.fewstep] repository-is-placeholder is true (the URLs name a repository that does not exist yet);
- [project.urls] Repository is not https://github.com/$GITHUB_REPOSITORY (a fork, or URLs not updated);
- [tool.comfy] Icon is not served from that repository, or PublisherId / version are empty.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def problems(pyproject: dict, github_repository: str | None) -> list[str]:
    """Why this pyproject must not be published from ``github_repository`` (owner/name); empty if it may."""
    found = []
    project = pyproject.get("project", {})
    comfy = pyproject.get("tool", {}).get("comfy", {})
    repository = project.get("urls", {}).get("Repository", "")
    if pyproject.get("tool", {}).get("fewstep", {}).get("repository-is-placeholder", False):
        found.append(f"pyproject.toml declares its repository URL {repository} a placeholder "
                     "([tool.fewstep] repository-is-placeholder = true): put the real URLs, Icon and PublisherId "
                     "in pyproject.toml, then delete its [tool.fewstep] table")
    if not github_repository:
        found.append("GITHUB_REPOSITORY is not set: run this in the GitHub Actions workflow")
    else:
        expected = f"https://github.com/{github_repository}"
        if repository.rstrip("/").lower() != expected.lower():
            found.append(f"[project.urls] Repository = {repository!r} is not this repository ({expected})")
        icon_prefix = f"https://raw.githubusercontent.com/{github_repository}/".lower()
        if not str(comfy.get("Icon", "")).lower().startswith(icon_prefix):
            found.append(f"[tool.comfy] Icon = {comfy.get('Icon')!r} is not served from {github_repository}")
    if not comfy.get("PublisherId"):
        found.append("[tool.comfy] PublisherId is empty")
    if not project.get("version"):
        found.append("[project] version is empty")
    return found


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else PYPROJECT
    with open(path, "rb") as file:
        pyproject = tomllib.load(file)
    found = problems(pyproject, os.environ.get("GITHUB_REPOSITORY"))
    if found:
        print("Not publishing to the Comfy registry:\n" + "\n".join(f"- {p}" for p in found), file=sys.stderr)
        return 1
    print(f"{path.name}: version {pyproject['project']['version']} may be published from "
          f"{os.environ['GITHUB_REPOSITORY']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
