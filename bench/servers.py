"""What a dbguard backup of a server database costs against the server's dump tool.

    python bench/servers.py [--rows N] [--repeat R] [--kinds postgresql,mariadb] [--json]

For each server the script creates a scratch database (``dbguard_bench_<random>``)
shaped like a trading bot's (trades, orders, and bulk candle rows: N rows in all), then
times in one process, interleaved over R repeats (the order alternates per repeat):

- the tool alone, as an operator would run it: ``pg_dump --format=custom --file=F``
  (which fsyncs F) or ``mariadb-dump --single-transaction DB > F``;
- dbguard's backup, ``Guard(db_url=...).backup("manual")``: the whole verified path
  (the catalog lock, the dump streamed and hashed, row counts in the dump's snapshot
  for PostgreSQL or from the stream for MariaDB, ``pg_restore --list`` or the dump's
  completeness check, fsync, the rename and the manifest).

Ratios are medians of dbguard over medians of the tool; the target is at most 1.2.
Connection: ``DBGUARD_TEST_POSTGRESQL_URL`` / ``DBGUARD_TEST_MARIADB_URL`` (admin
URLs, default the local servers as the tests use them). The scratch database is dropped
at the end. A benchmark is not a test: it prints PASS or MISS and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from dbguard_plugin import Guard
from dbguard_plugin.engines.server.credentials import mariadb_option_file, pg_env
from dbguard_plugin.engines.server.params import params_for
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config

ADMIN = {
    "postgresql": os.environ.get("DBGUARD_TEST_POSTGRESQL_URL",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("DBGUARD_TEST_MARIADB_URL",
                              "mariadb+pymysql://root@127.0.0.1:3306/test"),
}
TARGET = 1.2


def connect(kind: str, url: URL, database: str | None = None) -> Any:
    if kind == "postgresql":
        import psycopg

        return psycopg.connect(host=url.host, port=url.port, user=url.username,
                               password=url.password, dbname=database or url.database,
                               autocommit=True)
    import pymysql

    return pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                           password=url.password or "", database=database or url.database,
                           autocommit=True)


def run(conn: Any, *statements: str) -> None:
    with conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def build(kind: str, conn: Any, rows: int) -> None:
    trades, orders = rows // 20, rows // 10
    candles = rows - trades - orders
    if kind == "postgresql":
        run(conn,
            "CREATE TABLE trades (id serial PRIMARY KEY, pair text, is_open boolean, "
            "amount numeric(30, 12), open_rate double precision, open_date timestamp, "
            "strategy text)",
            "CREATE TABLE orders (id serial PRIMARY KEY, ft_trade_id int REFERENCES "
            "trades(id), order_id text, status text, price double precision, "
            "amount double precision)",
            "CREATE TABLE candles (pair text, ts bigint, open double precision, "
            "high double precision, low double precision, close double precision, "
            "volume double precision, PRIMARY KEY (pair, ts))",
            f"INSERT INTO trades (pair, is_open, amount, open_rate, open_date, strategy) "
            f"SELECT 'PAIR' || (g % 40) || '/USDT', g % 9 = 0, random() * 10, "
            f"random() * 60000, now() - g * interval '1 minute', 'SampleStrategy' "
            f"FROM generate_series(1, {trades}) g",
            f"INSERT INTO orders (ft_trade_id, order_id, status, price, amount) "
            f"SELECT 1 + g % {trades}, md5(g::text), 'closed', random() * 60000, random() "
            f"FROM generate_series(1, {orders}) g",
            f"INSERT INTO candles SELECT 'PAIR' || (g % 40) || '/USDT', g, random(), "
            f"random(), random(), random(), random() * 1000 "
            f"FROM generate_series(1, {candles}) g",
            "VACUUM ANALYZE")
    else:
        run(conn,
            "CREATE TABLE trades (id INT AUTO_INCREMENT PRIMARY KEY, pair VARCHAR(25), "
            "is_open BOOL, amount DECIMAL(30, 12), open_rate DOUBLE, open_date DATETIME, "
            "strategy VARCHAR(100)) ENGINE=InnoDB",
            "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, ft_trade_id INT, "
            "order_id VARCHAR(64), status VARCHAR(16), price DOUBLE, amount DOUBLE, "
            "FOREIGN KEY (ft_trade_id) REFERENCES trades(id)) ENGINE=InnoDB",
            "CREATE TABLE candles (pair VARCHAR(25), ts BIGINT, open DOUBLE, high DOUBLE, "
            "low DOUBLE, close DOUBLE, volume DOUBLE, PRIMARY KEY (pair, ts)) ENGINE=InnoDB",
            f"INSERT INTO trades (pair, is_open, amount, open_rate, open_date, strategy) "
            f"SELECT CONCAT('PAIR', seq % 40, '/USDT'), seq % 9 = 0, RAND() * 10, "
            f"RAND() * 60000, NOW() - INTERVAL seq MINUTE, 'SampleStrategy' "
            f"FROM seq_1_to_{trades}",
            f"INSERT INTO orders (ft_trade_id, order_id, status, price, amount) "
            f"SELECT 1 + seq % {trades}, MD5(seq), 'closed', RAND() * 60000, RAND() "
            f"FROM seq_1_to_{orders}",
            f"INSERT INTO candles SELECT CONCAT('PAIR', seq % 40, '/USDT'), seq, RAND(), "
            f"RAND(), RAND(), RAND(), RAND() * 1000 FROM seq_1_to_{candles}")


def plain_dump(kind: str, url: str, out: Path) -> float:
    params = params_for(locate(url))
    clock = time.perf_counter()
    if kind == "postgresql":
        subprocess.run(["pg_dump", "--format=custom", f"--file={out}"],
                       env=pg_env(params), check=True)
    else:
        with mariadb_option_file(params) as options, open(out, "wb") as fh:
            subprocess.run(["mariadb-dump", f"--defaults-extra-file={options}",
                            "--single-transaction", "--quick", params.database],
                           stdout=fh, check=True)
    took = time.perf_counter() - clock
    out.unlink()
    return took


def dbguard_backup(guard: Guard) -> tuple[float, int]:
    clock = time.perf_counter()
    manifest = guard.backup("manual")
    took = time.perf_counter() - clock
    guard.catalog.delete(manifest)
    return took, manifest.size


def bench(kind: str, rows: int, repeat: int) -> dict[str, Any]:
    admin = make_url(ADMIN[kind])
    name = f"dbguard_bench_{secrets.token_hex(4)}"
    conn = connect(kind, admin)
    run(conn, f"CREATE DATABASE {name}")
    try:
        db = connect(kind, admin, name)
        try:
            build(kind, db, rows)
        finally:
            db.close()
        driver = "postgresql+psycopg" if kind == "postgresql" else "mariadb+pymysql"
        url = admin.set(drivername=driver, database=name).render_as_string(False)
        with tempfile.TemporaryDirectory(prefix="dbguard-bench-") as tmp:
            guard = Guard(Config.from_mapping({"backup_dir": f"{tmp}/backups",
                                               "state_dir": f"{tmp}/state"}), db_url=url)
            plain_times, guard_times, size = [], [], 0
            dbguard_backup(guard)  # warm: the server's buffers, the tools on disk
            for n in range(repeat):
                for variant in (("plain", "dbguard") if n % 2 == 0 else ("dbguard", "plain")):
                    if variant == "plain":
                        plain_times.append(plain_dump(kind, url, Path(tmp) / "plain.dump"))
                    else:
                        took, size = dbguard_backup(guard)
                        guard_times.append(took)
            guard.close()
    finally:
        drop = connect(kind, admin)
        run(drop, f"DROP DATABASE {name}" + (" WITH (FORCE)" if kind == "postgresql"
                                              else ""))
        drop.close()
        conn.close()
    plain, ours = statistics.median(plain_times), statistics.median(guard_times)
    return {"kind": kind, "rows": rows, "repeat": repeat, "backup_bytes": size,
            "tool_s": round(plain, 3), "dbguard_s": round(ours, 3),
            "ratio": round(ours / plain, 3), "tool_runs": plain_times,
            "dbguard_runs": guard_times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", default="postgresql,mariadb")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [bench(kind, args.rows, args.repeat) for kind in args.kinds.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        tool = "pg_dump -Fc" if r["kind"] == "postgresql" else "mariadb-dump"
        verdict = "PASS" if r["ratio"] <= TARGET else "MISS"
        print(f"{r['kind']}: {r['rows']:,} rows, backup {r['backup_bytes'] / 2**20:.1f} MiB, "
              f"median of {r['repeat']}: {tool} {r['tool_s']:.3f} s, dbguard "
              f"{r['dbguard_s']:.3f} s, ratio {r['ratio']:.2f} "
              f"(target <= {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
