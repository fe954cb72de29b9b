"""Secrets never stored or printed: `redact(text)`, `redact_frame(df)`, `watch_env(name)`.

    from distill.pipeline.secrets import redact, watch_env
    watch_env("DEEPSEEK_API_KEY")        # its value is now a secret in this process
    redact(f"bad key {key}")             # 'bad key [redacted]'

The secrets are the values of the environment variables that hold credentials: those a config
names (`watch_env`, called by the teacher endpoint's `api_key_env` when it is validated), the
Hugging Face token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, or the file `huggingface-cli login`
writes), and literal values registered with `add_secret` (a key written where a variable's name
belongs). They are read when redacting, so a variable set later is covered too.

Where they are removed: the HTTP teacher's rows and errors (before any truncation, so no
fragment survives), every DistillError's message and fix, every Parquet file and JSON document
the run store writes (write_parquet, write_json), and all the CLI prints (its console writes
through `RedactedStream`; uncaught tracebacks through `redacted_traceback`). Values shorter than MIN_LEN are not treated as secrets (redacting "a"
would mangle every text).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MASK = "[redacted]"
MIN_LEN = 8
HF_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
WATCHED_VAR = "DISTILL_SECRET_VARS"  # the names watched, for child processes
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_watched: set[str] = set(HF_TOKEN_VARS)
_literals: set[str] = set()


def watch_env(name: str) -> None:
    """Treat the value of the environment variable `name` as a secret from now on, here and in
    processes started from here later (Ray workers): the names travel in WATCHED_VAR."""
    _watched.add(name)
    names = set(filter(None, os.environ.get(WATCHED_VAR, "").split(",")))
    if name not in names:
        os.environ[WATCHED_VAR] = ",".join(sorted(names | {name}))


def add_secret(value: str) -> None:
    """Treat `value` itself as a secret from now on."""
    if value and len(value) >= MIN_LEN:
        _literals.add(value)


def looks_like_env_name(name: str) -> bool:
    """A plausible variable name: letters, digits and _, and not key-shaped (20+ characters mixing
    upper case, lower case and digits, as `hf_...` tokens do)."""
    if not _NAME_RE.fullmatch(name):
        return False
    mixed = (any(c.islower() for c in name) and any(c.isupper() for c in name)
             and any(c.isdigit() for c in name))
    return not (len(name) >= 20 and mixed)


def _hf_token_file() -> str:
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    path = Path(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token"))
    try:
        return path.read_text().strip() if path.is_file() else ""
    except OSError:
        return ""


def secrets() -> list[str]:
    """The current secret values, longest first (so a secret containing another goes whole)."""
    names = _watched | set(os.environ.get(WATCHED_VAR, "").split(","))
    values = {os.environ.get(name, "") for name in names if name} | _literals | {_hf_token_file()}
    return sorted((v for v in values if len(v) >= MIN_LEN), key=len, reverse=True)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """`text` with every secret (and each of `extra`) replaced by MASK, and so is a secret's
    first MIN_LEN or more characters (what is left of it where a message was cut short before
    it reached us)."""
    for value in [*secrets(), *(e for e in extra if e and len(e) >= MIN_LEN)]:
        if value[:MIN_LEN] in text:
            text = _mask(text.replace(value, MASK), value)
    return text


def _mask(text: str, value: str) -> str:
    """`text` with each run of `value`'s leading characters (MIN_LEN or more) masked."""
    out, at = [], 0
    while (start := text.find(value[:MIN_LEN], at)) >= 0:
        end = start + MIN_LEN
        while end < len(text) and end - start < len(value) and text[end] == value[end - start]:
            end += 1
        out += [text[at:start], MASK]
        at = end
    return "".join(out) + text[at:]


def redact_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df`, or a copy with secrets masked in its text cells (the same object when none occur)."""
    values = secrets()
    if not values or df.empty:
        return df
    import pandas as pd
    from pandas.api.types import is_string_dtype

    out = df
    for i, dtype in enumerate(df.dtypes):
        if not (dtype == object or is_string_dtype(dtype)):
            continue
        cells = df.iloc[:, i].to_numpy(dtype=object)
        hits = [n for n, v in enumerate(cells) if isinstance(v, str) and any(s in v for s in values)]
        if hits:
            out = df.copy() if out is df else out
            cells = cells.copy()
            for n in hits:
                cells[n] = redact(cells[n])
            out.isetitem(i, pd.Series(cells, index=df.index, dtype=dtype))
    return out


class RedactedStream:
    """A text stream for consoles: masks secrets, then writes to sys.stdout (or sys.stderr) as
    it is at that moment; everything else is the real stream's."""

    def __init__(self, name: str = "stdout"):
        self._name = name

    def write(self, text: str) -> int:
        return getattr(sys, self._name).write(redact(text))

    def __getattr__(self, attr: str):
        return getattr(getattr(sys, self._name), attr)


def redacted_traceback(exc: BaseException) -> str:
    """`exc`'s traceback as Python prints it, secrets masked (the CLI prints uncaught errors so)."""
    import traceback

    return redact("".join(traceback.format_exception(exc)))
