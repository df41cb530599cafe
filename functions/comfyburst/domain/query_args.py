"""Query-string arguments of the API's GET requests (pure): the one rule that an argument is
given at most once, shared by the job list, the usage report and a job's long poll."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from comfyburst.errors import InvalidRequest


def single_arg(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The argument's one value (None: absent); given more than once, a 400 naming it."""
    values = list(args.get(name, []))
    if len(values) > 1:
        raise InvalidRequest(f"{name} may be given once", field=name)
    return values[0] if values else None
