"""Build the static HTML report for customer success from the run store.

The site is self-contained — HTML with inline CSS, JavaScript and SVG, no CDN, no
server — and opens from the file system or any static host::

    report/
      index.html           portfolio: summary (rendered here) + paginated table (rendered by JS)
      model.html           model versions, evaluation, calibration, drivers, how to read the score
      account.html         one viewer page for every account: account.html#<account_id>
      accounts/s0000.js    account records, ~1,000 accounts per shard

Why this shape, for 100k accounts:

- The portfolio table is embedded as JSON (one array per account) in a
  ``<script type="application/json">`` and only one page of rows (50) is in the DOM;
  sorting, filtering and search run on the arrays. The summary (tiers, ARR at risk,
  the five accounts most at risk, the biggest movers) is plain HTML rendered at build
  time, so it shows before any script runs.
- Account pages are one viewer plus shards. Chromium blocks ``fetch`` of JSON from
  ``file://``, but ``<script src>`` works, so each shard is a ``.js`` file that calls
  ``pesShard(n, {...})``; the viewer finds an account's shard with the same FNV-1a
  hash of its id as :func:`shard_of`. One page per account would be 100k files
  (measured in ``benchmarks/RESULTS.md``).

Safety: every value from data is escaped. Templates use Jinja2 with autoescape; JSON
embedded in pages and shards goes through :func:`safe_json`, which escapes ``<``,
``>``, ``&`` and the JavaScript line separators, so data can never close a
``<script>`` tag or open a comment; the browser code puts data into the page only
with ``textContent`` and SVG attributes, never ``innerHTML``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from pes_ml.atomic import json_default
from pes_ml.errors import ConfigError, StoreError
from pes_ml.report.accounts import account_records, group_names
from pes_ml.report.data import (
    PORTFOLIO_COLUMNS,
    enrich_scores,
    load_report_data,
    portfolio_rows,
    summary,
    tier_label,
)
from pes_ml.report.model_info import model_context

if TYPE_CHECKING:
    from pes_ml.config import PesConfig
    from pes_ml.store import RunStore

logger = logging.getLogger(__name__)

SHARD_SIZE = 1000
"""Target accounts per shard file of the account viewer."""
MARKER = ".pes-report"
"""File that marks a folder as a pes_ml report, so a rebuild may replace it."""
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def safe_json(value: Any) -> str:
    """Compact JSON that is safe inside ``<script>`` (and as a JavaScript expression).

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026`` (they can only occur
    inside JSON strings, where these escapes mean the same characters), so no value can
    close the script element (``</script>``) or start a comment (``<!--``). NaN and
    infinities are refused: pass None for missing numbers.

    Examples
    --------
    >>> safe_json({"name": "</script><!--"})
    '{"name":"\\\\u003c/script\\\\u003e\\\\u003c!--"}'
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=json_default)
    for char, escape in _JSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def shard_of(account_id: str, n_shards: int) -> int:
    """The shard of an account: FNV-1a (32 bit) of its UTF-8 id, modulo the shard count.

    ``account.js`` computes the same hash, so ``account.html#<id>`` finds its shard.
    """
    h = _FNV_OFFSET
    for byte in account_id.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h % n_shards


