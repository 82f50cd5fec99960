"""Turn user errors into a one-paragraph message and exit code 2 (no traceback)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from kdlens.errors import KdlensError, TrainingDivergedError

F = TypeVar("F", bound=Callable)
_err = Console(stderr=True)


def user_errors_exit_2(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KdlensError as exc:
            _err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(code=exc.exit_code) from None
        except PermissionError as exc:  # an output the user cannot write: one line, not a traceback
            where = exc.filename or "a file"
            _err.print(f"[bold red]error:[/] cannot write {where}: permission denied; choose an output you can "
                       "write (--out DIR), or ask for write access", highlight=False, markup=True)
            raise typer.Exit(code=2) from None
        except TrainingDivergedError as exc:  # a run failure, not bad input: exit 1
            _err.print(f"[bold red]run failed:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> None:
    _err.print(f"[bold red]error:[/] {message}")
    sys.exit(2)
