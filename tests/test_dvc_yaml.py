"""dvc.yaml lists what each stage really uses, so `dvc repro` reruns a stage exactly when its inputs change.

Code: every project module a stage imports, transitively, is among its deps (a folder dep covers the files
under it). Data: a stage depends on the data that params.yaml names (`${dataset.data_folder}` ...), not on
the whole `data` folder, unless dvc.yaml says on that line why it cannot.
"""

from __future__ import annotations

import ast
import re
import shutil
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("deuterium", "stages", "serving", "flows")
DVC_YAML = REPO / "dvc.yaml"

# Code a stage runs that no import of its module reaches: stages/package.py builds the bento of
# serving/bentofile.yaml, whose service is serving/service.py (named in deuterium/packaging.py as a path).
EXTRA_ROOTS = {"package": ["serving.service"]}
EXTRA_FILES = {"package": ["serving/bentofile.yaml"]}

# The dataset keys (and prepare.source) each stage reads, from its own code; checked against that code below.
# `data_folder` stands for the files the dataframes name (data_folder_test falls back to it).
READS = {
    "settings": set(),
    "prepare": {"source"},
    "validate": {
        "train_dataframe",
        "validation_dataframe",
        "test_dataframe",
        "unlabeled_dataframe",
        "data_folder",
        "data_folder_test",
    },
    "split": {"train_dataframe", "validation_dataframe", "data_folder"},
    "train": {"data_folder"},
    "pseudo_label": {"unlabeled_dataframe", "data_folder"},
    "evaluate": {"test_dataframe", "data_folder_test", "data_folder"},
    "export": {"test_dataframe", "data_folder_test", "data_folder"},
    "package": set(),
}
# Where the stage's code names each key it reads (the stage module, or the library function it calls).
READ_IN = {
    "validate": "deuterium/validation.py",
    "split": "deuterium/splitting.py",
    "train": "deuterium/training.py",
}
# Keys a stage's code names without reading the file: only whether it is null, which `params:` tracks.
NULL_CHECK_ONLY = {"train": {"train_dataframe"}}
# Keys the settings schema allows to be null (or, for prepare.source, to be missing): DVC cannot template
# them (`${key}` of null fails the whole stage), so a stage reading one depends on `data` instead.
NULLABLE = {
    "source",
    "train_dataframe",
    "validation_dataframe",
    "test_dataframe",
    "unlabeled_dataframe",
    "data_folder_test",
}


def stages() -> dict:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


def dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def module_file(name: str) -> Path | None:
    """The file of project module `name` (a package: its __init__.py), or None if it is not a module."""
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(path: Path) -> set[str]:
    """Dotted names of the modules `path` imports (absolute; `from a import b` gives a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(REPO)
    package = list(rel.parent.parts)  # the package `from . import x` is relative to
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_type_checking(node)
        for n in ast.walk(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (  # importlib.import_module("deuterium.x") with a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return {n for n in names if n.split(".")[0] in PROJECT_PACKAGES}


def _files_of(name: str) -> set[Path]:
    """The files importing `name` runs: each enclosing package's __init__.py and the module itself."""
    parts = name.split(".")
    files = set()
    for i in range(1, len(parts) + 1):
        path = module_file(".".join(parts[:i]))
        if path is not None:
            files.add(path)
    return files


@cache
def code_of(module: str) -> frozenset[Path]:
    """Every project file that running `module` imports, following project imports recursively."""
    seen: set[Path] = set()
    todo = list(_files_of(module))
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            todo += _files_of(name) - seen
    return frozenset(seen)


def covered(path: str, deps: list[str]) -> bool:
    path = path.rstrip("/")
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


STAGE_NAMES = list(stages())


