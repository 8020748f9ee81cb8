"""Typed configuration: dataclass sections, YAML files, ``key=value`` overrides, aliases.

A config is a dataclass whose fields are section dataclasses (``model``, ``task``, ...). Every
field has a default that runs and a one-line comment right above it, which is also its help
text (``bgpo train --help-config``). Overrides name a field as ``section.field`` or, where the
name is unique, as the bare ``field``; names users already know from d1/TRL are accepted as
aliases (``max_completion_length``, ``diffusion_steps``, ``num_generations``, ...). Unknown
keys are errors that name the key and the closest valid ones. Values are parsed as YAML
scalars and checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a bad value."""


def sections(cfg) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def field_paths(cfg_cls) -> dict[str, dataclasses.Field]:
    """``{"section.field": Field}`` for every leaf field of a config class."""
    out = {}
    for sec in dataclasses.fields(cfg_cls):
        for f in dataclasses.fields(_resolved_type(cfg_cls, sec)):
            out[f"{sec.name}.{f.name}"] = f
    return out


def _resolved_type(owner, f: dataclasses.Field):
    return typing.get_type_hints(owner)[f.name]


def field_help(cls) -> dict[str, str]:
    """The comment line(s) right above each field of dataclass ``cls``."""
    helps, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# ").strip())
            continue
        m = re.match(r"(\w+)\s*:", stripped)
        if m and pending:
            helps[m.group(1)] = " ".join(pending)
        pending = []
    return helps


def describe(cfg_cls, aliases: dict[str, str]) -> str:
    """Every field with its type, default and description, one per line, by section."""
    inverse: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        inverse.setdefault(target, []).append(alias)
    lines = []
    for sec in dataclasses.fields(cfg_cls):
        sec_cls = _resolved_type(cfg_cls, sec)
        helps = field_help(sec_cls)
        lines.append(f"{sec.name}:")
        for f in dataclasses.fields(sec_cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            also = inverse.get(f"{sec.name}.{f.name}")
            alias = f" (alias: {', '.join(also)})" if also else ""
            lines.append(f"  {f.name} = {default!r}{alias}\n      {helps.get(f.name, '')}")
    return "\n".join(lines)


def _coerce(value, hint, key: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-7" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _unknown(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    close += [v for v in difflib.get_close_matches(leaf, valid, n=3, cutoff=0.6) if v not in close]
    hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def resolve_key(cfg_cls, key: str, aliases: dict[str, str]) -> str:
    """Map ``key`` (dotted, bare or alias) to its ``section.field`` path."""
    paths = field_paths(cfg_cls)
    key = aliases.get(key, key)
    if key in paths:
        return key
    owners = [p for p in paths if p.split(".", 1)[1] == key]
    if len(owners) == 1:
        return owners[0]
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous; write one of {', '.join(owners)}")
    valid = sorted(set(paths) | {p.split('.', 1)[1] for p in paths} | set(aliases))
    raise _unknown(key, valid)


def build(cfg_cls, values: dict[str, Any], aliases: dict[str, str]):
    """Construct ``cfg_cls`` from flat ``{key: value}`` (keys as accepted by :func:`resolve_key`)."""
    per_section: dict[str, dict[str, Any]] = {}
    paths = field_paths(cfg_cls)
    for key, value in values.items():
        path = resolve_key(cfg_cls, key, aliases)
        sec, name = path.split(".", 1)
        sec_cls = _resolved_type(cfg_cls, next(f for f in dataclasses.fields(cfg_cls) if f.name == sec))
        hint = _resolved_type(sec_cls, paths[path])
        per_section.setdefault(sec, {})[name] = _coerce(value, hint, path)
    kwargs = {}
    for sec in dataclasses.fields(cfg_cls):
        sec_cls = _resolved_type(cfg_cls, sec)
        try:
            kwargs[sec.name] = sec_cls(**per_section.get(sec.name, {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{sec.name}: {exc}") from None
    return cfg_cls(**kwargs)


def flatten_yaml(data: Any, source: str) -> dict[str, Any]:
    """``{"section": {"field": v}}`` or flat keys → ``{"section.field": v}``."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[str(key)] = value
    return flat


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a.b": 1, "c": "x"}`` with YAML scalar parsing."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load(cfg_cls, path: str | None, overrides: list[str], aliases: dict[str, str]):
    """A config from an optional YAML file plus ``key=value`` overrides (overrides win)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path) as f:
                values.update(flatten_yaml(yaml.safe_load(f), path))
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    values.update(parse_overrides(overrides))
    return build(cfg_cls, values, aliases)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def commented_yaml(cfg, header: str = "") -> str:
    """``cfg`` as YAML with each field's help as a comment above it (for files in ``configs/``)."""
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    for sec_name, sec in sections(cfg).items():
        helps = field_help(type(sec))
        lines.append(f"{sec_name}:")
        for f in dataclasses.fields(sec):
            lines.append(f"  # {helps.get(f.name, '')}")
            dumped = yaml.safe_dump({f.name: getattr(sec, f.name)}, default_flow_style=True, width=1000)
            lines.append("  " + dumped.strip()[1:-1])
    return "\n".join(lines) + "\n"
