"""Apply a params preset: a partial params.yaml, shipped as echomotion/presets/<name>.yaml.

    python -m echomotion.cli.preset paper            # print `-S key=value` arguments
    dvc exp run -n paper $(python -m echomotion.cli.preset paper)
    python -m echomotion.cli.preset paper --write    # rewrite params.yaml with the preset

The merged result is validated like params.yaml before anything is printed or written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from echomotion.params import ParamsError, validate_params

PRESETS = resources.files("echomotion") / "presets"  # package data: found in any install


def flatten(
    tree: dict[str, Any], prefix: str = "", base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are leaves. With ``base`` (the params the
    override applies to), a dict is a leaf where ``base`` has no dict to descend into
    (e.g. a section that is null there: it is set whole)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        below = None if base is None else base.get(key)
        if isinstance(value, dict) and (base is None or isinstance(below, dict)):
            flat.update(flatten(value, path + ".", below))
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
    path = Path(name) if name.endswith(".yaml") else Path(str(PRESETS / f"{name}.yaml"))
    if not path.is_file():
        names = (p.name for p in PRESETS.iterdir())
        known = ", ".join(sorted(n[:-5] for n in names if n.endswith(".yaml")))
        raise ParamsError(f"{path}: no such preset (known: {known})")
    override = yaml.safe_load(path.read_text()) or {}
    merged = merge(yaml.safe_load(base_path.read_text()) or {}, override)
    validate_params(merged, f"{base_path} + {path}")
    return override, merged


_PLAIN = re.compile(r"^[A-Za-z0-9_./-]+$")  # a string Hydra's grammar reads unquoted


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar of ``dvc exp run -S`` (Hydra's): lists ``[a,b]``,
    dicts ``{key:value}``, ``null``/``true``/``false``, numbers, and strings unquoted when
    plain, else single-quoted (a URL, a string that reads as a number)."""
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and not _reads_as_other(value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ParamsError(f"cannot pass {value!r} as -S")


def _reads_as_other(text: str) -> bool:
    """Whether Hydra would read the unquoted ``text`` as something other than a string."""
    return text.lower() in {"null", "true", "false"} or _is_number(text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def dvc_args(override: dict[str, Any], base: dict[str, Any] | None = None) -> list[str]:
    """`-S key=value` pairs for `dvc exp run` that turn ``base`` (params.yaml) into the
    preset's params (values in Hydra's override grammar without spaces, so the shell's
    word splitting of `$(...)` keeps each pair whole)."""
    args = []
    for key, value in flatten(override, base=base).items():
        text = hydra_value(value)
        if any(c.isspace() for c in text):
            raise ParamsError(f"{key}: a value with spaces cannot be passed as -S: {text!r}")
        args += ["-S", f"{key}={text}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", help="preset name (echomotion/presets/NAME.yaml) or a YAML path")
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
        print(" ".join(dvc_args(override, yaml.safe_load(args.params.read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
