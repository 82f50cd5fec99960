"""Options shared by the commands that run work: threads, printing the resolved config,
and flags versus ``key=value`` overrides (one meaning per flag, issue 14)."""

from __future__ import annotations

import typer
import yaml
from pydantic import BaseModel

from kdlens.config.loading import parse_override
from kdlens.errors import KdlensError

THREADS_HELP = ("torch CPU threads (default: the cores not busy with other processes, so a loaded "
                "machine is not oversubscribed)")
PRINT_CONFIG_HELP = "print the resolved configuration as YAML and exit (nothing runs)"


def combine_overrides(flags: list[str], overrides: list[str]) -> list[str]:
    """Flags then ``key=value`` overrides; a key set by both is an error naming both."""
    from_flags = {".".join(parse_override(f)[0]): f for f in flags}
    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key in from_flags:
            raise KdlensError(
                f"{key!r} is set twice: by a flag ({from_flags[key]}) and by the override {text!r}; give one"
            )
    return flags + overrides


def print_config(cfg: BaseModel) -> None:
    """The resolved config, as the run directory's ``config.yaml`` would hold it; then exit 0."""
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
    raise typer.Exit(0)
