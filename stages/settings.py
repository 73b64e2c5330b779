"""Check params.yaml against the schema, and write the data type's settings where the stages can depend on them.

DVC reruns this stage on any change of params.yaml (it lists the whole file); it takes a second. It writes
`data.json`: the problem type's data type, its section (named after the data type) and its keys of the
dataset section. The stages that read those depend on this file, so a change there reruns them, and a change
elsewhere leaves the file's hash, and them, as they were. `prepare.json` does the same for the prepare
stage, whose section params.yaml may leave out (DVC refuses a listed params key that is missing).
"""

import argparse
from pathlib import Path

from deuterium import cli, config, io, paths, problems


def main(params: Path = Path("params.yaml"), out_dir: Path = paths.SETTINGS) -> dict:
    exp = config.load(params)
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
