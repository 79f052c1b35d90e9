"""Name the first stage (in dvc.yaml order, which follows the DAG) whose recorded
outputs in the working dvc.lock differ from the committed one, and what differs."""

import subprocess
import sys

import yaml


def outs(lock: dict) -> dict[str, dict[str, str]]:
    return {
        name: {o["path"]: o.get("md5", "") for o in stage.get("outs", [])}
        for name, stage in lock.get("stages", {}).items()
    }


def main() -> int:
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
            print(f"first stage whose outputs differ: {stage}: {', '.join(differ)}")
            return 0
    print("no stage's outputs differ; the difference is in deps/params or metrics files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
