"""Plugin isolation: whatever a plugin does, odezoo loads, built-in names stay built-in, and
every refusal names the distribution and the reason."""
import dataclasses
import os
import subprocess
import sys
import textwrap
import types
import warnings
from importlib import metadata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odezoo
from odezoo.registry import BUILTIN_PROVIDER, Registry
from odezoo.registry import BUILTIN_FAMILY_MODULES
from odezoo.families.rk2_u import FAMILY as RK2

BUILTIN_NAMES = {"rk2_u", "rk3_uv", "rk4_u1", "rk4_u2", "rk4_u3", "rk4_uv"}


class FakeDistribution:
    """Enough of importlib.metadata.Distribution for the loader."""

    def __init__(self, name, entry_points, version="1.0"):
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = entry_points


def family(name, **changes):
    return dataclasses.replace(RK2, name=name, provider=None, **changes)


def module_plugin(monkeypatch, module_name, **attributes):
    module = types.ModuleType(module_name)
    for key, value in attributes.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, module_name, module)
    return module


def load(monkeypatch, *dists):
    """A fresh Registry loaded with the built-ins and ``dists``; (registry, warning messages)."""
    monkeypatch.setattr(metadata, "distributions", lambda: list(dists))
    registry = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load(BUILTIN_FAMILY_MODULES, autoload=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, odezoo.OdezooPluginWarning)]
    assert messages == registry.problems
    return registry, messages


def entry(name, module):
    return metadata.EntryPoint(name, module, "odezoo")


def assert_builtins_intact(registry):
    fams = registry.families()
    assert BUILTIN_NAMES <= set(fams)
    for name in BUILTIN_NAMES:
        assert fams[name].provider == BUILTIN_PROVIDER
    registry.pm.check_pending()  # no unknown hook left registered


# ---------------------------------------------------------------------------- hookimpl defects
def test_hookimpl_with_an_argument_the_hookspec_lacks_is_refused(monkeypatch, solver_table):
    module_plugin(monkeypatch, "fake_extra_arg",
                  odezoo_register_families=odezoo.hookimpl(lambda register, config: register(family("x1"))))
    registry, messages = load(monkeypatch, FakeDistribution("extra-arg-dist", [entry("extra", "fake_extra_arg")]))
    assert_builtins_intact(registry)
    assert "x1" not in registry.families()
    [message] = messages
    assert "extra-arg-dist 1.0" in message and "config" in message and "refused" in message


@pytest.mark.parametrize("hook_name", ["odezoo_register_familes", "odezoo_register_family", "register_families"])
def test_misspelled_hook_name_is_reported(monkeypatch, solver_table, hook_name):
    module_plugin(monkeypatch, "fake_typo", **{hook_name: odezoo.hookimpl(lambda register: register(family("x2")))})
    registry, messages = load(monkeypatch, FakeDistribution("typo-dist", [entry("typo", "fake_typo")]))
    assert_builtins_intact(registry)
    [message] = messages
    assert "typo-dist 1.0" in message and hook_name in message and "misspelled" in message
    assert registry.pm.get_plugin("typo") is None


def test_optionalhook_for_an_unknown_hook_is_allowed(monkeypatch, solver_table):
    module_plugin(monkeypatch, "fake_optional",
                  odezoo_register_families=odezoo.hookimpl(lambda register: register(family("x3"))),
                  odezoo_future_hook=odezoo.hookimpl(optionalhook=True)(lambda: None))
    registry, messages = load(monkeypatch, FakeDistribution("optional-dist", [entry("opt", "fake_optional")]))
    assert messages == [] and registry.families()["x3"].provider == "optional-dist 1.0"


def test_unmarked_hook_function_is_reported(monkeypatch, solver_table):
    module_plugin(monkeypatch, "fake_unmarked", odezoo_register_families=lambda register: register(family("x4")))
    registry, messages = load(monkeypatch, FakeDistribution("unmarked-dist", [entry("unmarked", "fake_unmarked")]))
    [message] = messages
    assert "unmarked-dist 1.0" in message and "not marked with @odezoo.hookimpl" in message


def test_explicit_registration_of_a_defective_plugin_raises():
    class Typo:
        @odezoo.hookimpl
        def odezoo_register_familes(self, register):
            register(family("x5"))

    with pytest.raises(ValueError, match="odezoo_register_familes.*misspelled"):
        odezoo.register_plugin(Typo(), name="typo-inline")
    assert odezoo.plugin_manager().get_plugin("typo-inline") is None
    odezoo.plugin_manager().check_pending()


# ---------------------------------------------------------------------------- built-in names
def _impostor(options):
    """A plugin function claiming the built-in name rk2_u with some hookimpl options."""
    impostor = family("rk2_u", defaults={"u": 1.0})
    if options.get("hookwrapper"):
        def hook(register):
            register(impostor)
            yield
    elif options.get("wrapper"):
        def hook(register):
            register(impostor)
            return (yield)
    else:
        def hook(register):
            register(impostor)
    return odezoo.hookimpl(**options)(hook)


