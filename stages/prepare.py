"""Turn the dataset's original files into files and dataframes the pipeline reads (params.yaml's `prepare`
section; recipe none, or no section, writes an empty folder).

Only the `prepare` section is read and checked: this stage makes the data that the rest of params.yaml
will describe, so the other sections may not be written yet."""

import argparse
from pathlib import Path

import yaml
from pydantic import ValidationError

from deuterium import cli, paths
from deuterium.errors import ConfigError
from deuterium.prepare import PrepareSettings, prepare

SECTION = "prepare"


def main(params: Path = Path("params.yaml"), out_dir: Path = paths.PREPARE) -> dict:
    return prepare(load_settings(params), out_dir)


def load_settings(params: Path) -> PrepareSettings:
    if not params.is_file():
        raise ConfigError(f"{params}: no such params file")
    try:
        data = yaml.safe_load(params.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{params}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{params}: expected a mapping of settings, got {type(data).__name__}")
    try:  # no section, or an empty one: recipe none
        return PrepareSettings.model_validate(data.get(SECTION) or {})
    except ValidationError as err:
        raise ConfigError("\n".join(_line(params, e) for e in err.errors())) from None


def _line(params: Path, error: dict) -> str:
    """One error as `params.yaml: prepare.key: what is wrong`."""
    if not error["loc"] and error["type"] == "value_error":  # a rule across keys names its key itself
        return f"{params}: {error['ctx']['error']}"
    key = ".".join([SECTION, *map(str, error["loc"])])
    if error["type"] == "extra_forbidden":
        return f"{params}: {key}: unknown key; allowed: {', '.join(PrepareSettings.model_fields)}"
    return f"{params}: {key}: {error['msg']} (got {error['input']!r})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.PREPARE)
    args = parser.parse_args()
    cli.run(main, args.params, args.out)
