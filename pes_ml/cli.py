"""The ``pes-ml`` command line: parse, load config, configure logging, call one public function.

A :class:`~pes_ml.errors.PesError` becomes one clear line on stderr and the
error's exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from pes_ml import __version__
from pes_ml.errors import PesError

app = typer.Typer(
    name="pes-ml",
    help="Predictive Product Engagement Score: churn and expansion propensity with exact reasons.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
logger = logging.getLogger("pes_ml.cli")

DEFAULT_CONFIG = Path("pipelines/conf/base/pes.yaml")
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config (sources, stages). See pipelines/conf/base/pes.yaml."),
]

T = TypeVar("T")


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("pes_ml").setLevel(level)
    # MLflow and friends are chatty at INFO; their warnings still show.
    for noisy in ("mlflow", "alembic", "py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _CliProgress:
    """A rich progress bar on a terminal; plain log lines otherwise."""

    def __init__(self, bar: RichProgress | None) -> None:
        self._bar = bar
        self._task: Any = None
        self._description = ""

    def start(self, description: str, total: float | None = None) -> None:
        self._description = description
        if self._bar is None:
            logger.info("%s ...", description)
            return
        if self._task is not None:
            self._bar.update(self._task, completed=self._bar.tasks[-1].total or 0)
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: float = 1.0) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, amount)


@contextmanager
def _progress() -> Iterator[_CliProgress]:
    if not console.is_terminal:
        yield _CliProgress(None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with RichProgress(*columns, console=console, transient=False) as bar:
        yield _CliProgress(bar)


def _run(action: Callable[[], T]) -> T:
    """Call ``action``; turn a PesError into one line on stderr and its exit code."""
    try:
        return action()
    except PesError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"pes-ml {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """pes-ml: turn product event logs into a predictive engagement score."""
    _configure_logging(verbose)


@app.command()
def simulate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for events/, subscriptions.parquet, accounts.parquet.")
    ] = Path("data/sim"),
    accounts: Annotated[int, typer.Option(help="Number of accounts to simulate.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 540,
    start: Annotated[str, typer.Option(help="First day of the simulation (YYYY-MM-DD).")] = "2024-01-01",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 7,
) -> None:
    """Simulate a realistic B2B SaaS product: events, subscriptions and accounts as Parquet."""
    from pes_ml.simulate import SimulationConfig, simulate_saas

    sim = SimulationConfig(n_accounts=accounts, days=days, start=start, seed=seed)
    with _progress() as progress:
        summary = _run(lambda: simulate_saas(sim, out_dir, progress=progress))
    out.print(summary.describe())


def _print_reconciliation(recon: Any) -> None:
    table = Table(title="Reconciliation: read = loaded + quarantined + deduplicated")
    for column in ("table", "source", "read", "loaded", "quarantined", "deduplicated", "balanced"):
        table.add_column(column, justify="right" if column not in ("table", "source") else "left")
    for row in recon.tables:
        table.add_row(
            row.table,
            row.source,
            f"{row.read:,}",
            f"{row.loaded:,}",
            f"{row.quarantined:,}",
            f"{row.deduplicated:,}",
            "yes" if row.balanced else "NO",
        )
    out.print(table)
    reasons = Table(title="Quarantined or flagged rows by reason")
    for column in ("table", "reason", "rows", "action"):
        reasons.add_column(column)
    for item in recon.reasons:
        reasons.add_row(item.table, item.reason, f"{item.rows:,}", item.action)
    if recon.reasons:
        out.print(reasons)


@app.command()
def validate(
    config: ConfigOption = DEFAULT_CONFIG,
    strict: Annotated[
        bool, typer.Option(help="Also exit non-zero when any row was quarantined.")
    ] = False,
) -> None:
    """Read every source, validate it against the data contract and print the reconciliation.

    Clean tables go to <work_dir>/clean/, unusable rows to <work_dir>/quarantine/ with a reason.
    Exits non-zero when a contract is broken (missing column, unreadable file, counts not adding up).
    """
    from pes_ml.config import load_config
    from pes_ml.ingest import ingest

    cfg = _run(lambda: load_config(config))
    recon = _run(lambda: ingest(cfg))
    _print_reconciliation(recon)
    if not recon.balanced:
        console.print("[bold red]error:[/] counts do not reconcile; this is a bug in pes_ml, report it.")
        raise typer.Exit(code=3)
    if strict and recon.quarantined_total:
        console.print(f"[yellow]{recon.quarantined_total:,} rows quarantined (--strict).[/]")
        raise typer.Exit(code=3)


@app.command()
def export(
    run: Annotated[
        str, typer.Option(help="Run id to export, or 'latest' (the run with the latest as_of).")
    ] = "latest",
    fmt: Annotated[
        str, typer.Option("--format", help="File format: csv (spreadsheet-safe) or parquet.")
    ] = "csv",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="File to write; written atomically (temp file + rename).")
    ] = None,
    to_database: Annotated[
        str | None,
        typer.Option(
            "--to-database",
            envvar="PES_EXPORT_DATABASE_URL",
            help="SQLAlchemy URL to upsert into, e.g. postgresql+psycopg://user@host/crm "
            "(or set PES_EXPORT_DATABASE_URL to keep the password off the command line).",
        ),
    ] = None,
    table: Annotated[str, typer.Option(help="Table for --to-database; created when missing.")] = "pes_scores",
    store_path: Annotated[
        Path | None, typer.Option("--store", help="Run store folder; default: store.path from the config.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Export one scoring run for CRM/CS: one row per account with score, tier, top 3 reasons and change.

    Writes a CSV or Parquet file (--out) and/or upserts into a SQL table on (account_id, as_of).
    """
    from pes_ml.config import load_config
    from pes_ml.errors import ConfigError
    from pes_ml.export import build_export, upsert_to_database, write_export
    from pes_ml.store import RunStore

    def _export() -> None:
        if fmt not in ("csv", "parquet"):
            raise ConfigError(f"The --format option must be 'csv' or 'parquet'. Got {fmt!r} instead.")
        if out_path is None and to_database is None:
            raise ConfigError("Nothing to do: pass --out FILE, --to-database URL, or both.")
        store = RunStore(store_path) if store_path is not None else RunStore.from_config(load_config(config))
        frame = build_export(store, run)
        if out_path is not None:
            write_export(frame, out_path, "csv" if fmt == "csv" else "parquet")
            out.print(f"Wrote {len(frame):,} accounts to {out_path}")
        if to_database is not None:
            rows = upsert_to_database(frame, to_database, table=table)
            out.print(f"Upserted {rows:,} accounts into table {table}")

    _run(_export)


