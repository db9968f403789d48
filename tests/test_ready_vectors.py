"""The ready-made vectors shipped as package data: calibrated, for the default model, by name."""

from __future__ import annotations

import pytest

from repl.core import Core
from vectors import bundled_names, bundled_path, load_vector

READY = bundled_names()


def test_steer_ships_ready_made_vectors() -> None:
    assert "terse" in READY and len(READY) >= 2


@pytest.mark.parametrize("name", READY)
def test_each_is_calibrated_for_the_default_model(core: Core, name: str) -> None:
    vec = load_vector(bundled_path(name), core.model.n_layer, core.model.n_embd)
    assert vec.meta["model_sha256"] == core.steering.model_sha256()
    cal = vec.meta["calibration"]
    assert cal["chosen"] == vec.recommended_strength and cal["points"]
    assert vec.meta["built_by"].startswith(f"/contrast {name} ")
    assert vec.meta["positive"] and vec.meta["negative"]


def test_vector_list_shows_them_and_load_takes_a_name(core: Core) -> None:
    listing = core.submit("/vector list").info[0]
    assert "ready-made (for the default model" in listing and "terse" in listing
    out = core.submit("/vector load terse")
    assert not out.errors, out.errors
    vec = core.steering.vectors["terse"]
    assert out.info[0].startswith(
        f"loaded 'terse'; apply it: /steer terse {vec.recommended_strength:g}"
    )
    assert "terse" not in core.submit("/vector list").info[0].split("ready-made")[-1]
