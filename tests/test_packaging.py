"""environment.yml (for conda users) and pyproject.toml name the same dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_parses_and_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "tinyspp" and "conda-forge" in env["channels"]
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(d) for d in dep["pip"]}
        else:
            conda.add(_name(dep))
    conda -= {"python", "pip"}

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    runtime = {_name(d) for d in meta["dependencies"]}
    wanted = runtime | {_name(d) for k in ("dev", "notebooks") for d in extras[k]}
    assert conda == wanted, f"conda-only: {conda - wanted}, pyproject-only: {wanted - conda}"
    assert pip == {_name(d) for d in extras["gpu"]} == {"cupy-cuda12x"}


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
