"""A local module that is not pip-installable (see examples/local_module.py)."""


def triple(x):
    return 3 * x
