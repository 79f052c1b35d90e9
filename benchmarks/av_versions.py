"""Cross-environment stability: the phantom and prepare stages under two PyAV/FFmpeg builds.

Runs both stages with the pipeline's params (params.yaml) once with the installed PyAV and
once with another release (default 17.0.1, the previous major line, bundling another
FFmpeg), installed with `pip install --target` into a cache folder and put first on
PYTHONPATH. Prints each run's PyAV and libavformat/libavcodec versions and the SHA-256 of
`data/phantom` and `data/prepared` (every file's path and bytes), side by side.

    python benchmarks/av_versions.py [--other 17.0.1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from echomotion.training.fingerprint import add_files

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "echomotion-av"


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    add_files(digest, root, root)
    return digest.hexdigest()


def child(out: Path) -> None:
    """Run phantom and prepare into ``out`` and print versions and digests as JSON."""
    import av

    from echomotion.params import load_params
    from echomotion.tasks.phantom.run import generate_phantom
    from echomotion.tasks.prepare.run import prepare_dataset

    params = load_params(REPO / "params.yaml")
    os.chdir(out)  # relative paths, as in the pipeline (the store records its source root)
    generate_phantom(params.phantom, params.shared.seed, Path("phantom"))
    prepared = Path("prepared")
    prepare_dataset("phantom/echonet", params.prepare, prepared / "videos.zarr",
                    prepared / "rejects.csv")  # fmt: skip
    versions = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    print(json.dumps({
        "av": av.__version__, "libavformat": versions["libavformat"],
        "libavcodec": versions["libavcodec"],
        "phantom": tree_digest(Path("phantom")), "prepared": tree_digest(prepared),
    }))  # fmt: skip


def run(pythonpath: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, __file__, "--child", tmp], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", default="17.0.1", help="the other PyAV release (17.0.1)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    target = CACHE / args.other
    if not (target / "av").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(target), f"av=={args.other}"], check=True)  # fmt: skip
    rows = [run(None), run(str(target))]
    keys = ("av", "libavformat", "libavcodec", "phantom", "prepared")
    print(f"{'':12}" + "".join(f"{'run ' + str(i + 1):>66}" for i in range(len(rows))))
    for key in keys:
        print(f"{key:12}" + "".join(f"{row[key]:>66}" for row in rows))
    same = all(rows[0][k] == rows[1][k] for k in ("phantom", "prepared"))
    print("data/phantom and data/prepared:", "identical" if same else "DIFFERENT")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