def _number(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{float(value):,.{digits}f}"


def _money(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    number = float(value)
    sign = "-" if number < 0 else ""
    number = abs(number)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if number >= limit:
            return f"{sign}${number / limit:,.1f}{suffix}"
    return f"{sign}${number:,.0f}"


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    number = 100.0 * float(value)
    return f"{number:.1f}%" if number < 10 else f"{number:.0f}%"


def _signed(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    number = float(value)
    text = f"{abs(number):,.0f}"
    return ("+" if number > 0 else "\u2212" if number < 0 and text != "0" else "±") + text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pes_ml.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=_number, money=_money, percent=_percent, signed=_signed)
    env.globals.update(tier_label=tier_label)
    return env


def _static(name: str) -> str:
    return (resources.files("pes_ml.report") / "static" / name).read_text(encoding="utf-8")


def _assets() -> dict[str, str]:
    """Our own CSS and JavaScript, inlined into each page (trusted: never built from data)."""
    common = _static("common.js")
    return {
        "css": _static("report.css"),
        "portfolio_js": common + _static("portfolio.js"),
        "account_js": common + _static("account.js"),
    }


def _prepare_out_dir(out_dir: Path) -> Path:
    """A fresh staging folder beside ``out_dir``; refuse to replace a folder that is not a report."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"The report folder {out_dir} is a file. Pass a folder to --out.")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
            raise ConfigError(
                f"The report folder {out_dir} is not empty and holds no pes_ml report; it would be "
                "replaced. Pass an empty or new folder to --out."
            )
    staging = out_dir.parent / f".{out_dir.name}.building-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
    except OSError as exc:  # a file where a folder of the path must be, a read-only folder...
        raise ConfigError(
            f"Cannot make the report folder {out_dir} ({exc.strerror or exc}). Pass a folder you can write "
            "to as --out."
        ) from exc
    return staging


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished ``staging`` folder (two renames; never half a report)."""
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _write_shards(records: list[dict[str, Any]], folder: Path, n_shards: int) -> int:
    shards: dict[int, dict[str, Any]] = {}
    for record in records:
        shards.setdefault(shard_of(record["id"], n_shards), {})[record["id"]] = record
    folder.mkdir()
    total = 0
    for number in range(n_shards):
        text = f"pesShard({number},{safe_json(shards.get(number, {}))});\n"
        path = folder / f"s{number:04d}.js"
        path.write_text(text, encoding="utf-8")
        total += len(text)
    return total


def _feature_table(data_specs: Mapping[str, Any]) -> dict[str, list[str]]:
    return {name: [spec.description, spec.unit, spec.group] for name, spec in data_specs.items()}


def build_report(
    store: RunStore,
    out_dir: str | os.PathLike[str],
    run: str = "latest",
    config: PesConfig | None = None,
    *,
    shard_size: int = SHARD_SIZE,
) -> Path:
    """Build the CS report of one committed run into ``out_dir``.

    Parameters
    ----------
    store
        The run store to read.
    out_dir
        The report folder; created, or replaced when it holds an earlier report.
    run
        A run id, or ``"latest"`` (the committed run with the latest as_of).
    config
        Optional config: its prediction horizon is named in "How to read this score".
    shard_size
        Accounts per data file of the account viewer.

    Returns
    -------
    pathlib.Path
        The report's ``index.html``.

    Raises
    ------
    StoreError
        If the run does not exist or the report cannot be written.
    ConfigError
        If ``out_dir`` is a file, or a non-empty folder that is not a pes_ml report.

    Examples
    --------
    >>> index = build_report(RunStore("runs"), "report/")  # doctest: +SKIP
    """
    if shard_size < 1:
        raise ConfigError(f"The 'shard_size' parameter must be an int >= 1. Got {shard_size!r} instead.")
    started = time.perf_counter()
    out = Path(out_dir)
    data = load_report_data(store, run)
    scores = enrich_scores(data)
    horizon = config.labels.horizon_days if config is not None else None
    model = model_context(data, horizon)
    context = {
        "run": model["run"],
        "horizon_days": model["horizon_days"],
        "assets": _assets(),
        "summary": summary(scores),
    }
    portfolio = {"columns": list(PORTFOLIO_COLUMNS), "rows": portfolio_rows(scores)}
    n_shards = max(1, math.ceil(len(scores) / shard_size))
    groups = group_names(data)
    viewer = {
        "groups": groups,
        "runs": data.run_dates,
        "as_of": model["run"]["as_of"],
        "previous_as_of": model["run"]["previous_as_of"],
        "shards": n_shards,
        "features": _feature_table(data.specs),
    }
    loaded = time.perf_counter()
    env = _environment()
    staging = _prepare_out_dir(out)
    try:
        pages = {
            "index.html": env.get_template("index.html").render(
                **context, page="portfolio", portfolio_json=safe_json(portfolio)
            ),
            "account.html": env.get_template("account.html").render(
                **context, page="account", viewer_json=safe_json(viewer)
            ),
            "model.html": env.get_template("model.html").render(**context, page="model", model=model),
        }
        for name, html in pages.items():
            (staging / name).write_text(html, encoding="utf-8")
        shard_bytes = _write_shards(
            list(account_records(data, scores, groups)), staging / "accounts", n_shards
        )
        (staging / MARKER).write_text(f"run_id={data.run.run_id}\n", encoding="utf-8")
        _swap_in(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"Could not write the report to {out}: {exc}.") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Report of run %s (as_of %s): %d accounts, %d shards (%.1f MB), index %.1f MB; "
        "read %.1fs, total %.1fs -> %s",
        data.run.run_id,
        data.run.as_of,
        len(scores),
        n_shards,
        shard_bytes / 1e6,
        len(pages["index.html"].encode("utf-8")) / 1e6,
        loaded - started,
        time.perf_counter() - started,
        out / "index.html",
    )
    return out / "index.html"


__all__ = ["MARKER", "SHARD_SIZE", "build_report", "safe_json", "shard_of"]
