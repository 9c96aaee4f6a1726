"""The ``pes-ml`` command line: parse, load config, configure logging, call one public function.

A :class:`~pes_ml.errors.PesError` becomes one clear line on stderr and the
error's exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
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
# Plain output (pipes, CI logs) gets a wide page so tables are not truncated to 80 columns.
out = Console() if Console().is_terminal else Console(width=200)
logger = logging.getLogger("pes_ml.cli")

DEFAULT_CONFIG = Path("pipelines/conf/base/pes.yaml")
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="YAML config (sources, stages). See pipelines/conf/base/pes.yaml."),
]

T = TypeVar("T")


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap and close it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        return None


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("pes_ml").setLevel(level)
    # MLflow and friends are chatty at INFO; their warnings still show.
    for noisy in ("mlflow", "alembic", "py4j", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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

    sim = _run(lambda: SimulationConfig(n_accounts=accounts, days=days, start=start, seed=seed))
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
    from pes_ml.atomic import check_writable_file
    from pes_ml.config import load_config
    from pes_ml.errors import ConfigError
    from pes_ml.export import build_export, upsert_to_database, write_export
    from pes_ml.store import RunStore

    def _export() -> None:
        if fmt not in ("csv", "parquet"):
            raise ConfigError(f"The --format option must be 'csv' or 'parquet'. Got {fmt!r} instead.")
        if out_path is None and to_database is None:
            raise ConfigError("Nothing to do: pass --out FILE, --to-database URL, or both.")
        if out_path is not None:
            check_writable_file(out_path, "--out", f"scores.{fmt}")
        store = RunStore(store_path) if store_path is not None else RunStore.from_config(load_config(config))
        frame = build_export(store, run)
        if out_path is not None:
            write_export(frame, out_path, "csv" if fmt == "csv" else "parquet")
            out.print(f"Wrote {len(frame):,} accounts to {out_path}")
        if to_database is not None:
            rows = upsert_to_database(frame, to_database, table=table)
            out.print(f"Upserted {rows:,} accounts into table {table}")

    _run(_export)


TrackingUriOption = Annotated[
    str | None,
    typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI; default: tracking.tracking_uri."),
]

FAULT_ENV = "PES_FAULT_STAGE"


def _install_fault_hook(spec: str | None) -> None:
    """Fault injection for the reliability tests: ``PES_FAULT_STAGE=<stage>:<seconds>``.

    When the scoring run reaches ``<stage>`` (one of ``pes_ml.score.FAULT_STAGES`` or the
    run store's commit steps), it writes ``pes_ml fault stage reached: <stage>`` to stderr
    and sleeps ``<seconds>`` (0: announce only), so a test can SIGKILL it exactly there.
    Unset (production), nothing is installed and the stages cost one ``None`` check.
    """
    if not spec:
        return
    from pes_ml import score as score_module
    from pes_ml import store as store_module

    stage, _, seconds = spec.partition(":")
    pause = float(seconds or 0)

    def hook(name: str) -> None:
        if name == stage:
            sys.stderr.write(f"pes_ml fault stage reached: {name}\n")
            sys.stderr.flush()
            if pause > 0:
                time.sleep(pause)

    score_module._stage_hook = hook
    store_module._stage_hook = hook


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
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Score every account active at --as-of with the champion model and commit the run to the store.

    Writes scores, exact SHAP reasons and a run manifest atomically; rerunning the same as_of replaces
    that run. Exit codes: 3 data contract, 5 no model, 7 drift, 8 run in progress, 9 run store
    (e.g. disk full), 11 registry unreachable.
    """
    from pes_ml.config import load_config
    from pes_ml.instants import to_utc
    from pes_ml.score import score_accounts

    _install_fault_hook(os.environ.get(FAULT_ENV))
    _run(lambda: to_utc(as_of, "--as-of"))  # a mistyped date stops the command before any work
    cfg = _run(lambda: load_config(config)).with_tracking_uri(tracking_uri)
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


# --- training, promotion and the registry (issue 4) -------------------------------------------


@app.command()
def train(
    config: ConfigOption = DEFAULT_CONFIG,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Build point-in-time snapshots, train calibrated churn/expansion models, compare with baselines.

    Logs the run to MLflow and registers the model as a new version aliased @challenger.
    """
    from pes_ml.config import load_config
    from pes_ml.evaluate import comparison_table
    from pes_ml.tracking import check_reachable
    from pes_ml.training import run_training

    cfg = _run(lambda: load_config(config)).with_tracking_uri(tracking_uri)
    # A server that is down fails now, not after the whole training.
    _run(lambda: check_reachable(cfg.tracking.tracking_uri))
    with _progress() as progress:
        outcome = _run(lambda: run_training(cfg, progress, run_name=run_name))
    for name, report in outcome.result.reports.items():
        table = Table(title=f"{name}: test snapshots ({report.rows['test']:,} rows)")
        comparison = comparison_table(report.metrics)
        table.add_column("scorer")
        for column in comparison.columns:
            table.add_column(column, justify="right")
        for scorer, row in comparison.iterrows():
            table.add_row(str(scorer), *(f"{v:.4f}" for v in row))
        out.print(table)
    for name, reason in outcome.result.skipped.items():
        out.print(f"[yellow]{name} not trained:[/] {reason}")
    out.print(
        f"Run {outcome.run_id}: registered {outcome.model_name} v{outcome.version} as @challenger. "
        f"Next: `pes-ml promote --config {config}`."
    )


@app.command()
def promote(
    config: ConfigOption = DEFAULT_CONFIG,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Version to promote; default: @challenger.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Promote even if gates fail (failures are recorded).")] = False,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Move @champion to the challenger when it passes the promotion gate; write its model card.

    Exits with code 6 and lists the failed gates when the challenger is not better.
    """
    from pes_ml.config import load_config
    from pes_ml.errors import PromotionRejected
    from pes_ml.registry import promote as promote_model

    cfg = _run(lambda: load_config(config)).with_tracking_uri(tracking_uri)
    try:
        decision = promote_model(cfg, model_version, force=force)
    except PromotionRejected as exc:
        console.print(f"[bold red]error:[/] not promoted; {len(exc.failed_gates)} gate(s) failed:")
        for gate in exc.failed_gates:
            console.print(f"  - {gate}", highlight=False)
        raise typer.Exit(code=exc.exit_code) from None
    except PesError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=exc.exit_code) from None
    for gate in decision.passed:
        out.print(f"  passed: {gate}", highlight=False)
    name = cfg.tracking.model_name
    out.print(f"{name} v{decision.version} is now @champion. Model card: {decision.card_path}")


@app.command()
def models(
    config: ConfigOption = DEFAULT_CONFIG,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """List registered versions with their aliases, test metrics and promotion decision."""
    from pes_ml.config import load_config
    from pes_ml.registry import list_versions

    cfg = _run(lambda: load_config(config)).with_tracking_uri(tracking_uri)
    versions = _run(lambda: list_versions(cfg))
    if versions.empty:
        out.print(f"No versions of {cfg.tracking.model_name!r} yet. Run `pes-ml train`.")
        return
    table = Table(title=f"Registered model {cfg.tracking.model_name!r}")
    for column in versions.columns:
        table.add_column(column)
    for row in versions.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v or "") for v in row))
    out.print(table)


