"""The method recipes run end to end from the command line (``kerasface train recipes/X.py --smoke``).

The default run swaps in a quarter-width MobileNetV1 so that every stage of the progressive
schedules builds in seconds; the recipes' own networks run in the slow tests.
"""

import json
from pathlib import Path

import pytest

from kerasface.cli.main import main

REPO = Path(__file__).resolve().parents[1]
FAST_BACKBONE = ["--set", "model.backbone=mobilenet_v1", "--set", "model.backbone_kwargs={'width_multiplier': 0.25}"]


def _train(tmp_path, recipe, *extra):
    out = tmp_path / recipe
    code = main(["train", str(REPO / "recipes" / f"{recipe}.py"), "--smoke", "--quiet", "--out", str(out), *extra])
    assert code == 0
    return out


def test_npcface_recipe_smoke(tmp_path, capsys):
    out = _train(tmp_path, "npcface", *FAST_BACKBONE)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["head"]["name"] == "npcface" and recipe["head"]["kwargs"]["m1"] == 0.2
    assert (out / "embedding.keras").is_file()


# Seven warm-started stages, 2-4 minutes on 2 cores: run with -m slow.
@pytest.mark.slow
def test_progressive_recipe_runs_every_stage_warm_started(tmp_path, capsys):
    out = _train(tmp_path, "progressive", *FAST_BACKBONE, "--set", "model.budget={}")
    stages = json.loads((out / "progressive.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["arcface", "combined", "svgs", "intra_inter", "class_balanced", "pk",
                                            "long_tail"]
    assert stages[1]["warm_start"] == str(out / "0_arcface" / "model.keras")
    pk = json.loads((out / "5_pk" / "recipe.json").read_text())
    assert pk["data"]["sampler"] == "pk:4" and pk["train"]["loss"] == "class_balanced"
    assert pk["train"]["init_from"] == str(out / "4_class_balanced" / "model.keras") and pk["train"]["init_head"]
    assert "head class centres initialised" in capsys.readouterr().out
    # Rerunning the command finds every stage done.
    _train(tmp_path, "progressive", *FAST_BACKBONE, "--set", "model.budget={}")
    assert capsys.readouterr().out.count("already trained") == 7


# Three stages, 1-1.5 minutes on 2 cores: run with -m slow.
@pytest.mark.slow
def test_airface_recipe_smoke_decays_the_embedding_layer_ten_times(tmp_path, capsys):
    out = _train(tmp_path, "airface", *FAST_BACKBONE)
    stages = json.loads((out / "progressive.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["li_arcface", "arcface", "combined"]
    first = json.loads((out / "0_li_arcface" / "recipe.json").read_text())
    assert first["head"] == {"name": "li_arcface", "scale": 64.0, "margin": 0.45, "kwargs": {}, "sample_rate": None,
                             "sharded": False}
    assert first["optimizer"]["weight_decay_multipliers"] == {"neck_linear": 10.0}
    assert json.loads((out / "1_arcface" / "recipe.json").read_text())["train"]["epochs"] == 1  # 0.2 x 2, at least 1


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["progressive", "airface"])
def test_recipe_smoke_with_its_own_network(tmp_path, recipe):
    _train(tmp_path, recipe)
