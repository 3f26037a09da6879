"""environment.yml (for conda users) and pyproject.toml name the same dependencies."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
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


@pytest.mark.slow
def test_a_wheel_from_a_fresh_clone_installs_and_runs(tmp_path):
    """What a user gets from ``pip install``: the committed tree, cloned afresh, built into a
    wheel, installed NON-editable into a new virtualenv, then run from a folder with no
    checkout in sight: import, region pooling through the compiled CPU kernel (built from the
    .cpp shipped in the wheel), and ``python -m tinyspp demo --quick``.

    The new venv reuses the dependencies of the running interpreter (a ``.pth`` line naming its
    site-packages, appended after the venv's own), so no network is needed; tinyspp itself
    comes only from the wheel: the test checks where it was imported from.
    """
    import site
    import sys

    if shutil.which("git") is None:
        pytest.skip("needs git to clone the repository")
    clone, venv, work = tmp_path / "clone", tmp_path / "venv", tmp_path / "work"
    run = lambda *cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True,
                                            timeout=600, **kw)
    run("git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone))
    run(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    purelib = run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "zz_host_deps.pth").write_text("\n".join(deps) + "\n")
    # built by this interpreter (its setuptools knows the PEP 639 license field; the new venv's
    # bundled one may be older), installed by the new venv's own pip
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--wheel-dir", str(tmp_path / "dist"), str(clone))
    wheels = list((tmp_path / "dist").glob("tinyspp-*.whl"))
    assert len(wheels) == 1
    run(py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheels[0]))
    work.mkdir()
    env = {**os.environ, "TINYSPP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ""}
    check = (
        "import numpy as np, tinyspp\n"
        "from pathlib import Path\n"
        "from tinyspp.ops import roi_spp_forward, roi_spp_backward\n"
        f"assert Path(tinyspp.__file__).is_relative_to({str(venv)!r}), tinyspp.__file__\n"
        "x = np.random.default_rng(0).standard_normal((1, 8, 12, 14)).astype(np.float32)\n"
        "rois = np.array([[0, 0, 0, 13, 11], [0, 3, 2, 9, 7]])\n"
        "out, cache = roi_spp_forward(x, rois, impl='cpu')\n"
        "ref, _ = roi_spp_forward(x, rois, impl='xp')\n"
        "assert cache.impl == 'cpu' and np.array_equal(out, ref)\n"
        "assert roi_spp_backward(np.ones_like(out), cache).shape == x.shape\n"
        "print('ok', tinyspp.__version__)\n"
    )
    assert run(py, "-W", "error::UserWarning", "-c", check, cwd=work, env=env).stdout.startswith(
        "ok")
    assert list((tmp_path / "cache").glob("region_max_*.so"))  # compiled from the wheel's .cpp
    demo = run(py, "-m", "tinyspp", "demo", "--quick", cwd=work, env=env)
    assert "report written to" in demo.stdout, demo.stdout[-2000:] + demo.stderr[-2000:]


def test_the_suite_redirects_every_cache_away_from_home():
    """conftest.py points each library's cache or config folder at one temporary folder; imageio
    (through scikit-image) would otherwise create ~/.imageio."""
    import imageio.core

    home = Path.home().resolve()
    for var in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "SCIKIT_LEARN_DATA", "CUPY_CACHE_DIR",
                "IPYTHONDIR", "JUPYTER_CONFIG_DIR", "TINYSPP_CACHE_DIR", "IMAGEIO_USERDIR"):
        assert not Path(os.environ[var]).resolve().is_relative_to(home), var
    assert not Path(imageio.core.appdata_dir("imageio")).resolve().is_relative_to(home)


# The layers of the package (docs/architecture.md): a module may import its own layer and the
# layers below it, never one above. Ranks, lowest first.
LAYERS = {
    "backend": 0, "validate": 1, "gradcheck": 1, "stats": 1, "bins": 2, "kernels": 3, "ops": 4,
    "nn": 5, "data": 5, "viz": 5, "train": 6, "detect": 6, "scale": 7, "grading": 7,
    "__init__": 8, "bench": 9, "apps": 9, "__main__": 10,
}


def _tinyspp_imports(path, package):
    """The tinyspp subpackages/modules one file imports (first name after ``tinyspp.``)."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[1] if n.count(".") else "__init__" for n in names
                if n.split(".")[0] == "tinyspp"}
    return out


def test_imports_flow_one_way():
    """backend <- validate <- bins <- kernels <- ops <- nn <- train/detect <- apps: no module
    imports a layer above its own (the library never imports tinyspp.apps)."""
    wrong = []
    for path in sorted((ROOT / "tinyspp").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts  # ("tinyspp", "ops", "roi", "api")
        package = ".".join(parts[:-1])  # what a relative import is relative to
        layer = parts[1]  # "ops"; "__init__"/"__main__" for tinyspp/__init__.py, __main__.py
        for target in _tinyspp_imports(path, package):
            target = "__init__" if target == "__version__" else target
            if target in LAYERS and target != layer and LAYERS[target] > LAYERS[layer]:
                wrong.append(f"{path.relative_to(ROOT)} imports tinyspp.{target}")
    assert not wrong, wrong
    assert set(LAYERS) >= {p.stem if p.is_file() else p.name
                           for p in (ROOT / "tinyspp").iterdir()
                           if p.suffix == ".py" or (p / "__init__.py").exists()}


def test_only_backend_imports_cupy():
    """One guarded ``import cupy`` in one module (tinyspp/backend.py), as in Chainer/CuPy."""
    import ast

    wrong = []
    for path in sorted((ROOT / "tinyspp").rglob("*.py")):
        if path.relative_to(ROOT).as_posix() == "tinyspp/backend.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            wrong += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n.split(".")[0] in ("cupy", "cupyx")]
    assert not wrong, wrong


def test_gpu_helpers_without_a_device():
    from tinyspp import backend

    if backend.gpu_available():
        pytest.skip("a CUDA device is present: the no-device answers do not apply")
    assert backend.gpu_count() == 0
    with pytest.raises(RuntimeError, match="use_gpu"):
        backend.use_gpu(0)
