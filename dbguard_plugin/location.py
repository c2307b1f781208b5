"""Where a database lives and where dbguard keeps its own files for it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dbguard_plugin.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# user:password@ anywhere, with or without a scheme before it (a URL typed without "://"
# must not leak its password into an error message either).
#: user:password@ after a scheme (the password runs to the token's last @, so a / or a
#: quote in it is hidden too), or without one (a URL typed without "://").
_CREDENTIALS = re.compile(r"(://[^\s/@:'\"]*:)\S*@|()([^\s:/@'\"]+:)[^\s'\"/]*@")
#: Settings named like a secret, in a query string or a libpq keyword list.
_SECRET_SETTING = re.compile(
    r"(?i)((?:^|[?&;\s])(?:password|passwd|pwd|pass|secret|token|api[_-]?key|apikey|"
    r"access[_-]?key|secret[_-]?key|sslpassword|auth|authorization|credentials?)"
    r"\s*=\s*)('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^&\s'\"#;]*)"
)


@dataclass(frozen=True)
class DatabaseLocation:
    """A database URL with its password hidden, and dbguard's directory beside it."""

    #: The URL as given; ``url`` is its SQLAlchemy form. Kept out of repr: the password.
    source: str | URL = field(repr=False)
    #: The URL as it may appear in logs, manifests and errors: never the password.
    redacted: str
    #: The SQLite file, resolved (symlinks, ``..``, ``~``, relative, ``file:`` URIs), or
    #: None for a server database.
    sqlite_path: Path | None
    #: dbguard's private directory for this database: lease, status, audit log.
    state_dir: Path
    #: What every spelling of this database has in common: the resolved file, or the
    #: server and database name. The lease, catalog marker and profiles key on it.
    identity: str = ""
    #: The URL's backend name: sqlite, postgresql, mysql, mariadb.
    backend: str = ""

    @functools.cached_property
    def url(self) -> URL:
        """The URL as SQLAlchemy's; parsed on first use, as SQLAlchemy takes a third of a
        second to import and a SQLite command that never opens an engine needs none."""
        return parse_url(self.source)


def locate(url: str | URL, state_dir: str | Path | None = None) -> DatabaseLocation:
    """Parse *url* and decide where dbguard keeps its files for that database.

    A database is known by its identity, never by its spelling: a SQLite path is resolved
    here, once, so a symlink, ``..`` or a ``file:`` URI reaches the same lease, status
    and catalog as the plain path. For SQLite the directory sits beside the resolved file
    (``tradesv3.sqlite.dbguard/``); for a server database it sits under the user's state
    directory, named after the server and database, unless *state_dir* is given.
    """
    redacted, backend, sqlite_path, identity = _identify(url)
    if state_dir is not None:
        directory = Path(state_dir).expanduser().absolute()
    elif sqlite_path is not None:
        directory = sqlite_path.with_name(sqlite_path.name + ".dbguard")
    else:
        family, _, rest = identity.partition("://")
        directory = _state_dir(f"{family}-{rest.replace(':', '-')}", identity)
    return DatabaseLocation(url, redacted, sqlite_path, directory, identity, backend)


def _identify(url: str | URL) -> tuple[str, str, Path | None, str]:
    """*url* redacted, its backend, its resolved SQLite file (None for a server) and its
    identity. A plain SQLite URL is read here; SQLAlchemy reads every other one."""
    plain = _plain_sqlite_url(url) if isinstance(url, str) else None
    if plain is not None:
        rendered, database = plain
        backend, redacted = "sqlite", redact(rendered)
        query = rendered.partition("?")[2]
    else:
        parsed = parse_url(url)
        backend, redacted = parsed.get_backend_name(), redact(
            parsed.render_as_string(hide_password=True))
        if backend != "sqlite":
            return redacted, backend, None, server_identity(parsed)
        database = parsed.database
        query = urllib.parse.urlencode(parsed.query, doseq=True)
    path = sqlite_file(database or "", redacted, query)
    return redacted, backend, path, str(path)


#: SQLAlchemy's own URL pattern (``sqlalchemy.engine.url._parse_url``, alike in 2.0 and
#: 2.1), so that a SQLite URL splits here exactly as SQLAlchemy splits it.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)
#: What ``urllib.parse.quote(database, safe=" +/")`` leaves as it is.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~ +/-]*")


