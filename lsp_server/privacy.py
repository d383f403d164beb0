"""What may leave the machine: cloud deny rules, secret redaction, and the audit log of what did."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import json
import logging
import os
import posixpath
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

IGNORE_FILE = ".tandemignore"
# A URI scheme has two letters or more: `C:` starts a Windows path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")


def cloud_denied(path: str, root: str | None, deny_globs: Sequence[str]) -> str | None:
    """Why the file at `path` must not go to the cloud, or None when it may.

    `path` is a file path (`/`- or `\\`-separated) or, for a buffer that is not a file
    (`untitled:`, ...), its URI, of which only the file name is matched. Deny rules match without
    regard to case everywhere: erring toward keeping a file home costs one local fallback, and
    `KEY.PEM` or `.ENV` on a case-insensitive file system is the file the rule was written for.
    """
    file = _file_path(path)
    parts = _parts(unquote(urlsplit(path).path) if file is None else file)
    name = parts[-1] if parts else ""
    rel = None if file is None else _relative(file, root)
    for glob in deny_globs:
        pattern = _compiled(glob, cross_dirs=True)
        if pattern.fullmatch(name) or (rel is not None and pattern.fullmatch(rel)):
            return f"{rel or name} matches the cloud deny pattern {glob!r} (privacy.cloudDeny)"
    if root is None or rel is None:
        return None
    line = _ignored_by(rel, _read_ignore_file(Path(root) / IGNORE_FILE))
    if line is not None:
        return f"{rel} is listed in {IGNORE_FILE} ({line!r})"
    return None


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL that carries one (`scheme://user:password@host`) shown as `***`."""
    return _URL_PASSWORD.sub(r"\1***@", text)


class PasswordsHidden(logging.Formatter):
    """Log lines with URLs' passwords hidden, tracebacks included (httpx logs each request's URL whole)."""

    def format(self, record: logging.LogRecord) -> str:
        return hide_passwords(super().format(record))


def leaves_machine(url: str) -> bool:
    """True unless `url` names this machine by a loopback address or `localhost`."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere, so it counts as another machine
        return True


def _file_path(path: str) -> str | None:
    """The file path `path` names: itself, or a `file:` URI's path; None for another scheme."""
    scheme = _SCHEME.match(path)
    if scheme is None:
        return path
    return unquote(urlsplit(path).path) if scheme.group(1).lower() == "file" else None


def _parts(path: str) -> list[str]:
    return [part for part in posixpath.normpath(path.replace("\\", "/")).split("/") if part not in ("", ".")]


def _relative(path: str, root: str | None) -> str | None:
    """`path` relative to the workspace `root`, `/`-separated; None outside it."""
    if root is None:
        return None
    parts, base = _parts(path), _parts(root)
    if len(parts) <= len(base) or [p.casefold() for p in parts[: len(base)]] != [b.casefold() for b in base]:
        return None
    return "/".join(parts[len(base) :])


