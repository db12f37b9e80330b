"""Plugin loading through pluggy and the ``odezoo`` entry-point group."""
import dataclasses
import os
import subprocess
import sys
import types
import warnings
from importlib import metadata

import pytest
import torch
from torchdiffeq import odeint

import odezoo
from odezoo.registry import Registry
from odezoo.registry import BUILTIN_FAMILY_MODULES
from odezoo.families.rk2_u import FAMILY as RK2

RK2_COPY = dataclasses.replace(RK2, name="rk2_copy", provider=None)


class InlinePlugin:
    def __init__(self, *families):
        self.families = families

    @odezoo.hookimpl
    def odezoo_register_families(self, register):
        for family in self.families:
            register(family)


def builtins_still_work():
    y = odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk4_uv",
               options={"step_size": 0.1})
    return abs(float(y[-1, 0]) - float(torch.exp(torch.tensor(-1.0)))) < 1e-5


def test_inline_plugin_registers_and_unregisters():
    plugin = InlinePlugin(RK2_COPY)
    odezoo.register_plugin(plugin, name="inline-test")
    try:
        assert odezoo.get_family("rk2_copy").provider == "inline-test"
        y = odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="rk2_copy",
                   options={"u": 0.5, "step_size": 0.5})
        assert torch.isfinite(y).all()
    finally:
        odezoo.unregister_plugin(plugin)
    assert "rk2_copy" not in odezoo.families()
    with pytest.raises(ValueError, match="Invalid method"):
        odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="rk2_copy")
    assert builtins_still_work()


def _refused(plugin, match):
    with pytest.warns(odezoo.OdezooPluginWarning, match=match):
        odezoo.register_plugin(plugin, name="bad-test")
    try:
        assert builtins_still_work()
        assert sorted(odezoo.families()) == sorted(before)
    finally:
        odezoo.unregister_plugin(plugin)


before = list(odezoo.families())


def test_duplicate_name_is_refused():
    _refused(InlinePlugin(dataclasses.replace(RK2, provider=None)), "already registered")


def test_torchdiffeq_name_collision_is_refused():
    _refused(InlinePlugin(dataclasses.replace(RK2, name="midpoint")), "shadow torchdiffeq")


def test_family_that_lies_about_its_order_is_refused():
    liar = dataclasses.replace(RK2, name="rk2_liar", order=3)
    _refused(InlinePlugin(liar), "declares order 3 but its tableau at its defaults has order 2")


def test_family_with_singular_defaults_is_refused():
    broken = dataclasses.replace(RK2, name="rk2_broken", defaults={"u": 0.0})
    _refused(InlinePlugin(broken), "its tableau at its defaults is invalid")


def test_plugin_that_raises_is_skipped():
    class Exploding:
        @odezoo.hookimpl
        def odezoo_register_families(self, register):
            raise RuntimeError("boom")

    _refused(Exploding(), "boom")


def test_good_families_of_a_plugin_survive_a_bad_sibling():
    liar = dataclasses.replace(RK2, name="rk2_liar", order=3)
    plugin = InlinePlugin(liar, RK2_COPY)
    with pytest.warns(odezoo.OdezooPluginWarning):
        odezoo.register_plugin(plugin, name="mixed")
    try:
        assert "rk2_copy" in odezoo.families() and "rk2_liar" not in odezoo.families()
    finally:
        odezoo.unregister_plugin(plugin)


class FakeDistribution:
    """Enough of importlib.metadata.Distribution for the loader."""

    def __init__(self, name, entry_points):
        self.metadata = {"Name": name}
        self.version = "9.9"
        self.entry_points = entry_points


def test_fake_entry_points_load_and_broken_ones_are_reported(monkeypatch, solver_table):
    good = types.ModuleType("fake_good_plugin")
    good.odezoo_register_families = odezoo.hookimpl(lambda register: register(RK2_COPY))
    monkeypatch.setitem(sys.modules, "fake_good_plugin", good)
    eps = [
        metadata.EntryPoint("good", "fake_good_plugin", "odezoo"),
        metadata.EntryPoint("broken", "no_such_module_xyz", "odezoo"),
        metadata.EntryPoint("other-group", "fake_good_plugin", "pytest11"),
    ]
    monkeypatch.setattr(metadata, "distributions", lambda: [FakeDistribution("fake-dist", eps)])
    registry = Registry()
    with pytest.warns(odezoo.OdezooPluginWarning, match="'broken' from fake-dist 9.9 failed to load"):
        registry.load(BUILTIN_FAMILY_MODULES, autoload=True)
    fams = registry.families()
    assert fams["rk2_copy"].provider == "fake-dist 9.9"
    assert {"rk2_u", "rk4_uv"} <= set(fams)
    assert solver_table["rk2_copy"].family is fams["rk2_copy"]


def test_autoload_can_be_disabled(monkeypatch, solver_table):
    monkeypatch.setenv("ODEZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    called = []
    monkeypatch.setattr(metadata, "distributions", lambda: called.append(1) or [])
    registry = Registry()
    registry.load(BUILTIN_FAMILY_MODULES)
    assert not called
    assert "rk3_w" not in registry.families() and "rk2_u" in registry.families()


def test_third_party_example_plugin_is_installed_and_works():
    fam = odezoo.get_family("rk3_w")
    assert fam.provider.startswith("odezoo-rk3w")
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y = odeint(lambda t, y: torch.cos(t) * y, torch.ones(1, dtype=torch.float64), t,
               method="rk3_w", options={"w": 0.5, "step_size": 0.01})
    assert abs(float(y[-1, 0]) - float(torch.exp(torch.sin(t[-1])))) < 1e-6


def test_cli_lists_third_party_and_disable_env_hides_it():
    run = lambda env: subprocess.run([sys.executable, "-m", "odezoo.cli", "families"],  # noqa: E731
                                     capture_output=True, text=True, env={**os.environ, **env}, check=True)
    out = run({}).stdout
    assert "rk3_w" in out and "odezoo-rk3w" in out and "rk4_uv" in out
    quiet = run({"ODEZOO_DISABLE_PLUGIN_AUTOLOAD": "1"}).stdout
    assert "rk3_w" not in quiet and "rk4_uv" in quiet


def test_every_hookspec_is_documented_and_implemented_by_builtins():
    from odezoo import hookspecs

    specs = [name for name in dir(hookspecs) if name.startswith("odezoo_")]
    assert specs == ["odezoo_register_families"]
    for name in specs:
        assert getattr(hookspecs, name).__doc__.strip()
        assert name in open(os.path.join(os.path.dirname(__file__), "..", "docs", "plugins.md")).read()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module in BUILTIN_FAMILY_MODULES:
            assert hasattr(sys.modules[module], "odezoo_register_families")
