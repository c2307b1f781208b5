"""Host calls never raise into the bot when dbguard cannot write (docs/lifecycle.rst,
"When dbguard cannot write").

A bot runs in a child process with a session and one order in flight; then a real fault
is made under the files its calls write (the lock files are there already, so every
write that fails is the status file's, in ``holders/``):

- ENOSPC: the database and its dbguard directory on a real 4 MiB tmpfs, filled by
  "another program" (root only; skipped where mounting is not permitted);
- EACCES: the dbguard directory and ``holders/`` made 0500 while the bot runs as root
  WITHOUT the capabilities that bypass file modes (``setpriv``), so the kernel refuses;
- EIO: a real EIO needs a failing device (dm-error, a FUSE file system), which this suite
  cannot make. What stands in for it is a write the kernel refuses on a healthy disk for
  a reason dbguard cannot foresee: the status file's name taken by a directory, so the
  atomic rename fails with EISDIR (IsADirectoryError), an OSError like EIO.

Under each fault the bot's fill returns and gives back the lease (a second process's
``dbguard check restore`` is then not vetoed by that order), a new admission returns
False, tick(), reconcile(), withdraw_admission(), end_session() and close() return, and
each fault is logged and sent as ``host-fault``. Once the fault is gone, tick() brings the
lease and the status file up to date and the bot trades again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from child_process import Child
from cli_runs import Cli
from faults import fill, small_disk, without_dac

from dbguard_plugin import Guard, hookimpl, signals
from dbguard_plugin.settings.config import Config
from dbguard_plugin.status import HOSTNAME

#: The bot. argv: db_url. Prints READY with an order in flight, then on each stdin line
#: runs the next phase and prints its results as one JSON line.
BOT = """
    import json, logging, sys
    from dbguard_plugin import Guard, signals
    from dbguard_plugin.settings.config import Config

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    guard = Guard(Config(db_url=sys.argv[1], environment="development",
                         backup_on_session_start=False, backup_on_session_end=False))
    faults = []

    def on_fault(sender, call, error, outcome, **extra):
        faults.append([call, error, outcome])

    signals.host_fault.connect(on_fault)
    guard.start_session("S-faults")
    assert guard.admit_order(timeout=0)
    guard.order_event("A-1", "submitted", symbol="BTC/USDT", side="buy")
    guard.publish_status_now()  # not left to the status thread: the fault comes next
    print("READY", flush=True)

    def report(**answers):
        print(json.dumps({"faults": faults, "held": guard.lease.holding_orders,
                          "busy": guard.state.busy, **answers}), flush=True)
        faults.clear()

    sys.stdin.readline()  # the fault is there: the order fills
    guard.order_event("A-1", "filled")
    report()
    sys.stdin.readline()  # a new admission
    report(admitted=guard.admit_order(timeout=0))
    sys.stdin.readline()  # the other calls, still under the fault
    guard.tick()
    guard.reconcile({})
    guard.withdraw_admission()
    report()
    sys.stdin.readline()  # the fault is gone: tick() puts things right, trading resumes
    guard.tick()
    admitted = guard.admit_order(timeout=0)
    guard.order_event("B-2", "submitted")
    guard.publish_status_now()
    report(admitted=admitted)
    sys.stdin.readline()
    guard.order_event("B-2", "filled")
    guard.end_session()
    guard.close()
    report()
"""


def _start_bot(spawn: Callable[..., Child], script_dir: Path, db_url: str,
               env: dict[str, str], no_dac: bool = False) -> Child:
    """The bot as a child; *no_dac* runs it as root without DAC override (setpriv)."""
    if not no_dac:
        return spawn(BOT, db_url, env=env)
    return spawn(BOT, db_url, env=env, where=script_dir, wrap=without_dac)


def _phase(bot: Child) -> dict[str, Any]:
    bot.send()
    return json.loads(bot.expect("{"))


def _check_restore(run_cli: Cli, db_url: str) -> list[str]:
    """The reason codes another process's ``dbguard check restore`` gives."""
    result = run_cli("check", "restore", "--db", db_url, "--json")
    assert result.returncode in (0, 3), result.stdout + result.stderr
    return [reason["code"] for reason in json.loads(result.stdout)["reasons"]]


