"""Stripe's form encoding (`a[b][c]=v`, `items[0][price]=p`, `expand[]=x`) and typed access to it."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from sync_pipeline.sandbox.stripe.errors import invalid_param, missing_param

_KEY_PART = re.compile(r"\[([^\[\]]*)\]")
_APPEND = object()


def _split_key(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_KEY_PART.findall("[" + rest)]


def _insert(tree: dict, parts: list[str], value: str) -> None:
    node = tree
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        key: Any = part
        if part == "":
            # `expand[]=a&expand[]=b`: each occurrence appends.
            key = (_APPEND, len(node))
        if last:
            node[key] = value
        else:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, tuple) or (isinstance(k, str) and k.isdigit()) for k in node):
        ordered = sorted(node.items(), key=lambda kv: kv[0][1] if isinstance(kv[0], tuple) else int(kv[0]))
        return [_listify(v) for _, v in ordered]
    return {k: _listify(v) for k, v in node.items()}


def decode_form(encoded: str) -> dict[str, Any]:
    """Nested dicts and lists of strings from a form-encoded body or query string."""
    tree: dict = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        _insert(tree, _split_key(key), value)
    return _listify(tree)


# --- typed access: every value on the wire is a string -------------------------------------------


def get_str(params: dict, name: str, default: str | None = None, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise missing_param(name)
        return default
    if not isinstance(value, str):
        raise invalid_param(f"Invalid string: {name}", name)
    return value


def get_int(
    params: dict, name: str, default: int | None = None, required: bool = False, param: str | None = None
) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing_param(param or name)
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_param(f"Invalid integer: {value}", param or name) from None


def get_bool(params: dict, name: str, default: bool | None = None) -> bool | None:
    value = params.get(name)
    if value is None:
        return default
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise invalid_param(f"Invalid boolean: {value}", name)


def get_list(params: dict, name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def get_dict(params: dict, name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid_param(f"Invalid object: {name}", name)
    return value


def get_choice(params: dict, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    value = get_str(params, name, default)
    if value is not None and value not in choices:
        raise invalid_param(f"Invalid {name}: must be one of {', '.join(choices)}", name)
    return value


def merge_metadata(current: dict[str, str], params: dict) -> dict[str, str]:
    """Stripe semantics: keys merge, an empty value deletes a key, `metadata=""` clears all."""
    if "metadata" not in params:
        return current
    update = params["metadata"]
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise invalid_param("Invalid object", "metadata")
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged
