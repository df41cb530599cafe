"""ComfyBurst shared package: one schema, the domain rules and thin cloud adapters."""

SCHEMA_VERSION = 1
