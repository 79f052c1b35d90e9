"""Name the first stage (in dvc.yaml order, which follows the DAG) whose recorded
outputs in the working dvc.lock differ from the committed one, and what differs.

``--stage``: print only that stage's name (nothing when none differs), for `.ci/run`.
``--persistent STAGE``: print the stage's persistent outputs (`persist: true`), one a line."""

import subprocess
import sys

import yaml


def outs(lock: dict) -> dict[str, dict[str, str]]:
    return {
        name: {o["path"]: o.get("md5", "") for o in stage.get("outs", [])}
        for name, stage in lock.get("stages", {}).items()
    }


def persistent(stage: str) -> list[str]:
    with open("dvc.yaml") as f:
        outs = yaml.safe_load(f)["stages"][stage].get("outs", [])
    return [
        path
        for out in outs
        if isinstance(out, dict)
        for path, spec in out.items()
        if isinstance(spec, dict) and spec.get("persist")
    ]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--persistent"]:
        print("\n".join(persistent(argv[1])))
        return 0
    committed = yaml.safe_load(
        subprocess.run(
            ["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True, check=True
        ).stdout
    )
    with open("dvc.lock") as f:
        now = yaml.safe_load(f)
    with open("dvc.yaml") as f:
        order = list(yaml.safe_load(f)["stages"])
    before, after = outs(committed), outs(now)
    for stage in order:
        old, new = before.get(stage, {}), after.get(stage, {})
        differ = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
        if differ:
            if argv[:1] == ["--stage"]:
                print(stage)
            else:
                print(f"first stage whose outputs differ: {stage}: {', '.join(differ)}")
            return 0
    if argv[:1] != ["--stage"]:
        print("no stage's outputs differ; the difference is in deps/params or metrics files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