def test_every_stage_has_its_own_module():
    for name in STAGE_NAMES:
        assert (REPO / "stages" / f"{name}.py").is_file(), f"stage {name}: no stages/{name}.py"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_deps_cover_the_code_it_imports(name):
    deps = dep_paths(stages()[name])
    roots = [f"stages.{name}", *EXTRA_ROOTS.get(name, [])]
    needed = {p.relative_to(REPO).as_posix() for root in roots for p in code_of(root)}
    needed |= set(EXTRA_FILES.get(name, []))
    missing = sorted(p for p in needed if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {name!r} imports but does not depend on: {', '.join(missing)}"


def test_the_import_walk_finds_packages_and_their_inits():
    files = {p.relative_to(REPO).as_posix() for p in code_of("stages.train")}
    assert {
        "stages/__init__.py",
        "stages/train.py",
        "deuterium/__init__.py",
        "deuterium/config.py",
        "deuterium/cli.py",
    } <= files
    assert "deuterium/problems/__init__.py" in files


# ---- data ----------------------------------------------------------------------------------------------


def test_reads_table_matches_the_code():
    """A key the table says a stage reads is named in its code, and a dataset key named there is in the table."""
    keys = set().union(*READS.values()) - {"source"}
    for name, reads in READS.items():
        source = (REPO / "stages" / f"{name}.py").read_text()
        if name in READ_IN:
            source += (REPO / READ_IN[name]).read_text()
        named = {k for k in keys if re.search(rf"\b{k}\b", source)}
        if "data_folder_test" in named:
            named.add("data_folder")  # data_folder_test null: the data_folder
        if re.search(r"\btest_data_folder\b", source):
            named |= {"data_folder_test", "data_folder"}
        if re.search(r"\bfiles\(", source):
            named.add("data_folder")  # problem.files(frame, exp): the frame's files in data_folder
        named -= NULL_CHECK_ONLY.get(name, set())
        assert named == reads - {"source"}, (
            f"stage {name}: READS says {sorted(reads)}, its code names {sorted(named)}"
        )
    assert "source" in (REPO / "deuterium" / "prepare.py").read_text()


def data_line_comments() -> dict[str, str]:
    """stage -> the comment on its `- data` dep line in dvc.yaml ('' when there is none)."""
    found, stage = {}, None
    for line in DVC_YAML.read_text().splitlines():
        if m := re.match(r"^  (\w+):\s*$", line):
            stage = m.group(1)
        if m := re.match(r"^\s*- data/?\s*(#\s*(.*))?$", line):
            found[stage] = (m.group(2) or "").strip()
    return found


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_data_deps_are_the_data_it_reads(name):
    deps = dep_paths(stages()[name])
    reads = READS[name]
    if "data_folder" in reads:
        assert "${dataset.data_folder}" in deps, (
            f"stage {name!r} reads data_folder's files: add ${{dataset.data_folder}}"
        )
    for key in reads - NULLABLE - {"data_folder"}:
        assert f"${{dataset.{key}}}" in deps, f"stage {name!r} reads dataset.{key}: add ${{dataset.{key}}}"
    for dep in deps:
        for key in re.findall(r"\$\{(?:dataset|prepare)\.(\w+)\}", dep):
            assert key in reads, f"stage {name!r} depends on {dep} but does not read it"
            assert key not in NULLABLE, f"stage {name!r}: {dep} may be null, and DVC fails on ${{null}}"
    if "data" in deps:
        assert reads & NULLABLE, (
            f"stage {name!r} depends on the whole data folder but reads no key that may be null"
        )
        assert data_line_comments().get(name), (
            f"stage {name!r}: say on its `- data` line why it needs all of data/"
        )
    elif reads & NULLABLE:
        pytest.fail(
            f"stage {name!r} reads {sorted(reads & NULLABLE)}, which DVC cannot template: depend on data"
        )


CONFIGS = {
    "default": ("params.yaml", {}),
    "mnist_image": ("configs/mnist_image.yaml", {}),
    "no_test_set": ("params.yaml", {"test_dataframe": None}),
}


@pytest.mark.parametrize("config", CONFIGS)
def test_dvc_renders_dvc_yaml_and_its_deps_cover_the_named_data(config, tmp_path):
    """DVC itself resolves the templated deps for each config, and they cover every data path a stage reads."""
    from dvc.repo import Repo

    source, dataset = CONFIGS[config]
    params = yaml.safe_load((REPO / source).read_text())
    params["dataset"].update(dataset)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(DVC_YAML, tmp_path / "dvc.yaml")
    Repo.init(tmp_path, no_scm=True)
    with Repo(tmp_path) as repo:
        resolved = {s.name: [d.def_path for d in s.deps] for s in repo.index.stages}
    assert set(resolved) == set(STAGE_NAMES)
    values = {**params["dataset"], "source": (params.get("prepare") or {}).get("source")}
    if values.get("data_folder_test") is None:
        values["data_folder_test"] = values["data_folder"]
    for name, reads in READS.items():
        for key in reads:
            if values.get(key) is not None:
                assert covered(str(values[key]), resolved[name]), (
                    f"{config}: stage {name!r} reads {values[key]} ({key})"
                )
