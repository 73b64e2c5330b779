"""Check params.yaml against the schema, and write the data type's settings where the stages can depend on them.

DVC reruns this stage on any change of params.yaml (it lists the whole file); it takes a second. It writes
`data.json`: the problem type's data type, its section (named after the data type) and its keys of the
dataset section. The stages that read those depend on this file, so a change there reruns them, and a change
elsewhere leaves the file's hash, and them, as they were. `prepare.json` does the same for the prepare
stage, whose section params.yaml may leave out (DVC refuses a listed params key that is missing).
"""

import argparse
from pathlib import Path

import yaml

from deuterium import cli, config, io, paths, problems
from deuterium.errors import ConfigError


def tracked_keys(dvc_yaml: Path, params_name: str) -> list[str]:
    """The params keys dvc.yaml's stages list for `params_name` (DVC's default params file by bare key)."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    keys: list[str] = []
    for stage in stages.values():
        for entry in stage.get("params") or []:
            if isinstance(entry, str):
                named = [entry] if params_name == "params.yaml" else []
            else:
                named = [k for file, ks in entry.items() if Path(file).name == params_name for k in ks or []]
            keys += [k for k in named if k not in keys]
    return keys


_ABSENT = object()


def _lookup(tree, key: str):
    """tree's value at a dotted key, or _ABSENT."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def check_tracked_keys(params: Path, exp) -> None:
    """A params.yaml that leaves out keys the schema defaults, but dvc.yaml's stages track, passes the schema
    and then stops `dvc repro` at a later stage with DVC's "Parameters ... are missing from 'params.yaml'".
    Say so here, at the first stage, with the lines to add (the schema's defaults)."""
    dvc_yaml = params.parent / "dvc.yaml"
    if not dvc_yaml.is_file():
        return
    raw = yaml.safe_load(params.read_text()) or {}
    resolved = exp.model_dump(mode="json")
    missing: dict = {}
    for key in tracked_keys(dvc_yaml, params.name):
        if _lookup(raw, key) is _ABSENT:
            *parents, last = key.split(".")
            target = missing
            for part in parents:
                target = target.setdefault(part, {})
            default = _lookup(resolved, key)
            target[last] = None if default is _ABSENT else default
    if missing:
        lines = yaml.safe_dump(missing, sort_keys=False).rstrip()
        raise ConfigError(
            f"{params}: dvc.yaml's stages track keys this file leaves out, and DVC needs each written out "
            f"(even at its default). Add them, here with the schema's defaults, or start from a file in "
            f"configs/:\n{lines}"
        )


def main(params: Path = Path("params.yaml"), out_dir: Path = paths.SETTINGS) -> dict:
    exp = config.load(params)
    check_tracked_keys(Path(params), exp)
    data = problems.of(exp).data
    section = type(exp).data_section
    settings = {
        "data_type": data.name,
        section: getattr(exp, section).model_dump(mode="json"),
        "dataset": {key: getattr(exp.dataset, key) for key in data.dataset_fields},
    }
    io.write_json(settings, out_dir / paths.DATA_SETTINGS_FILE)
    io.write_json(exp.prepare.model_dump(mode="json"), out_dir / paths.PREPARE_SETTINGS_FILE)
    return settings


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.SETTINGS)
    args = parser.parse_args()
    cli.run(main, args.params, args.out)
