"""How an error message shows a value a user gave: ``shown(value)``, its ``repr`` cut short.

A value in a message may be anything a file held: a 40-character partition name, or a list that YAML
aliases made a billion items long. ``shown`` never builds more than a bounded part of the ``repr``
(``reprlib``: a few items per level, a few levels) and cuts the result to ``limit`` characters, so a
message stays one readable line whatever the value is. Every message that quotes a value from a file,
an override or a command line goes through it.

Paths a user writes in a suite, an override or the environment (``data_root: ~/data``) are read
through :func:`expand_path`: ``~`` and ``$VARS`` mean what they mean in a shell.
"""

from __future__ import annotations

import os
import re
import reprlib

LIMIT = 80

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 4, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = LIMIT, LIMIT, LIMIT


def shown(value: object, limit: int = LIMIT) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters (longer ones end in ``…``)."""
    text = repr(value) if isinstance(value, str) and len(value) <= limit else _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def expand_path(path: str | None) -> str | None:
    """A path a user wrote (suite, override, environment), with ``~`` and ``$VARS``/``${VARS}`` expanded as
    a shell would (the recorded path is the expanded one). A variable that is not set stays as written,
    so a check of the path can name it (:func:`unset_variables`)."""
    if path is None:
        return None
    return os.path.expandvars(os.path.expanduser(str(path)))


def unset_variables(path: str) -> list[str]:
    """The ``$NAME``/``${NAME}`` left in ``path`` by :func:`expand_path`: variables that are not set."""
    return re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", str(path))


_OVERRIDE_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-\[\]]*=")


def path_arg(text: str) -> str:
    """An argparse ``type`` for every option that takes a path (``--root``, ``--tables``, ``--run-dir``, …): a
    ``key=value`` override in its place is refused. ``--root $UNSET seeds=[0]`` reaches argparse as ``--root
    seeds=[0]`` (the shell drops the empty variable), which took the override as the results folder and trained
    every cell into ``./seeds=[0]/``. An empty value (``--root "$UNSET"``) is refused too: ``--root`` read it as the
    current folder, ``--tables`` as the default ``results/tables``. So is ``-`` (it wrote a file named ``-``)."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{shown(text)} is an empty path (a variable that is not set, in quotes, as in --root \"$ROOT\"?): it would "
            "silently mean the current folder or the default one; give the path")
    if _OVERRIDE_LIKE.match(text):
        raise argparse.ArgumentTypeError(
            f"{shown(text)} is a key=value override, not a path (an empty variable before it, as in --root $UNSET, "
            f"lets the next word take its place); give the path first, then the overrides (a path of that name: "
            f"./{text})")
    if text == "-":  # read by many tools as standard input/output; here it was a file named "-"
        raise argparse.ArgumentTypeError("'-' (standard input or output) is not a path here: give a file or folder "
                                         "path (./- for one named '-')")
    return text


def binary_file(data: bytes, what: str) -> str | None:
    """Why ``data`` is no ``what`` (a text file) at all: it holds a NUL byte, as arrays, checkpoints and archives
    do and text never does (None when it holds none). Said before any advice to re-save the file as UTF-8."""
    nul = data.find(b"\x00", 0, 1 << 16)
    if nul < 0:
        return None
    return f"a binary file (a NUL byte at offset {nul}), not a {what}; give the path of the {what}"
