# Type information for the optional C extension built from _assemble.c.
from typing import Any

def assemble(pieces: tuple[bytes, ...], columns: list[Any], n: int, /) -> list[bytes]: ...
