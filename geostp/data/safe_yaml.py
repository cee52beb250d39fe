"""The one YAML reader of geostp: plain data, no anchors or aliases (recipes, catalogs, ``--set`` and ``--arg``).

An alias repeats a node without copying its text, so a few hundred bytes of nested aliases stand for billions of
values (a "billion laughs" bomb) that expansion, validation or printing then walks for ever.  geostp's YAML texts
are small enough to be written out in full, so :func:`load_yaml` refuses every anchor (and with it every alias
that could refer to one) with a :class:`YamlAliasError` that names the file or option and the line.
"""

from __future__ import annotations

from typing import Any

import yaml

from geostp.errors import ConfigError

__all__ = ["load_yaml", "read_yaml_text", "YamlAliasError"]


class YamlAliasError(ConfigError):
    """A YAML text geostp reads holds an anchor or alias (refused: see :func:`load_yaml`)."""


class _AliasFound(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__(mark)
        self.mark = mark


class _NoAliasLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing anchors (``&name``), so that no alias (``*name``, ``<<: *name``) resolves."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        # Every alias needs an anchor defined before it: refusing the anchors refuses every usable alias, and an
        # alias of no anchor stays what yaml makes of it (an error, so that ``--arg pattern=*.gif`` is text).
        if not isinstance(event, yaml.AliasEvent) and getattr(event, "anchor", None) is not None:
            raise _AliasFound(event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str, *, where: str) -> Any:
    """Parse geostp's YAML (a recipe, a catalog, a ``--set`` value) safely: plain data, no anchors or aliases.

    Raises
    ------
    YamlAliasError
        A :class:`~geostp.errors.ConfigError` naming ``where`` (the file, or the option) and the line and column
        of an anchor.
    ConfigError
        Naming ``where`` for text that is not valid YAML (an alias of no anchor included).
    """
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasFound as exc:
        m = exc.mark
        raise YamlAliasError(f"{where}: line {m.line + 1}, column {m.column + 1}: YAML anchors and aliases (&name, "
                             "*name, <<: *name) are not allowed; expected plain YAML with every value written out "
                             "(aliases let a few bytes expand into billions of values)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply; expected a recipe or catalog of a few levels") from None


def read_yaml_text(path: Any, *, what: str) -> str:
    """The text of the YAML file ``path`` (``what`` it is: ``"recipe"``, ``"catalog"``), read as UTF-8.

    Raises
    ------
    ConfigError
        Naming the file where it is a folder (or not a regular file), cannot be read, or is not UTF-8 text (with
        the byte offset of the first byte that is not).
    """
    if hasattr(path, "is_dir") and path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; expected a YAML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror or exc}); expected a readable YAML file") \
            from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); expected "
                          "a YAML file in UTF-8 (a binary file, or text saved in another encoding?)") from None
