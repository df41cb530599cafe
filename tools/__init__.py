"""Developer tools run from a checkout (`python -m tools.NAME`); nothing deployed imports them."""
