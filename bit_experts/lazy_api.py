"""A package's public names, imported on first use (PEP 562 module `__getattr__`).

`install(globals(), {"name": ("package.module", "attribute"), ...})` in a package's `__init__`
gives it `__all__`, a `__getattr__` that imports `package.module` only when `package.name` is
first read (and caches it), and a `__dir__` that lists the names. Unknown names raise
AttributeError, so `from package import submodule` still imports the submodule.

`module("tensorflow")` stands for one module the same way: imported when first used.
"""

import importlib


def install(namespace, table):
    """Adds `__all__`, `__getattr__` and `__dir__` for `table` to a package's `namespace`."""
    package = namespace["__name__"]

    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = table[name]
        value = getattr(importlib.import_module(module), attribute)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(table))

    namespace.update(__all__=sorted(table), __getattr__=__getattr__, __dir__=__dir__)


class LazyModule:
    """Stands for the module `__name__` and imports it on first attribute access (`module`)."""

    def __init__(self, name):
        self.__name__ = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self.__name__), attribute)

    def __repr__(self):
        return f"<module {self.__name__!r}, imported on first use>"


def module(name) -> LazyModule:
    """A stand-in for module `name` that imports it when one of its attributes is first read.

    `tf = lazy_api.module("tensorflow")` at the top of a module lets its functions use `tf.` as
    usual while importing the module stays cheap: our commands parse and check their flags before
    TensorFlow (seconds to import) is loaded. Nothing is added to `sys.modules` until then.
    """
    return LazyModule(name)