def _ride_out_the_fault(bot: Child, run_cli: Callable[..., Any], db_url: str,
                        error: str, inject: Callable[[], object],
                        clear: Callable[[], object],
                        again: Callable[[], object] = lambda: None) -> None:
    """The bot's calls under the fault, then after it; every check the module promises.
    *again* renews the fault after the fill (which may have freed the status file's
    space by removing it)."""
    codes = _check_restore(run_cli, db_url)
    assert "orders-in-flight" in codes  # the order is seen before the fault
    inject()
    filled = _phase(bot)
    assert (filled["held"], filled["busy"]) == (False, False), filled
    ((call, text, outcome),) = filled["faults"]
    assert call == "order_event"
    assert error in text
    assert outcome.startswith("nothing is in flight and the lease is released"), outcome
    # The fill released the lease though nothing could be written: no veto for it.
    assert not {"orders-in-flight", "lease-held"} & set(_check_restore(run_cli, db_url))
    again()
    refused = _phase(bot)
    assert refused["admitted"] is False
    assert (refused["held"], refused["busy"]) == (False, False), refused
    assert [(c, o) for c, _, o in refused["faults"]] == [
        ("admit_order", "the new order was refused")], refused
    assert error in refused["faults"][0][1]
    others = _phase(bot)
    assert [call for call, _, _ in others["faults"]] == ["tick"], others
    assert others["held"] is False
    clear()
    after = _phase(bot)
    assert after["faults"] == [], after
    assert after["admitted"] is True
    assert "orders-in-flight" in _check_restore(run_cli, db_url)
    done = _phase(bot)
    assert done["faults"] == [], done
    assert bot.wait() == 0, bot.stderr
    assert "Traceback" not in bot.stderr, bot.stderr
    for call in ("order_event", "admit_order", "tick"):
        assert f"dbguard: {call} could not complete ({error}" in bot.stderr, bot.stderr
    assert "the lease and the status file of" in bot.stderr
    assert "are up to date again" in bot.stderr


def test_a_full_disk(scratch_dir: Path, spawn: Callable[..., Child],
                     child_env: Callable[..., dict[str, str]],
                     run_cli: Callable[..., Any]) -> None:
    """ENOSPC from the kernel: the tmpfs under the dbguard directory is full."""
    disk = scratch_dir / "small"
    with small_disk(disk, "4m"):
        db_url = f"sqlite:///{disk / 'tradesv3.sqlite'}"
        bot = spawn(BOT, db_url, env=child_env())
        _ride_out_the_fault(bot, run_cli, db_url, "OSError: [Errno 28] No space left",
                            lambda: fill(disk),
                            lambda: [(disk / n).unlink() for n in ("filler", "filler-2")],
                            lambda: fill(disk, "filler-2"))
        holders = disk / "tradesv3.sqlite.dbguard" / "holders"
        assert [n for n in os.listdir(holders) if n.startswith(".tmp-")] == []


def test_a_read_only_dbguard_directory(scratch_dir: Path, child_env: Callable[..., Any],
                                       spawn: Callable[..., Child],
                                       run_cli: Callable[..., Any]) -> None:
    """EACCES: the kernel refuses the status file's writes and its removal."""
    db = scratch_dir / "tradesv3.sqlite"
    db_url = f"sqlite:///{db}"
    state = scratch_dir / "tradesv3.sqlite.dbguard"
    bot = _start_bot(spawn, scratch_dir, db_url, child_env(), no_dac=True)

    def chmod(mode: int) -> None:
        for directory in (state, state / "holders"):
            directory.chmod(mode)

    try:
        _ride_out_the_fault(bot, run_cli, db_url, "PermissionError: [Errno 13] Permission "
                            "denied", lambda: chmod(0o500), lambda: chmod(0o700))
    finally:
        chmod(0o700)


def test_a_write_that_fails_like_eio(spawn: Callable[..., Child], db_url: str,
                                     state_dir: Path, child_env: Callable[..., Any],
                                     run_cli: Callable[..., Any]) -> None:
    """EIO's stand-in: the status file's name is a directory, so its rename fails."""
    bot = spawn(BOT, db_url, env=child_env())
    status = state_dir / "holders" / f"bot-{HOSTNAME}-{bot.pid}.json"

    _ride_out_the_fault(bot, run_cli, db_url, "IsADirectoryError: [Errno 21] Is a directory",
                        lambda: _replace_with_directory(status), status.rmdir)


