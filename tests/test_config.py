"""params.yaml validation: unknown keys and wrong types name the key."""

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from echomotion.cli.preset import merge
from echomotion.params import Params, ParamsError, load_params, validate_params


def write(tmp_path, data):
    """params.yaml of the repository with ``data`` merged over it (sections are complete
    only in params.yaml: it is the one home of their values)."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load((REPO / "params.yaml").read_text()), data)))
    return path


def test_repository_params_are_valid_and_complete():
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # params.yaml states every value the pipeline runs with: no silent code defaults
    assert raw == params.model_dump(mode="json")


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"prepare\.target_fsp: Extra inputs"):
        load_params(write(tmp_path, {"prepare": {"target_fsp": 10}}))


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ParamsError, match=r"  prepar: Extra inputs"):
        load_params(write(tmp_path, {"prepar": {}}))


def test_wrong_type_is_named_with_the_value(tmp_path):
    with pytest.raises(ParamsError, match=r"shared\.seed: .*integer.*'abc'"):
        load_params(write(tmp_path, {"shared": {"seed": "abc"}}))


def test_cross_field_rule_is_explained(tmp_path):
    bad = {"prepare": {"shard_frames": 100, "chunk_frames": 16}}
    with pytest.raises(ParamsError, match=r"prepare: .*multiple of chunk_frames"):
        load_params(write(tmp_path, bad))


def test_motion_width_must_match_mafe(tmp_path):
    """The MCDM's token width is checked against MAFE's vector before any stage runs;
    the flip test-time augmentation doubles the vector."""
    bad = {"mafe_train": {"model": {"flip_tta": True}}}
    with pytest.raises(ParamsError, match=r"motion_dim \(768\) must equal .*\(1536"):
        load_params(write(tmp_path, bad))
    good = bad | {"mcdm_train": {"model": {"motion_dim": 1536}}}
    assert load_params(write(tmp_path, good)).mcdm_train.model.motion_dim == 1536


def test_guidance_needs_a_model_trained_without_motion(tmp_path):
    """Guidance extrapolates from the motion-dropped branch; with cond_dropout 0 that branch
    was never trained, so the combination is refused before any stage runs."""
    bad = {"mcdm_train": {"loss": {"cond_dropout": 0.0}}, "sample": {"guidance_scale": 3.0}}
    with pytest.raises(
        ParamsError, match=r"sample.guidance_scale 3.0 needs .*trained with cond_dropout 0"
    ):
        load_params(write(tmp_path, bad))
    off = merge(bad, {"sample": {"guidance_scale": 1.0}})
    assert load_params(write(tmp_path, off)).sample.guidance_scale == 1.0


def test_params_are_read_only():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(Exception, match="frozen"):
        params.shared.seed = 3


def test_stage_script_stops_with_the_key(tmp_path):
    write(tmp_path, {"prepare": {"min_frame": 3}})
    out = subprocess.run(
        [sys.executable, str(REPO / "stages" / "prepare.py")],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0
    assert "prepare.min_frame: Extra inputs are not permitted" in out.stderr


def test_a_bare_yaml_no_is_the_no_precision_option(tmp_path):
    # `dvc exp run -S` may rewrite params.yaml with `no` unquoted: YAML 1.1 reads False
    path = write(tmp_path, {"mcdm_train": {"train": {"mixed_precision": "MARK"}}})
    path.write_text(path.read_text().replace("mixed_precision: MARK", "mixed_precision: no"))
    assert "mixed_precision: no\n" in path.read_text()
    assert load_params(path).mcdm_train.train.mixed_precision == "no"


def test_params_yaml_is_the_one_home_of_the_pipeline_values():
    """No section of params.yaml and no field of one has a code default, so a value the
    pipeline runs with is written once, in params.yaml (the reusable component models
    nested in a section, e.g. TrainParams, keep their library defaults for code that builds
    them outside the pipeline)."""
    for name, field in Params.model_fields.items():
        assert field.is_required(), f"Params.{name} has a default"
        defaulted = [k for k, f in field.annotation.model_fields.items() if not f.is_required()]
        assert defaulted == [], f"section {name}: fields with a code default: {defaulted}"
    with pytest.raises(ParamsError, match=r"vae_train\.crop_size: Field required"):
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        del raw["vae_train"]["crop_size"]
        validate_params(raw, "params.yaml")
