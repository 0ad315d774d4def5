"""What every benchmark script does with its Markdown table: print it, and write it where --out says."""

from pathlib import Path


def emit(lines: list[str], out: str | None) -> int:
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0