@app.command()
def report(
    run: Annotated[
        str, typer.Option(help="Run id to report on, or 'latest' (the run with the latest as_of).")
    ] = "latest",
    out_dir: Annotated[
        Path, typer.Option("--out", help="Report folder; replaced when it holds an earlier report.")
    ] = Path("report"),
    store_path: Annotated[
        Path | None, typer.Option("--store", help="Run store folder; default: store.path from the config.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
) -> None:
    """Build the static HTML report for CS (portfolio, account and model pages) and print index.html's path.

    The folder is self-contained: open index.html from the file system or put it on any static host.
    """
    from pes_ml.config import load_config
    from pes_ml.report import build_report
    from pes_ml.store import RunStore

    def _report() -> Path:
        # With --store, the config is optional (it only names the horizon in the text).
        if store_path is not None:
            cfg = load_config(config) if config.exists() else None
            return build_report(RunStore(store_path), out_dir, run=run, config=cfg)
        cfg = load_config(config)
        return build_report(RunStore.from_config(cfg), out_dir, run=run, config=cfg)

    index = _run(_report)
    out.print(str(index.resolve()), highlight=False, soft_wrap=True)


@app.command()
def features(
    as_of: Annotated[
        list[str],
        typer.Option("--as-of", help="Snapshot date (YYYY-MM-DD, UTC midnight) or instant; repeatable."),
    ],
    out_file: Annotated[Path, typer.Option("--out", help="FeatureFrame Parquet file to write.")] = Path(
        "features.parquet"
    ),
    config: ConfigOption = DEFAULT_CONFIG,
    reingest: Annotated[
        bool,
        typer.Option(
            "--ingest/--no-ingest",
            help="Re-read and validate the sources first. By default the clean tables of the last "
            "`pes-ml validate` are used; sources are ingested when there are none yet, or when the "
            "config's sources changed since (a new export at the same path needs --ingest).",
        ),
    ] = False,
) -> None:
    """Compute point-in-time features and the classic PES for every account present at each --as-of.

    Reads the clean tables under <work_dir>/clean/ (written by `pes-ml validate`; ingested
    automatically when missing) on the configured engine (duckdb or spark), and writes one row per
    (account_id, as_of) to --out.
    """
    from pes_ml.atomic import check_writable_file
    from pes_ml.config import load_config
    from pes_ml.features import build_features, write_features
    from pes_ml.ingest import ingest, ingest_needed
    from pes_ml.instants import to_utc

    # The arguments first: a mistyped date or --out stops the command before any work.
    _run(lambda: [to_utc(date, "--as-of") for date in as_of])
    _run(lambda: check_writable_file(out_file, "--out", "features.parquet"))
    cfg = _run(lambda: load_config(config))
    why = None if reingest else ingest_needed(cfg)
    if reingest or why:
        if why:
            logger.info("Ingesting first: %s.", why)
        recon = _run(lambda: ingest(cfg))
        _print_reconciliation(recon)
    with _progress() as progress:
        frame = _run(lambda: build_features(cfg, as_of, progress=progress))
    _run(lambda: write_features(frame, out_file))
    n_dates = frame["as_of"].nunique()
    out.print(f"Wrote {len(frame):,} rows x {frame.shape[1]} columns ({n_dates} as_of) to {out_file}")
