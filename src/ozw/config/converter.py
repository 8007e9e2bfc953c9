"""The one strict cattrs converter of the configuration: file tables ⇄ model.

Structuring coerces nothing (``"1"`` is not 1, ``1`` is not ``true``), refuses
unknown keys and applies each field's rule; unstructuring writes the file's shape
back (durations as text, no ``None``, the backend as its own table, never the API
key), so ``ozw config show`` is ``unstructure`` + ``tomli_w``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ozw.config.model import (
    BACKEND_CLASSES,
    BACKEND_NAMES,
    BackendConfig,
    WorkerConfig,
    backend_name,
)
from ozw.config.rules import TOML, field_rule, toml_kind
from ozw.strict import Invalid, register_strict_scalars, structure_items


def _is_literal(type_: Any) -> bool:
    origin: object = get_origin(type_)
    return origin is Literal


def _is_tuple(type_: Any) -> bool:
    return get_origin(type_) is tuple


def _is_backend(type_: Any) -> bool:
    return bool(type_ == BackendConfig)


def _structure_literal(value: object, type_: Any) -> object:
    allowed = get_args(type_)
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _table(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a table, got {toml_kind(value)}")
    return value


def make_converter() -> cattrs.Converter:
    """The converter; see the module's docstring."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    register_strict_scalars(converter, TOML)

    def structure_tuple(value: object, type_: Any) -> tuple[Any, ...]:
        # cattrs would happily iterate a string into characters; TOML wants an array.
        if not isinstance(value, list):
            raise Invalid(f"expected an array, got {toml_kind(value)}")
        (item_type, *_) = get_args(type_)
        return tuple(structure_items(converter, value, item_type))

    def structure_backend(value: object, _type: Any) -> BackendConfig:
        tables = _table(value)
        if len(tables) != 1 or next(iter(tables)) not in BACKEND_NAMES:
            raise Invalid(f"expected one table of {', '.join(BACKEND_NAMES)}")
        ((name, table),) = tables.items()
        cls = BACKEND_CLASSES[name]  # type: ignore[index]  # checked just above
        try:
            backend: BackendConfig = converter.structure(table, cls)
        except Exception as exc:  # re-raised with the table's name in its path
            exc.add_note(AttributeValidationNote(f"backend {name}", name, cls))
            raise ClassValidationError("backend", [exc], cls) from None
        return backend

    def structure_attrs(cls: type) -> Callable[[object, Any], object]:
        overrides = {
            field.name: override(struct_hook=_check_hook(found.check))
            for field in attrs.fields(cls)
            if (found := field_rule(field)) is not None
        }
        if cls is WorkerConfig:
            # The API key never comes from a file: at this level it is an unknown key.
            overrides["api_key"] = override(omit=True)
            overrides["warnings"] = override(omit=True)
        # mypy cannot tell **overrides from make_dict_structure_fn's keyword flags.
        generated: Callable[[Any, Any], object] = make_dict_structure_fn(
            cls,
            converter,
            **overrides,  # type: ignore[arg-type]
        )
        return lambda value, _type: generated(_table(value), cls)

    def unstructure_attrs(cls: type) -> Callable[[Any], dict[str, Any]]:
        overrides = {
            field.name: override(unstruct_hook=_dump_hook(found.dump))
            for field in attrs.fields(cls)
            if (found := field_rule(field)) is not None and found.dump is not None
        }
        if cls is WorkerConfig:
            overrides["api_key"] = override(omit=True)
            overrides["warnings"] = override(omit=True)
            overrides["backend"] = override(
                unstruct_hook=lambda backend: {
                    backend_name(backend): converter.unstructure(backend, type(backend))
                }
            )
        generated: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
            cls,
            converter,
            **overrides,  # type: ignore[arg-type]
        )
        # TOML has no null: an unset optional value is a key left out.
        return lambda obj: {k: v for k, v in generated(obj).items() if v is not None}

    converter.register_structure_hook_func(_is_literal, _structure_literal)
    converter.register_structure_hook_func(_is_tuple, structure_tuple)
    converter.register_structure_hook_func(_is_backend, structure_backend)
    converter.register_structure_hook_factory(attrs.has, structure_attrs)
    converter.register_unstructure_hook_factory(attrs.has, unstructure_attrs)
    return converter


def _dump_hook(dump: Callable[[Any], object]) -> Callable[[Any], object]:
    return lambda value: None if value is None else dump(value)


def _check_hook(check: Callable[[object], object]) -> Callable[[object, Any], object]:
    return lambda value, _type: check(value)


CONVERTER: Final = make_converter()