def test_a_wrong_typed_manifest_keeps_orders_paused(
    make_guard: Callable[..., Guard], db_path: Path, db_url: str,
) -> None:
    """Bad data read back from disk: a paused guard asks the catalog for a verified
    backup on every admission; a manifest whose created_ts is a string keeps refusing
    the order, and never raises TypeError into the host."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY)")
    guard = make_guard(Config(db_url=db_url, backup_on_session_start=False))
    guard.start_session("S-data")
    guard.pause_trading("the session-start backup failed")
    manifest = guard.backup()
    path = guard.catalog.manifest_path(manifest.id)
    data = json.loads(path.read_text())
    data["created_ts"] = "yesterday"
    path.write_text(json.dumps(data))
    # Whether the catalog refuses the manifest when reading it (manifest validation) or
    # hands it on and the comparison with the session start raises TypeError, the host
    # gets a refusal, never the exception.
    assert guard.admit_order(timeout=0) is False
    assert guard.paused is not None
    assert not guard.state.busy


def test_a_caller_mistake_still_raises(guard: Guard) -> None:
    guard.start_session("S-mistake")
    with pytest.raises(TypeError, match="kind is required"):
        guard.order_event("A-1")
    with pytest.raises(ValueError, match="unknown order event kind"):
        guard.order_event("A-1", "exploded")


def test_bad_generation_data_in_tick_is_contained(guard: Guard, state_dir: Path,
                                                  received: Callable[..., list[Any]],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    faults = received(signals.host_fault, keywords_only=True)
    guard.start_session("S-tick")
    (state_dir / "generation.json").write_text('{"generation": [1]}')
    guard.tick()
    assert [f["call"] for f in faults] == ["tick"]
    assert faults[0]["error"].startswith("TypeError: ")
    assert "dbguard: tick could not complete (TypeError" in caplog.text


# -- the freqtrade adapter's callbacks, on a plain base class ------------------------------


class _BaseStrategy:
    """What the mixin calls through super(): freqtrade's IStrategy defaults, minimal."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def bot_start(self, **kwargs: Any) -> None:
        pass

    def bot_loop_start(self, current_time: datetime, **kwargs: Any) -> None:
        pass

    def confirm_trade_entry(self, **kwargs: Any) -> bool:
        return True

    def confirm_trade_exit(self, **kwargs: Any) -> bool:
        return True

    def order_filled(self, **kwargs: Any) -> None:
        pass

    def ft_bot_cleanup(self) -> None:
        pass


class _Order:
    def __init__(self, order_id: str, status: str, side: str) -> None:
        self.order_id, self.status, self.side = order_id, status, side


def _replace_with_directory(status: Path) -> None:
    """Put a directory where the status file is. The guard's status thread may rename a
    fresh status file into place between our unlink and mkdir; once the directory
    exists, no rename can replace it."""
    for _ in range(1000):
        status.unlink(missing_ok=True)
        with contextlib.suppress(FileExistsError):
            status.mkdir()
            return
    raise AssertionError(f"{status} kept coming back")


