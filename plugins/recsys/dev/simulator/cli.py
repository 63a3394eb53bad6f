"""Command line: `recsys-sim` / `python -m recsys.dev.simulator`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from .landing import day_of_path, landing_path, read_day, split_browsing_csv, write_frame
from .process import generate_day
from .presets import PRESETS, SCENARIOS
from .stats import REFERENCE, StatsAccumulator

EXAMPLES = """\
examples:
  recsys-sim generate --out landing --start 2026-03-01 --days 14 --preset demo
  recsys-sim generate --out landing --start 2026-03-15 --days 1 --preset demo \\
      --scenario popularity_shift --overwrite
  recsys-sim split browsing_train.csv --out landing
  recsys-sim stats landing --start 2026-03-01 --end 2026-03-14
"""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad date {text!r}, expected YYYY-MM-DD") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative whole number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-sim",
        description="Simulated e-commerce browsing feed in the Coveo SIGIR eCom 2021 "
                    "schema: one landing CSV per UTC day.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate", help="write simulated landing files",
        description="Write one landing file per day. Existing files are kept unless "
                    "--overwrite is given (as an upstream feed delivers only missing days).",
        epilog="example:\n  recsys-sim generate --out landing --start 2026-03-01 --days 14 "
               "--preset demo\n", formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--out", required=True, type=Path, metavar="DIR", help="landing folder")
    gen.add_argument("--start", required=True, type=_date, metavar="YYYY-MM-DD",
                     help="first day (UTC)")
    gen.add_argument("--days", required=True, type=_positive, metavar="N",
                     help="number of consecutive days")
    gen.add_argument("--preset", default="tiny", choices=list(PRESETS),
                     help="scale: tiny (tests), demo (local stack), coveo (full size); "
                          "default: %(default)s")
    gen.add_argument("--scenario", default="steady", choices=list(SCENARIOS),
                     help="how these days depart from the steady process; default: %(default)s")
    gen.add_argument("--seed", default=7, type=_seed, help="default: %(default)s")
    gen.add_argument("--overwrite", action="store_true", help="replace existing files")

    split = sub.add_parser(
        "split", help="split a real browsing_train.csv into landing files",
        description="Split a Coveo browsing_train.csv into one landing file per UTC day "
                    "of server_timestamp_epoch_ms, reading it in chunks.",
        epilog="example:\n  recsys-sim split browsing_train.csv --out landing\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    split.add_argument("csv", type=Path, metavar="CSV", help="path of browsing_train.csv")
    split.add_argument("--out", required=True, type=Path, metavar="DIR", help="landing folder")
    split.add_argument("--chunksize", default=1_000_000, type=_positive,
                       help="rows per chunk; default: %(default)s")

    stats = sub.add_parser(
        "stats", help="measure landing files against the reference statistics",
        description="Print the DATA.md quantities (event mix, session lengths, popularity "
                    "concentration, repeats, SKUs per day ...) of the landing files.",
        epilog="example:\n  recsys-sim stats landing --start 2026-03-01 --end 2026-03-14\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    stats.add_argument("dir", type=Path, metavar="DIR", help="landing folder")
    stats.add_argument("--start", type=_date, metavar="YYYY-MM-DD", help="first day to include")
    stats.add_argument("--end", type=_date, metavar="YYYY-MM-DD", help="last day to include")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "split":
            if not args.csv.is_file():
                parser.error(f"split: input file not found: {args.csv}")
            return _split(args)
        if not args.dir.is_dir():
            parser.error(f"stats: landing folder not found: {args.dir}")
        if args.start and args.end and args.start > args.end:
            parser.error(f"stats: --start {args.start} is after --end {args.end}")
        return _stats(args, parser)
    except (ValueError, OSError) as exc:
        print(f"recsys-sim {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _generate(args) -> int:
    for i in range(args.days):
        day = args.start + dt.timedelta(days=i)
        path = landing_path(args.out, day)
        if path.exists() and not args.overwrite:
            print(f"{day}  exists, kept      {path}")
            continue
        frame = generate_day(day, preset=args.preset, scenario=args.scenario, seed=args.seed)
        write_frame(frame, path)
        print(f"{day}  {len(frame):>9,} rows  {frame['session_id_hash'].nunique():>7,} sessions"
              f"  {path}", flush=True)
    return 0


def _split(args) -> int:
    def progress(rows: int, days: int) -> None:
        print(f"read {rows:,} rows, {days} days so far", flush=True)

    days = split_browsing_csv(args.csv, args.out, chunksize=args.chunksize, progress=progress)
    print(f"wrote {len(days)} landing files to {args.out}"
          + (f" ({days[0]} .. {days[-1]})" if days else ""))
    return 0


def _stats(args, parser) -> int:
    files = sorted((day, p) for p in args.dir.glob("browsing_*.csv")
                   if (day := day_of_path(p)) is not None
                   and (args.start is None or day >= args.start)
                   and (args.end is None or day <= args.end))
    if not files:
        parser.error(f"stats: no landing files in {args.dir} for the chosen days")
    acc = StatsAccumulator()
    for _, path in files:
        acc.add(read_day(path))
    result = acc.result()
    result["files"] = len(files)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_stats(result))
    return 0


def format_stats(result: dict) -> str:
    """A two-column table: measured value and the DATA.md reference."""
    def fmt(v, pct=False):
        if v is None:
            return "-"
        if pct:
            return f"{100 * v:.2f} %"
        if isinstance(v, float) and abs(v) < 100:
            return f"{v:.3g}"
        return f"{v:,.0f}"

    ref = REFERENCE
    n_days = max(1, len(result["days"]))
    lines = [f"{'quantity':<40}{'measured':>14}{'DATA.md':>14}",
             f"{'days':<40}{n_days:>14}{91:>14}",
             f"{'rows per day':<40}{fmt(result['rows'] / n_days):>14}{fmt(ref['rows_per_day']):>14}",
             f"{'sessions per day':<40}{fmt(result['sessions'] / n_days):>14}"
             f"{fmt(ref['sessions_per_day']):>14}"]
    for kind, v in result["event_mix"].items():
        lines.append(f"{'event mix: ' + kind:<40}{fmt(v, True):>14}{fmt(ref['event_mix'][kind], True):>14}")
    lines.append(f"{'pageview-only sessions':<40}{fmt(result['pageview_only_session_share'], True):>14}"
                 f"{fmt(ref['pageview_only_session_share'], True):>14}")
    for k, v in result["session_length"].items():
        lines.append(f"{'session length (events) ' + k:<40}{fmt(v):>14}"
                     f"{fmt(ref['session_length'][k]):>14}")
    for k, v in result["session_duration_s"].items():
        lines.append(f"{'session duration (s) ' + k:<40}{fmt(v):>14}"
                     f"{fmt(ref['session_duration_s'][k]):>14}")
    for k, v in result["popularity"].items():
        pct = k != "gini"
        lines.append(f"{'popularity ' + k:<40}{fmt(v, pct):>14}{fmt(ref['popularity'][k], pct):>14}")
    for k, v in result["interactions_per_sku"].items():
        lines.append(f"{'interactions per SKU ' + k:<40}{fmt(v):>14}"
                     f"{fmt(ref['interactions_per_sku'][k]):>14}")
    lines += [
        f"{'repeat of the previous SKU':<40}{fmt(result['repeat_rate'], True):>14}"
        f"{fmt(ref['repeat_rate'], True):>14}",
        f"{'purchase rate among sessions with add':<40}"
        f"{fmt(result['purchase_rate_among_add_sessions'], True):>14}"
        f"{fmt(ref['purchase_rate_among_add_sessions'], True):>14}",
        f"{'distinct SKUs':<40}{fmt(result['skus']):>14}{'57.5k':>14}",
        f"{'SKUs per day':<40}{fmt(result['skus_per_day']):>14}{'-':>14}",
        f"{'new SKUs per day':<40}{fmt(result['new_skus_per_day']):>14}"
        f"{fmt(ref['new_skus_per_day']):>14}",
        f"{'rows with a SKU':<40}{fmt(result['rows_with_sku_share'], True):>14}{'-':>14}",
    ]
    problems = {k: v for k, v in result["quality"].items() if v}
    lines.append("data quality: " + (", ".join(f"{k}={v:,}" for k, v in problems.items())
                                     if problems else "no nulls, unknown event types or duplicates"))
    return "\n".join(lines)
