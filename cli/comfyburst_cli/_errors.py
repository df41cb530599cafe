"""Every failure of a command as one clear message on stderr and exit status 2.

Messages carry user input and API text, so they are printed as plain text, never as Rich
markup (a `[/FILENAME]` in them would otherwise crash the printer).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
import typer
from rich.console import Console
from rich.text import Text

from comfyburst.client import ApiError
from comfyburst.errors import ComfyBurstError

EXIT_ERROR = 2
errors = Console(stderr=True, soft_wrap=True)  # long paths and URLs stay whole


class CliError(Exception):
    """A command cannot go on; the message says what to do instead."""


def report(message: str) -> None:
    errors.print(Text.assemble(("error: ", "bold red"), message))


def describe_api_error(exc: ApiError) -> str:
    lines = [f"the API answered {exc.status} ({exc.code}): {exc.message}"]
    lines += exc.node_error_lines()
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    field = error.get("field") if isinstance(error, dict) else None
    if field:
        lines.append(f"  field: {field}")
    return "\n".join(lines)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the errors a command can meet into `error: …` and exit status 2."""
    try:
        yield
    except ApiError as exc:
        message = describe_api_error(exc)
    except (CliError, ValueError) as exc:
        message = str(exc)
    except ComfyBurstError as exc:
        message = exc.message
    except requests.ConnectionError as exc:
        url = str(exc.request.url) if exc.request is not None else "the API"
        message = f"cannot reach {url}: is COMFYBURST_API_URL right and the API up?"
    except requests.RequestException as exc:
        message = f"request failed: {exc}"
    except TimeoutError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    else:
        return
    report(message)
    raise typer.Exit(EXIT_ERROR)