def _plain_sqlite_url(url: str) -> tuple[str, str | None] | None:
    """A SQLite URL without user, host or port, as SQLAlchemy renders it (password-free)
    and its database part; None for any other URL, which SQLAlchemy itself parses."""
    match = _URL.match(url)
    if match is None or match["name"].split("+")[0] != "sqlite" or any(
            match[part] is not None
            for part in ("username", "password", "ipv6host", "ipv4host", "port")):
        return None
    database = shown = match["database"]
    if database is not None and not _UNQUOTED.fullmatch(database):
        # Only here do SQLAlchemy's versions differ: 2.1 reads %-escapes in the database
        # part and quotes it back when rendering, 2.0 takes it literally.
        decodes = _sqlalchemy_decodes_database()
        if decodes is None:
            return None
        if decodes:
            database = urllib.parse.unquote(database)
            shown = urllib.parse.quote(database, safe=" +/")
    rendered = f"{match['name']}://" + ("" if shown is None else f"/{shown}")
    return rendered + _render_query(match["query"] or ""), database


def _render_query(query: str) -> str:
    """A query string as SQLAlchemy renders it back: blank values dropped, keys sorted."""
    pairs = urllib.parse.parse_qsl(query)
    if not pairs:
        return ""
    keys = sorted(dict.fromkeys(key for key, _ in pairs))
    return "?" + "&".join(f"{urllib.parse.quote_plus(key)}={urllib.parse.quote_plus(value)}"
                          for key in keys for other, value in pairs if other == key)


@functools.cache
def _sqlalchemy_decodes_database() -> bool | None:
    """Whether the installed SQLAlchemy %-decodes a URL's database part and %-quotes it
    when rendering (2.1 does, 2.0 takes it literally); None when its version is unknown.

    Read from the package's source, not by importing it: the import is what this saves.
    """
    module = sys.modules.get("sqlalchemy")
    version = getattr(module, "__version__", None)
    if version is None:
        spec = importlib.util.find_spec("sqlalchemy")
        try:
            source = Path(spec.origin).read_text(encoding="utf-8") \
                if spec is not None and spec.origin else ""
        except OSError:
            source = ""
        found = re.search(r"^__version__\s*=\s*[\"']([^\"']+)", source, re.M)
        version = found[1] if found else None
    numbers = re.match(r"(\d+)\.(\d+)", version or "")
    if numbers is None:
        return None
    return (int(numbers[1]), int(numbers[2])) >= (2, 1)


def _state_dir(name: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return user_state_dir() / f"{_SAFE.sub('_', name)}-{digest}"


def adopt_legacy_state_dir(location: DatabaseLocation) -> None:
    """Before 0.2 a server database's directory was named after its URL's spelling: the
    first use under its identity's name takes that directory (catalog, journal, audit)
    along, so no backup is left behind."""
    if location.sqlite_path is not None:
        return
    directory = location.state_dir
    url = location.url
    legacy = _state_dir(f"{url.get_backend_name()}-{url.host}-{url.database}",
                        location.redacted)
    if directory != legacy and not directory.exists() \
            and legacy.is_dir() and not legacy.is_symlink():
        with contextlib.suppress(OSError):  # another process took it first
            os.rename(legacy, directory)


def parse_url(url: str | URL) -> URL:
    """*url* as a SQLAlchemy URL; ConfigError (without the password) when it is not one."""
    # Deferred: SQLAlchemy costs a third of a second to import; SQLite URLs need none.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError) as exc:
        shown = redact_unparsed(str(url))
        raise ConfigError(
            f"database URL {shown!r} is not a SQLAlchemy URL ({_reason(exc, str(url))}); "
            "expected e.g. sqlite:////path/to/tradesv3.sqlite"
        ) from None


def _reason(exc: Exception, url: str) -> str:
    """The parser's complaint, which may quote the URL back: never with its secret."""
    reason = str(exc).replace(url, redact_unparsed(url))
    return redact(reason)


def sqlite_file(database: str, shown: str = "", query: str = "") -> Path:
    """The file a SQLite URL's database part names, resolved the way SQLite opens it.

    SQLite (3.10+) resolves symlinks and opens the canonical file, so two spellings that
    resolve alike share one WAL and one lock; dbguard must agree with it. *query* is the
    URL's query string, which the driver passes into a ``file:`` URI with ``uri=true``.
    """
    if _in_memory(database, query):
        raise ConfigError(
            f"database URL {shown or database!r} is an in-memory SQLite database; "
            "dbguard guards files: give sqlite:////absolute/path/to/file.sqlite"
        )
    if "\x00" in database:
        raise ConfigError(f"database URL {shown!r} has a NUL character in its path")
    if database.startswith("file:"):
        database = _file_uri_path(database, shown)
    return Path(os.path.realpath(os.path.expanduser(database)))


def _in_memory(database: str, query: str) -> bool:
    """Whether SQLite opens *database* in memory: ``:memory:``, a ``file::memory:`` URI,
    or a URI (``file:``, or ``uri=true`` in the URL's query, whose other parameters the
    driver hands to SQLite) with ``mode=memory`` or the in-memory ``memdb`` VFS."""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return True
    inline = database.partition("?")[2] if database.startswith("file:") else ""
    params = urllib.parse.parse_qs(f"{inline}&{query}")
    if not database.startswith("file:") and params.get("uri", [""])[-1].lower() != "true":
        return False
    return "memory" in params.get("mode", []) or "memdb" in params.get("vfs", [])


def _file_uri_path(uri: str, shown: str) -> str:
    """The path of a SQLite ``file:`` URI: query and fragment dropped, %-escapes decoded,
    an authority only when it is empty or ``localhost`` (as SQLite itself accepts)."""
    rest = uri[5:].split("#", 1)[0].split("?", 1)[0]
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
        if authority not in ("", "localhost"):
            raise ConfigError(f"database URL {shown or uri!r} names host {authority!r}; "
                              "SQLite opens only local files")
        rest = "/" + path
    return urllib.parse.unquote(rest)


#: Server hosts that are this machine, whatever the spelling (a socket too).
_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "[::1]", "localhost.localdomain"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
#: One server family per backend name: mariadb and mysql speak to the same server.
_FAMILIES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
             "mariadb": "mysql"}


