"""The one YAML reader of geostp: plain data, no anchors or aliases (recipes, catalogs, ``--set`` and ``--arg``).

An alias repeats a node without copying its text, so a few hundred bytes of nested aliases stand for billions of
values (a "billion laughs" bomb) that expansion, validation or printing then walks for ever.  geostp's YAML texts
are small enough to be written out in full, so :func:`load_yaml` refuses every anchor (and with it every alias
that could refer to one) with a :class:`YamlAliasError` that names the file or option and the line.

A mapping that gives the same key twice is refused too (:class:`YamlDuplicateKeyError`, naming the key and both
lines): plain YAML loaders keep the second value without a word, so a catalog source or a recipe section written
twice would silently replace the first.
"""

from __future__ import annotations

from typing import Any

import yaml

from geostp.errors import ConfigError

__all__ = ["load_yaml", "read_yaml_text", "YamlAliasError", "YamlDuplicateKeyError"]


class YamlAliasError(ConfigError):
    """A YAML text geostp reads holds an anchor or alias (refused: see :func:`load_yaml`)."""


class YamlDuplicateKeyError(ConfigError):
    """A YAML text geostp reads gives the same key twice in one mapping (refused: see :func:`load_yaml`)."""


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: Any, second: Any) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


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

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # Look at the keys as written, before a merge key (``<<``) adds its own: a key written twice in the same
        # mapping is a mistake (the second would win silently); a merged key that the mapping overrides is not.
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: yaml's own error says so
                    continue
                if first is not key_node.start_mark:
                    raise _DuplicateKey(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, *, where: str) -> Any:
    """Parse geostp's YAML (a recipe, a catalog, a ``--set`` value) safely: plain data, no anchors or aliases.

    Raises
    ------
    YamlAliasError
        A :class:`~geostp.errors.ConfigError` naming ``where`` (the file, or the option) and the line and column
        of an anchor.
    YamlDuplicateKeyError
        A :class:`~geostp.errors.ConfigError` naming ``where``, the key given twice in one mapping and both lines.
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
    except _DuplicateKey as exc:
        at = exc.second
        raise YamlDuplicateKeyError(f"{where}: line {at.line + 1}, column {at.column + 1}: duplicate key {exc.key!r} "
                                    f"(first given on line {exc.first.line + 1}); expected each key once in a "
                                    "mapping (YAML would keep only the second value)") from None
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