HOOK_OPTIONS = [{}, {"tryfirst": True}, {"trylast": True}, {"hookwrapper": True}, {"wrapper": True}]


@pytest.mark.parametrize("options", HOOK_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_third_party_cannot_take_a_builtin_name_whatever_its_hookimpl_options(monkeypatch, solver_table, options):
    module_plugin(monkeypatch, "fake_impostor", odezoo_register_families=_impostor(options))
    registry, messages = load(monkeypatch, FakeDistribution("impostor-dist", [entry("impostor", "fake_impostor")]))
    assert_builtins_intact(registry)
    assert registry.families()["rk2_u"].defaults == {"u": 0.5}
    assert solver_table["rk2_u"].family.provider == BUILTIN_PROVIDER
    assert messages, "the refusal must be reported"
    assert all("impostor-dist 1.0" in m for m in messages)
    assert not any(m.startswith(f"family 'rk2_u' from '{BUILTIN_PROVIDER}'") for m in messages)


def test_builtin_name_is_reserved_even_when_the_builtin_fails_to_load(monkeypatch, solver_table):
    module_plugin(monkeypatch, "fake_taker", odezoo_register_families=odezoo.hookimpl(
        lambda register: register(family("rk9_missing"))))
    monkeypatch.setattr(metadata, "distributions",
                        lambda: [FakeDistribution("taker-dist", [entry("taker", "fake_taker")])])
    registry = Registry()
    with pytest.warns(odezoo.OdezooPluginWarning) as record:
        registry.load(BUILTIN_FAMILY_MODULES + ("odezoo.families.rk9_missing",), autoload=True)
    assert "rk9_missing" not in registry.families()
    messages = [str(w.message) for w in record]
    assert any("odezoo.families.rk9_missing failed to import" in m for m in messages)
    assert any("taker-dist 1.0" in m and "belongs to a built-in" in m for m in messages)


# ---------------------------------------------------------------------------- distributions
def test_two_distributions_with_one_entry_point_name_are_reported(monkeypatch, solver_table):
    module_plugin(monkeypatch, "fake_first", odezoo_register_families=odezoo.hookimpl(
        lambda register: register(family("x6"))))
    module_plugin(monkeypatch, "fake_second", odezoo_register_families=odezoo.hookimpl(
        lambda register: register(family("x7"))))
    registry, messages = load(monkeypatch, FakeDistribution("first-dist", [entry("same", "fake_first")]),
                              FakeDistribution("second-dist", [entry("same", "fake_second")]))
    assert registry.families()["x6"].provider == "first-dist 1.0"
    assert "x7" not in registry.families()
    [message] = messages
    assert "second-dist 1.0" in message and "first-dist 1.0" in message and "'same'" in message


def test_plugins_that_exit_or_raise_at_import_are_skipped(monkeypatch, solver_table):
    class Exits(metadata.EntryPoint):
        def load(self):
            raise SystemExit(3)

    registry, messages = load(monkeypatch, FakeDistribution("exit-dist", [Exits("bye", "nowhere", "odezoo")]),
                              FakeDistribution("missing-dist", [entry("gone", "no_such_module_xyz")]))
    assert_builtins_intact(registry)
    assert any("exit-dist 1.0" in m and "SystemExit" in m for m in messages)
    assert any("missing-dist 1.0" in m and "failed to load" in m for m in messages)


def test_unreadable_distribution_metadata_is_reported(monkeypatch, solver_table):
    class Broken(FakeDistribution):
        @property
        def entry_points(self):
            raise OSError("corrupt RECORD")

        @entry_points.setter
        def entry_points(self, value):
            pass

    registry, messages = load(monkeypatch, Broken("broken-dist", []))
    assert_builtins_intact(registry)
    assert any("corrupt RECORD" in m for m in messages)


# ---------------------------------------------------------------------------- one family at a time
def _raising_formula(error):
    def formula(u):
        raise error
    return formula


class BadConstraint:
    def __init__(self, error):
        self.error = error

    def __call__(self, u):
        raise self.error


@pytest.mark.parametrize("bad", [
    family("bad_type", formula=_raising_formula(TypeError("unsupported operand"))),
    family("bad_zero", formula=_raising_formula(ZeroDivisionError("float division by zero"))),
    family("bad_overflow", formula=_raising_formula(OverflowError("math range error"))),
    family("bad_runtime", formula=_raising_formula(RuntimeError("formula exploded"))),
    family("bad_constraint", constraints=(odezoo.Constraint("boom", BadConstraint(RuntimeError("boom"))),)),
    family("bad_constraint_type", constraints=(odezoo.Constraint("bad", BadConstraint(TypeError("no"))),)),
    family("bad_constraint_nan", constraints=(odezoo.Constraint("nan", lambda u: float("nan")),)),
], ids=lambda f: f.name)
def test_a_family_whose_checks_raise_does_not_skip_its_siblings(monkeypatch, solver_table, bad):
    good_before, good_after = family("good_before"), family("good_after")

    def hook(register):
        register(good_before)
        register(bad)
        register(good_after)

    module_plugin(monkeypatch, "fake_mixed", odezoo_register_families=odezoo.hookimpl(hook))
    registry, messages = load(monkeypatch, FakeDistribution("mixed-dist", [entry("mixed", "fake_mixed")]))
    fams = registry.families()
    assert {"good_before", "good_after"} <= set(fams) and bad.name not in fams
    [message] = messages
    assert message.startswith(f"family {bad.name!r} from 'mixed-dist 1.0' is refused")


def test_hook_that_returns_families_instead_of_registering_is_reported(monkeypatch, solver_table):
    module_plugin(monkeypatch, "fake_returner", odezoo_register_families=odezoo.hookimpl(
        lambda register: [family("x8")]))
    registry, messages = load(monkeypatch, FakeDistribution("returner-dist", [entry("ret", "fake_returner")]))
    [message] = messages
    assert "returner-dist 1.0" in message and "call register(family)" in message


def test_register_called_after_the_hook_returned_is_ignored(monkeypatch, solver_table):
    kept = []
    module_plugin(monkeypatch, "fake_late", odezoo_register_families=odezoo.hookimpl(
        lambda register: kept.append(register)))
    registry, messages = load(monkeypatch, FakeDistribution("late-dist", [entry("late", "fake_late")]))
    with pytest.warns(odezoo.OdezooPluginWarning, match="late-dist 1.0.*after"):
        kept[0](family("x9"))
    assert "x9" not in registry.families()


# ---------------------------------------------------------------------------- property
DEFECTS = {
    "good": lambda name: odezoo.hookimpl(lambda register: register(family(name))),
    "extra_arg": lambda name: odezoo.hookimpl(lambda register, extra: register(family(name))),
    "raises": lambda name: odezoo.hookimpl(lambda register: 1 / 0),
    "returns": lambda name: odezoo.hookimpl(lambda register: [family(name)]),
    "takes_builtin": lambda name: odezoo.hookimpl(lambda register: register(family("rk4_uv"))),
    "liar": lambda name: odezoo.hookimpl(lambda register: register(family(name, order=3))),
    "unmarked": lambda name: (lambda register: register(family(name))),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plugins=st.lists(st.tuples(st.sampled_from(sorted(DEFECTS)), st.sampled_from(HOOK_OPTIONS[:3]),
                                  st.booleans()), min_size=1, max_size=5))
def test_any_mix_of_plugins_leaves_builtins_and_good_plugins_working(monkeypatch, solver_table, plugins):
    """Whatever mix of good and defective plugins (and hookimpl ordering options) is installed,
    loading completes, every built-in keeps its name, good plugins register, and every
    defective one is reported by its distribution."""
    dists = []
    for i, (kind, options, misspell) in enumerate(plugins):
        hook = DEFECTS[kind](f"fam_{i}")
        if options and hasattr(hook, "odezoo_impl"):
            hook.odezoo_impl.update(options)
        hook_name = "odezoo_register_familes" if misspell else "odezoo_register_families"
        module_plugin(monkeypatch, f"fake_mix_{i}", **{hook_name: hook})
        dists.append(FakeDistribution(f"mix-dist-{i}", [entry(f"mix{i}", f"fake_mix_{i}")]))
    registry, messages = load(monkeypatch, *dists)
    assert_builtins_intact(registry)
    for i, (kind, _, misspell) in enumerate(plugins):
        works = kind == "good" and not misspell
        assert (f"fam_{i}" in registry.families()) == works
        reported = any(f"mix-dist-{i} 1.0" in m for m in messages)
        assert reported != works


# ---------------------------------------------------------------------------- end to end
def test_import_odezoo_survives_an_installed_broken_plugin(tmp_path):
    """A real (fake-installed) distribution whose hookimpl pluggy rejects: ``import odezoo``
    still works, lists the built-ins and names the distribution in its warning."""
    (tmp_path / "brokenplug.py").write_text(textwrap.dedent("""
        import odezoo

        @odezoo.hookimpl
        def odezoo_register_families(register, not_an_argument):
            pass
    """))
    info = tmp_path / "brokenplug-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[odezoo]\nbroken = brokenplug\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    run = subprocess.run([sys.executable, "-c", "import odezoo; print(sorted(odezoo.families()))"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "rk4_uv" in run.stdout
    assert "brokenplug 0.3" in run.stderr and "not_an_argument" in run.stderr