@app.command()
def score(
    as_of: Annotated[
        str, typer.Option("--as-of", help="Cutoff date (YYYY-MM-DD): features see events before it.")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    model_alias: Annotated[
        str, typer.Option("--model-alias", help="Registered model alias to score with.")
    ] = "champion",
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Score with this version instead of the alias.")
    ] = None,
    allow_drift: Annotated[
        bool, typer.Option("--allow-drift", help="Score even when feature drift exceeds score.psi_error.")
    ] = False,
) -> None:
    """Score every account active at --as-of with the champion model and commit the run to the store.

    Writes scores, exact SHAP reasons and a run manifest atomically; rerunning the same as_of replaces
    that run. Exit codes: 3 data contract, 5 no model, 7 drift, 8 run in progress.
    """
    from pes_ml.config import load_config
    from pes_ml.score import score_accounts

    cfg = _run(lambda: load_config(config))
    with _progress() as progress:
        run = _run(
            lambda: score_accounts(
                cfg,
                as_of,
                alias=model_alias,
                version=model_version,
                allow_drift=allow_drift,
                progress=progress,
            )
        )
    tiers = run.scores["tier"].value_counts().to_dict()
    out.print(
        f"Run {run.run_id}: scored {len(run.scores):,} accounts at as_of {run.as_of} "
        f"with model version {run.manifest['model']['version']}; tiers {tiers}."
    )
    for name, value in sorted(run.drift.warnings.items()):
        console.print(f"[yellow]drift warning:[/] {name} PSI {value:.3f}")