def _read_ignore_file(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _ignored_by(rel: str, lines: Sequence[str]) -> str | None:
    """The last gitignore-style line deciding `rel`, if it ignores it."""
    parts = rel.split("/")
    dirs = ["/".join(parts[:i]) for i in range(1, len(parts))]
    decided: str | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        body = pattern.rstrip("/")
        dir_only = body != pattern
        # A pattern without a slash (but a trailing one) matches at any depth, as in gitignore.
        glob = body.lstrip("/") if "/" in body else "**/" + body
        regex = _compiled(glob, cross_dirs=False)
        candidates = dirs if dir_only else [*dirs, rel]
        if any(regex.fullmatch(candidate) for candidate in candidates):
            decided = None if negate else line
    return decided


@functools.lru_cache(maxsize=512)
def _compiled(glob: str, *, cross_dirs: bool) -> re.Pattern[str]:
    """A glob as a case-insensitive regex; `cross_dirs`: `*` and `?` match `/` too, as in fnmatch."""
    try:
        return re.compile(_glob_regex(glob, cross_dirs), re.IGNORECASE)
    except re.error:  # a bracket no name can match as a set, like [z-a]: take the glob literally
        return re.compile(re.escape(glob), re.IGNORECASE)


def _glob_regex(glob: str, cross_dirs: bool) -> str:
    """`**/` matches any number of directories, none included; `**` anything."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append(".*" if cross_dirs else "[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("." if cross_dirs else "[^/]")
            i += 1
        elif glob[i] == "[" and (close := glob.find("]", i + 2)) != -1:
            body = re.sub(r"([\\\[&~|])", r"\\\1", glob[i + 1 : close])
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = close + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


# Provider tokens: a fixed prefix, then at least as many characters as the provider issues. The
# prefixes and lengths come from gitleaks' rules (config/gitleaks.toml, gitleaks/gitleaks@b58d3f1):
# prefix-anchored rules for some two hundred providers, kept current by its maintainers, where
# detect-secrets has fewer providers and leans on entropy, which would flag the hashes and ids
# of ordinary code. Lengths are minimums here: a placeholder costs little, a leaked key a lot.
_TOKENS: tuple[tuple[str, str], ...] = (
    ("anthropic_key", r"sk-ant-[A-Za-z0-9_-]{20,}"),
    ("openai_key", r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    ("stripe_key", r"(?:sk|rk)_live_[0-9A-Za-z]{16,}"),
    ("github_token", r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}"),
    ("github_token", r"github_pat_[A-Za-z0-9_]{22,}"),
    ("gitlab_token", r"(?:glpat|glptt|glrt)-[A-Za-z0-9_-]{20,}"),
    ("slack_token", r"xox[abposre]-[A-Za-z0-9-]{10,}"),
    ("slack_token", r"xapp-\d-[A-Za-z0-9]+-\d+-[A-Za-z0-9]+"),
    ("slack_webhook", r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,}"),
    ("huggingface_token", r"(?:hf_|api_org_)[A-Za-z]{34,}"),
    ("sendgrid_key", r"SG\.[A-Za-z0-9_-]{22,}\.[A-Za-z0-9_-]{43,}"),
    ("npm_token", r"npm_[A-Za-z0-9]{36,}"),
    ("pypi_token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
    ("digitalocean_token", r"do[opr]_v1_[a-f0-9]{64,}"),
    ("shopify_token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32,}"),
    ("databricks_token", r"dapi[a-f0-9]{32,}"),
    ("vault_token", r"hv[sb]\.[A-Za-z0-9_-]{90,}"),
    ("postman_key", r"PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34,}"),
    ("doppler_token", r"dp\.pt\.[A-Za-z0-9]{43,}"),
    ("linear_key", r"lin_api_[A-Za-z0-9]{40,}"),
    ("grafana_token", r"glc_[A-Za-z0-9+/]{32,}={0,3}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"),
    ("pulumi_token", r"pul-[a-f0-9]{40,}"),
    ("new_relic_key", r"NRAK-[A-Z0-9]{27,}"),
    ("dynatrace_token", r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64,}"),
    ("twilio_key", r"SK[0-9a-fA-F]{32,}"),
    ("square_token", r"(?:EAAA|sq0atp-)[A-Za-z0-9_-]{22,}"),
    ("age_secret_key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
    ("telegram_bot_token", r"\d{5,16}:A[A-Za-z0-9_-]{34,}"),
)
_TOKEN_KINDS = frozenset(kind for kind, _ in _TOKENS)
# Order is priority: a span claimed by an earlier pattern is not matched again by a later one.
# Each pattern's group "s", "dq", "sq" or "u" is the secret that is replaced.
_KEYWORDS = (
    r"password|passwd|pwd|passphrase|secret|token|api_?key|apikey|access_?key|private_?key"
    r"|credentials?|auth"
)
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(
            # PEM keys, and OpenPGP's "-----BEGIN PGP PRIVATE KEY BLOCK-----"
            r"(?P<s>-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            # A key cut off by the context window is still a key: redact to the end.
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*\Z))"
        ),
    ),
    # No lookbehind for the word boundary (redact() checks it): one would keep the regex engine
    # from searching for the literal prefix, twenty times slower.
    *((kind, re.compile(f"(?P<s>{body})")) for kind, body in _TOKENS),
    (
        "aws_access_key",
        re.compile(r"(?<![A-Za-z0-9])(?P<s>(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})(?![A-Za-z0-9])"),
    ),
    (
        "aws_secret_key",
        re.compile(
            r"(?i:aws[\w.-]{0,30}?(?:secret|sk)[\w.-]{0,30}?)[\"']?\s*(?::|=|:=|=>)\s*[\"']?"
            r"(?P<s>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
    ),
    ("google_api_key", re.compile(r"(?<![\w-])(?P<s>AIza[0-9A-Za-z_-]{35})(?![\w-])")),
    # Azure storage connection strings, from detect-secrets' AzureStorageKeyDetector (gitleaks has no rule).
    ("azure_storage_key", re.compile(r"AccountKey=(?P<s>[A-Za-z0-9+/]{86,}==)")),
    (
        "jwt",
        re.compile(r"(?<![\w-])(?P<s>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"),
    ),
    (
        "auth_header",
        re.compile(
            r"(?i:\bbearer\s+|\bauthorization[\"']?\s*[:=]\s*[\"']?(?:basic|token|bearer)\s+)"
            # a credential, not a word of prose ("Bearer tokens are..."): it holds a digit
            r"(?=[\w.~+/-]*\d)(?P<s>[\w.~+/-]{8,}=*)"
        ),
    ),
    (
        "connection_string",
        # The password runs to the last "@" before the host: a raw "@" in it is common.
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/'\"]*:(?P<s>[^\s/'\"]+)@"),
    ),
    (
        "secret_assignment",
        re.compile(
            rf"(?i:{_KEYWORDS})\b[\"']?"
            # an optional type annotation: `password: str = "..."`
            r"(?:\s*:\s*[A-Za-z_][\w\[\]., |]*?)?\s*(?::|=|:=|=>)\s*"
            r"(?:\"(?P<dq>[^\"\n]+)\"|'(?P<sq>[^'\n]+)')"
        ),
    ),
    (
        "secret_assignment",
        # Unquoted values of config files: YAML `POSTGRES_PASSWORD: s3cret`, .env and shell
        # `export API_TOKEN=abc123` (no space before "=": `password = x` is code).
        re.compile(
            rf"^[ \t]*(?:export[ \t]+|-[ \t]+)?(?P<k>[\w.-]*?(?i:{_KEYWORDS}))(?:=|[ \t]*:[ \t]+)"
            r"(?P<u>[^\s'\"`$#(\[{<&*!|>][^\s]*?)[ \t]*(?:[ \t]#.*)?$",
            re.MULTILINE,
        ),
    ),
)
# Values that only name a secret held elsewhere: `${DB_PASS}`, `{password}`, `%(pw)s`, `<your key>`.
_TEMPLATE = re.compile(r"\$\{[^}]*\}|\{\{?[^}]*\}\}?|%(?:\(\w+\))?[sd]|<[^>]*>")
# Unquoted values that are code or literals, not secrets: `password=get_password()`,
# `api_key: cfg.key,` in a struct literal, `token: string;`, YAML's `auth: true`.
_CODE = re.compile(r".*[(\[].*|.*[,;]|(?i:true|false|null|none|yes|no|~)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_.]*")
_PLACEHOLDER = re.compile(r"<<SECRET_\d+>>")


@dataclass(frozen=True)
class Redaction:
    """Text with secrets replaced by placeholders, and the originals to put back."""

    text: str
    placeholders: dict[str, str]
    """Placeholder -> original secret."""
    kinds: list[str]
    """Kinds of secret found, each once, in order of first appearance."""
    spans: tuple[tuple[int, int, int, int], ...] = field(default=(), repr=False)
    """(original start, original end, redacted start, redacted end) of each replacement."""

    def map_offset(self, pos: int, *, end: bool = False) -> int:
        """Where offset `pos` of the original text lies in the redacted text.

        An offset inside a replaced secret maps to the start of its placeholder, or to its end
        when `end` is set, so a selection never cuts a placeholder in two.
        """
        i = bisect.bisect_right([s[0] for s in self.spans], pos) - 1
        if i < 0:
            return pos
        start, stop, new_start, new_stop = self.spans[i]
        if pos >= stop:
            return new_stop + (pos - stop)
        if pos == start:
            return new_start
        return new_stop if end else new_start


def redact(text: str, known: Redaction | None = None) -> Redaction:
    """Replace secrets in `text` with stable placeholders, continuing the numbering of `known`."""
    claimed: list[tuple[int, int, str]] = []  # sorted, never overlapping
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            group = next(g for g in ("s", "dq", "sq", "u") if g in match.re.groupindex and match.group(g))
            start, stop = match.span(group)
            value = match.group(group)
            if _TEMPLATE.fullmatch(value) or _PLACEHOLDER.fullmatch(value):
                continue
            if group == "u" and _unquoted_code(match.group("k"), value):
                continue
            if kind in _TOKEN_KINDS and start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_-"):
                continue  # inside a longer word: `risk-assessment-...` holds no `sk-` key
            i = bisect.bisect(claimed, (start,))
            if (i > 0 and claimed[i - 1][1] > start) or (i < len(claimed) and claimed[i][0] < stop):
                continue
            claimed.insert(i, (start, stop, kind))

    placeholders = dict(known.placeholders) if known else {}
    by_value = {v: k for k, v in placeholders.items()}
    kinds = list(known.kinds) if known else []
    out: list[str] = []
    spans: list[tuple[int, int, int, int]] = []
    pos = length = 0
    for start, stop, kind in claimed:
        value = text[start:stop]
        if value not in by_value:
            by_value[value] = f"<<SECRET_{len(by_value) + 1}>>"
            placeholders[by_value[value]] = value
        if kind not in kinds:
            kinds.append(kind)
        out.append(text[pos:start])
        length += start - pos
        spans.append((start, stop, length, length + len(by_value[value])))
        out.append(by_value[value])
        length += len(by_value[value])
        pos = stop
    out.append(text[pos:])
    return Redaction("".join(out), placeholders, kinds, tuple(spans))


def _unquoted_code(key: str, value: str) -> bool:
    """True when an unquoted `key: value` is code or a literal.

    A bare word (`token: str`, `secret=self.secret`) is taken for code unless the key is an
    environment variable's, upper case: `POSTGRES_PASSWORD: example` sets the password.
    """
    return _CODE.fullmatch(value) is not None or (not key.isupper() and _WORD.fullmatch(value) is not None)


def restore(text: str, redaction: Redaction) -> str:
    """Put the original secrets back where their placeholders appear in `text`."""
    return _PLACEHOLDER.sub(lambda m: redaction.placeholders.get(m.group(), m.group()), text)


class AuditLog:
    """Append-only JSON-lines record of what was sent to the cloud; never holds a secret."""

    def __init__(self, path: str | os.PathLike[str], on_problem: Callable[[str], None] = log.warning) -> None:
        self.path = Path(path)
        self._on_problem = on_problem
        """Told when a record cannot be written: the request it describes was sent, and its reply is kept."""
        self._lock = threading.Lock()

    def write(
        self,
        model: str,
        uri: str,
        bytes_sent: int,
        prompt_tokens: int,
        completion_tokens: int,
        redacted_kinds: Sequence[str],
    ) -> None:
        """Append one record with the current time; a failure is reported, never raised."""
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": model,
            # A URI can carry credentials (https://user:token@host/...).
            "uri": redact(uri).text,
            "bytesSent": bytes_sent,
            "promptTokens": prompt_tokens,
            "completionTokens": completion_tokens,
            "redacted": list(redacted_kinds),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)
            except OSError as exc:
                self._on_problem(f"the cloud audit log {self.path} cannot be written ({exc.strerror or exc})")
