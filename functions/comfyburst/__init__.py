"""ComfyBurst shared package: one schema, the domain rules and thin cloud adapters."""

from typing import Final

# Final, so type checkers see Literal[1] where the schema defaults to it.
SCHEMA_VERSION: Final = 1