def server_identity(url: URL) -> str:
    """``family://host:port/database`` for a server URL: driver, user, password and query
    parameters left out, and every name of this machine spelled ``localhost``."""
    backend = url.get_backend_name()
    family = _FAMILIES.get(backend, backend)
    host = (url.host or "").lower()
    query_host = url.query.get("host")
    if not host and isinstance(query_host, str) and not query_host.startswith("/"):
        host = query_host.lower()
    if host in _LOCAL_HOSTS or host.startswith("/"):
        host = "localhost"
    port = url.port or _DEFAULT_PORTS.get(family, 0)
    return f"{family}://{host}:{port}/{url.database or ''}"


def identity_of(text: str) -> str:
    """The identity of a database named by a URL or (as old catalog markers and
    manifests did) a plain path; the text itself when it is neither."""
    if text.startswith(("/", "~")) or (os.name == "nt" and text[1:3] in (":\\", ":/")):
        return str(Path(os.path.realpath(os.path.expanduser(text))))
    try:
        return locate(text).identity
    except ConfigError:
        return text


def hard_link_problem(location: DatabaseLocation) -> str | None:
    """Why the database file cannot be guarded when it has several hard links, or None.

    SQLite names its -wal, -shm and -journal files after the name it opened, so two
    names of one file get two WALs and two journals: SQLite cannot lock it safely, and
    dbguard, which knows a file by its resolved name, would keep two leases for it.
    """
    path = location.sqlite_path
    if path is None:
        return None
    try:
        links = os.stat(path).st_nlink
    except OSError:
        return None
    if links <= 1:
        return None
    return (f"{path} has {links} hard links: SQLite names its -wal and -journal after "
            "the name it opened, so processes using different names corrupt the database, "
            "and dbguard cannot guard it either. Stop the bot, keep one name (delete the "
            "other links with rm, never the -wal beside the name the bot uses) and point "
            "every configuration at it")


def redact(text: str) -> str:
    """*text* with every password hidden: a URL's userinfo and any setting named like a
    secret (``?password=``, ``&token=``, ``sslpassword=...``). The one function every
    URL and error text goes through before it leaves the process."""
    text = _CREDENTIALS.sub(_mask_userinfo, text)
    return _SECRET_SETTING.sub(r"\1***", text)


def _mask_userinfo(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return f"{match.group(1)}***@"
    return f"{match.group(2)}{match.group(3)}***@"


def redact_unparsed(text: str) -> str:
    """A string that is not even a URL (a password with a space or a quote in it): all
    between ``://`` (or the start, without one) and the last ``@`` goes."""
    if "@" not in text:
        return redact(text)
    before, _, host = text.rpartition("@")
    scheme, sep, _ = before.partition("://")
    return redact(f"{scheme}{sep}***@{host}" if sep else f"***@{host}")


def user_state_dir() -> Path:
    """The platform's per-user state directory, for files not tied to one database."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "dbguard"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dbguard"
