import pytest

from avafn.registry import Registry, RegistryError


def test_register_get_names_and_errors():
    reg: Registry = Registry("widget")

    @reg.register("a")
    class A:
        pass

    reg.register("b", int)
    assert reg.get("a") is A and reg.get("b") is int
    assert reg.names() == ["a", "b"] and "a" in reg and "c" not in reg
    with pytest.raises(RegistryError, match=r"unknown widget 'c' \(known: a, b\)"):
        reg.get("c")
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("a", str)
    reg.register("a", str, replace=True)
    assert reg.get("a") is str
    reg.register("a", str)  # the same object again is not a conflict


def test_builtin_modules_are_imported_on_lookup():
    reg: Registry = Registry("thing", builtin=("json",))
    assert reg.names() == []  # importing a module that registers nothing is fine
