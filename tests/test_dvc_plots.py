"""Every DVC plot renders what a user would open it for (`dvc plots show --json` on the
committed outputs): curves with their component terms, scatters coloured by their groups,
the privacy histogram with both series, samples as images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# plot -> (x field, y fields that must be series of it)
CURVES = {
    "plots/flow_train/train.tsv": ("step", {"loss", "photometric", "smooth", "segment"}),
    "plots/reid_train/train.tsv": ("step", {"loss", "id_loss", "triplet_loss"}),
    "plots/mafe_train/train.tsv": ("step", {"loss", "interp", "coarse", "flow", "reid"}),
    "plots/mafe_train/eval.tsv": ("step", {"psnr", "psnr_blend", "psnr_nearest"}),
    "plots/vae_train/train.tsv": ("step", {"loss", "rec", "ssim", "kl"}),
    "plots/evaluate/privacy_hist.csv": ("similarity", {"synthetic", "real_test"}),
    "plots/flow_train/eval.tsv": ("step", {"epe_all", "epe_sector", "epe_lv"}),
}
# scatter/line plot -> (x, y, the groups its colours must show)
GROUPED = {
    "plots/evaluate/ef_scatter.csv": ("ef_true", "ef_pred", {"real_test", "synthetic"}),
    "plots/evaluate/motion.csv": ("cosine", "flow_epe", {"self", "transfer"}),
    "plots/evaluate/lv_area.csv": ("time_s", "area_px", None),
}
IMAGES = {
    "plots/sample/grid.png",
    "plots/sample/samples.gif",
    "plots/vae_train/reconstruction.png",
    "plots/evaluate/lv_area.png",
}


@pytest.fixture(scope="module")
def shown(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dvc_plots")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["dvc", "plots", "show", "--json", "-o", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _declared() -> set[str]:
    """Every plot path dvc.yaml declares (stage-level and top-level)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    entries = list(spec.get("plots", []))
    for stage in spec["stages"].values():
        entries += stage.get("plots", [])
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries}


def _vega(shown: dict, path: str) -> dict:
    (render,) = shown["data"][path]
    assert render["type"] == "vega", path
    return render["content"]


def _number(value: str) -> float:
    return float(value)  # "True"/"False" or a name on a numeric axis fails here


def test_every_declared_plot_renders_without_errors(shown: dict) -> None:
    assert not shown.get("errors"), shown.get("errors")
    declared = _declared()
    assert declared <= set(shown["data"]), declared - set(shown["data"])
    for path in declared:
        (render,) = shown["data"][path]
        if render["type"] == "vega":
            assert render["content"]["data"]["values"], f"{path}: no rows"


@pytest.mark.parametrize("path", sorted(CURVES))
def test_curves_show_every_component_as_its_own_series(shown: dict, path: str) -> None:
    x, wanted = CURVES[path]
    content = _vega(shown, path)
    assert content["encoding"]["x"]["field"] == x
    rows = content["data"]["values"]
    assert {row["field"] for row in rows} == wanted
    for row in rows:
        _number(row[x]), _number(row["dvc_inferred_y_value"])


@pytest.mark.parametrize("path", sorted(GROUPED))
def test_scatters_have_numeric_axes_and_a_colour_per_group(shown: dict, path: str) -> None:
    x, y, groups = GROUPED[path]
    content = _vega(shown, path)
    assert (content["encoding"]["x"]["field"], content["encoding"]["y"]["field"]) == (x, y)
    assert content["encoding"]["color"]["field"] == "group"
    (calc,) = [t for t in content["transform"] if t.get("as") == "group"]
    rows = content["data"]["values"]
    for row in rows:
        _number(row[x]), _number(row[y])
    # the group each row gets: the template's expression on the file's columns
    column = next(
        c for c in ("set", "mode", "series") if f"datum.{c}" in calc["calculate"] and c in rows[0]
    )
    seen = {row[column] for row in rows}
    assert len(seen) >= 2, f"{path}: one colour only ({seen})"
    if groups is not None:
        assert groups <= seen


def test_privacy_table_plots_similarity_per_video_not_a_boolean(shown: dict) -> None:
    content = _vega(shown, "plots/evaluate/privacy.csv")
    x = content["encoding"]["x"]["field"]
    assert x == "similarity"
    for row in content["data"]["values"]:
        assert -1.0 <= _number(row[x]) <= 1.0


@pytest.mark.parametrize("path", sorted(IMAGES))
def test_what_users_look_at_is_an_image_plot(shown: dict, path: str) -> None:
    (render,) = shown["data"][path]
    assert render["type"] == "image"
    assert Path(render["url"]).stat().st_size > 0
