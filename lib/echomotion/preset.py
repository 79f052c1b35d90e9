"""Apply a params preset (presets/<name>.yaml: a partial params.yaml).

    python -m echomotion.preset paper            # print `-S key=value` arguments
    dvc exp run -n paper $(python -m echomotion.preset paper)
    python -m echomotion.preset paper --write    # rewrite params.yaml with the preset

The merged result is validated like params.yaml before anything is printed or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import ParamsError, validate_params

PRESETS = Path(__file__).resolve().parents[2] / "presets"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: override's leaves replace base's."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_preset(name: str, base_path: Path = Path("params.yaml")) -> tuple[dict, dict]:
    """(preset overrides, merged params) after validating the merge."""
    path = Path(name) if name.endswith(".yaml") else PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ParamsError(f"{path}: no such preset (known: {known})")
    override = yaml.safe_load(path.read_text()) or {}
    merged = merge(yaml.safe_load(base_path.read_text()) or {}, override)
    validate_params(merged, f"{base_path} + {path}")
    return override, merged


def dvc_args(override: dict[str, Any]) -> list[str]:
    """`-S key=value` pairs for `dvc exp run` (values in JSON syntax without spaces, so
    the shell's word splitting of `$(...)` keeps each pair whole)."""
    args = []
    for key, value in flatten(override).items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if any(c.isspace() for c in text):
            raise ParamsError(f"{key}: a value with spaces cannot be passed as -S: {text!r}")
        args += ["-S", f"{key}={text}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="preset name (presets/<name>.yaml) or a YAML path")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--write", action="store_true", help="rewrite params.yaml")
    args = parser.parse_args(argv)
    try:
        override, merged = load_preset(args.preset, args.params)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    if args.write:
        args.params.write_text(yaml.safe_dump(merged, sort_keys=False))
    else:
        print(" ".join(dvc_args(override)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
