"""Config files: YAML and dotted overrides → a validated frozen dataclass, and back
(`to_dict`/`from_dict` for the copy a checkpoint embeds, `to_yaml` for a run folder). Generic over
the dataclasses of `latentdiff.config`: unknown keys, wrong types, missing values, non-finite
numbers and broken YAML raise a one-line `UserError`.
"""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (ConfigKeyError, MissingMandatoryValue,
                              OmegaConfBaseException, ValidationError)

from latentdiff.errors import UserError

T = TypeVar("T")
BUNDLED_CONFIGS = Path(__file__).parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A path to a YAML file, or the name of a bundled config
    (`ldm-digits` → latentdiff/configs/ldm-digits.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = BUNDLED_CONFIGS / f"{path.stem}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml")))
    raise UserError(f"config {str(name)!r} not found; give a YAML path or a bundled config "
                    f"name ({names})")


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: list[str] | tuple = ()) -> T:
    """YAML file (optional) + dotted overrides → a validated `cls` instance."""
    where = str(path) if path is not None else "overrides"
    try:
        layers = [OmegaConf.structured(cls)]
        if path is not None:
            loaded = OmegaConf.load(resolve_config_path(path))
            if not isinstance(loaded, DictConfig):
                raise UserError(f"{where}: the YAML must be a mapping of sections (model:, data:, "
                                "train:, …), not a "
                                f"{type(OmegaConf.to_container(loaded)).__name__}")
            layers.append(loaded)
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        _finite(OmegaConf.to_container(merged))
        return OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        valid = _keys_near(cls, e.full_key)
        raise UserError(f"{where}: unknown config key {e.full_key!r}; valid "
                        f"keys: {valid}") from None
    except MissingMandatoryValue as e:
        raise UserError(f"{where}: config key {e.full_key!r} is required; set it in the YAML or as "
                        f"{e.full_key}=...") from None
    except ValidationError as e:
        raise UserError(f"{where}: {e.full_key!r}: {str(e).splitlines()[0]}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}{at}: not valid YAML ({problem}); fix the file") from None
    except (OmegaConfBaseException, ValueError) as e:  # bad dotlist entries
        raise UserError(f"{where}: cannot read config: {str(e).splitlines()[0]}") from None


def _finite(values: dict, prefix: str = "") -> None:
    """Refuse nan and ±inf anywhere in a config (nested sections and lists included), naming the
    key."""
    for key, value in values.items():
        if isinstance(value, dict):
            _finite(value, f"{prefix}{key}.")
        elif any(isinstance(v, float) and not math.isfinite(v)
                 for v in (value if isinstance(value, list) else [value])):
            raise UserError(f"{prefix}{key}={value}: give a finite number")


def _keys_near(cls: type, full_key: str) -> str:
    """The valid field names at the level where `full_key` failed."""
    for part in full_key.split(".")[:-1]:
        sub = {f.name: f.type for f in dataclasses.fields(cls)}.get(part)
        if not (isinstance(sub, type) and dataclasses.is_dataclass(sub)):
            break
        cls = sub
    return ", ".join(f.name for f in dataclasses.fields(cls))


def to_dict(config: Any) -> dict:
    """A config dataclass → plain JSON-able dict (tuples become lists), equal to its JSON round
    trip."""
    return json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(config))))


def from_dict(cls: type[T], data: dict) -> T:
    """Inverse of `to_dict`, with the same validation as `load_config`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(data))
        _finite(OmegaConf.to_container(merged))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise UserError(f"stored config does not fit {cls.__name__}: "
                        f"{str(e).splitlines()[0]}") from None


def to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def check(condition: bool, message: str) -> None:
    """A config check: `message` as a one-line `UserError` unless `condition`."""
    if not condition:
        raise UserError(message)