def test_the_freqtrade_callbacks_under_a_failing_status_file(
    db_url: str, state_dir: Path, run_cli: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The mixin's callbacks (without freqtrade: its loop reconcile is logged as failing
    here; tests/freqtrade runs them in a real bot) return, an entry is postponed, and a
    fill gives the lease back, with the status file's name taken by a directory."""
    from dbguard_plugin.hosts.freqtrade import DbGuardMixin

    class Strategy(DbGuardMixin, _BaseStrategy):
        pass

    strategy = Strategy({"runmode": "dry_run", "dry_run": True, "db_url": db_url,
                         "dbguard": {"backup_on_session_start": False,
                                     "backup_on_session_end": False}})
    now = datetime.now(timezone.utc)
    strategy.bot_start()
    guard = strategy.dbguard
    assert guard is not None
    entry = {"pair": "BTC/USDT", "order_type": "limit", "amount": 1.0, "rate": 1.0,
             "time_in_force": "GTC", "current_time": now, "entry_tag": None, "side": "long"}
    assert strategy.confirm_trade_entry(**entry) is True
    guard.order_event("F-1", "submitted", symbol="BTC/USDT", side="buy")
    status = state_dir / "holders" / f"bot-{HOSTNAME}-{os.getpid()}.json"
    _replace_with_directory(status)
    strategy.order_filled(pair="BTC/USDT", trade=None, order=_Order("F-1", "closed", "buy"),
                          current_time=now)
    assert not guard.lease.holding_orders
    assert not {"orders-in-flight", "lease-held"} & set(_check_restore(run_cli, db_url))
    assert strategy.confirm_trade_entry(**entry) is False
    assert strategy.confirm_trade_exit(pair="BTC/USDT", trade=None, order_type="limit",
                                       amount=1.0, rate=1.0, time_in_force="GTC",
                                       exit_reason="roi", current_time=now) is False
    strategy.bot_loop_start(current_time=now)
    strategy.ft_bot_cleanup()
    assert strategy.dbguard is None
    assert "order_event could not complete (IsADirectoryError" in caplog.text
    assert "admit_order could not complete (IsADirectoryError" in caplog.text
    assert stat.S_ISDIR(status.stat().st_mode)
    status.rmdir()


# -- a third-party plugin that raises -------------------------------------------------------


class Raising:
    """A plugin with a bug in every hook, raising what no fault list names; its
    ``dbguard_order_event`` is tryfirst, so pluggy would call it before the tracker."""

    @hookimpl
    def dbguard_session_started(self, guard: Guard, session: Any) -> None:
        raise RuntimeError("plugin bug at session start")

    @hookimpl
    def dbguard_session_ending(self, guard: Guard, session: Any) -> None:
        raise AttributeError("plugin bug at session end")

    @hookimpl(tryfirst=True)
    def dbguard_order_event(self, guard: Guard, event: Any) -> None:
        raise ZeroDivisionError("plugin bug on an order event")

    @hookimpl
    def dbguard_refresh(self, guard: Guard, operation: Any) -> None:
        raise RuntimeError("plugin bug on refresh")

    @hookimpl
    def dbguard_veto(self, guard: Guard, operation: Any, state: Any) -> str | None:
        raise KeyError("plugin bug in a veto")


def test_a_raising_plugin_never_reaches_the_host_and_the_tracker_still_tracks(
        guard: Guard, register_plugin: Callable[[object], object],
        received: Callable[..., list[Any]], caplog: pytest.LogCaptureFixture) -> None:
    register_plugin(Raising())
    faults = received(signals.host_fault, keywords_only=True)
    guard.start_session("S-buggy-plugin")
    assert guard.admit_order(timeout=0)
    guard.order_event("7", "submitted", symbol="BTC/USDT", side="buy")
    # the tracker saw the order although the plugin raised before it
    assert guard.state.busy
    verdict = guard.check("restore")
    assert [r.code for r in verdict.reasons][:1] == ["orders-in-flight"]
    guard.order_event("7", "filled")
    assert not guard.state.busy
    (guard.location.state_dir / "generation.json").write_text('{"generation": 9}')
    guard.tick()
    guard.end_session()
    assert [f["call"] for f in faults] == ["start_session", "order_event", "order_event",
                                          "tick", "end_session"]
    assert faults[1]["error"] == "ZeroDivisionError: plugin bug on an order event"
    assert "dbguard: end_session could not complete (AttributeError" in caplog.text
    assert guard.state.session is None
    # the session lock is given back despite the plugin: only the plugin objects now
    assert [r.code for r in guard.check("restore").reasons] == ["plugin"]


def test_a_veto_plugin_that_raises_is_an_objection(guard: Guard,
                                                   register_plugin: Callable[[object], object]
                                                   ) -> None:
    register_plugin(Raising())
    verdict = guard.check("vacuum")
    assert not verdict.allowed
    (reason,) = [r for r in verdict.reasons if r.code == "plugin"]
    assert "a veto plugin failed (KeyError: 'plugin bug in a veto')" in reason.message
