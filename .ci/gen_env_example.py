"""Regenerate .env.example from Settings: every field, its default, and the section comment above it."""

import pathlib
import re

from ticker.infra.runtime.settings import Settings

src = pathlib.Path("infra/runtime/settings.py").read_text().splitlines()
out = ["# ticker configuration. Copy to .env and edit; every variable is optional unless noted.",
       "# Environment variables override .env. Values shown are the defaults.", ""]
fields = Settings.model_fields
for line in src:
    head = re.match(r"\s+# --- (.+?) -+$", line)
    if head:
        out += ["", f"# ---- {head[1]} ----"]
        continue
    m = re.match(r"\s+(\w+): .*", line)
    if m and m[1] in fields:
        name = m[1]
        default = fields[name].default
        comment = line.split("#", 1)[1].strip() if "#" in line else ""
        shown = "" if default is None or "Secret" in repr(fields[name].annotation) else default
        if hasattr(shown, "strftime"):
            shown = shown.strftime("%H:%M")
        if comment:
            out.append(f"# {comment}")
        out.append(f"{name.upper()}={shown}")
pathlib.Path(".env.example").write_text("\n".join(out).replace("\n\n\n", "\n\n") + "\n")
