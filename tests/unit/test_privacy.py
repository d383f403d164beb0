"""Privacy: cloud deny rules, secret redaction and restoring, the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lsp_server.config import Settings
from lsp_server.privacy import AuditLog, cloud_denied, leaves_machine, redact, restore

DEFAULT_DENY = Settings().cloud_deny
IGNORE = """\
# generated and private things
build/
/top-secret.txt
*.sql
!seed.sql
docs/**/private.md
"""


@pytest.mark.parametrize(
    ("rel", "denied_by"),
    [
        pytest.param(".env", "'.env*'", id="dotenv"),
        pytest.param("app/.env.local", "'.env*'", id="dotenv-variant-nested"),
        pytest.param("certs/server.pem", "'*.pem'", id="pem"),
        pytest.param("keys/tls.key", "'*.key'", id="key"),
        pytest.param("home/id_rsa.pub", "'id_rsa*'", id="ssh-key"),
        pytest.param("config/secrets.yaml", "'secrets.*'", id="secrets-file"),
        pytest.param("build/out.py", "'build/'", id="ignored-dir"),
        pytest.param("pkg/build/gen.py", "'build/'", id="ignored-dir-nested"),
        pytest.param("top-secret.txt", "'/top-secret.txt'", id="anchored"),
        pytest.param("db/dump.sql", "'*.sql'", id="glob-anywhere"),
        pytest.param("docs/a/b/private.md", "'docs/**/private.md'", id="double-star"),
        pytest.param("docs/private.md", "'docs/**/private.md'", id="double-star-zero-dirs"),
        pytest.param("src/app.py", None, id="ordinary-file"),
        pytest.param("sub/top-secret.txt", None, id="anchored-elsewhere"),
        pytest.param("db/seed.sql", None, id="negated"),
        pytest.param("src/environment.py", None, id="env-lookalike"),
        pytest.param("builder.py", None, id="dir-pattern-not-a-file"),
    ],
)
def test_cloud_denied(tmp_path: Path, rel: str, denied_by: str | None) -> None:
    (tmp_path / ".tandemignore").write_text(IGNORE)
    reason = cloud_denied(str(tmp_path / rel), str(tmp_path), DEFAULT_DENY)
    if denied_by is None:
        assert reason is None
    else:
        assert reason is not None and denied_by in reason and rel in reason


def test_cloud_denied_outside_the_workspace_checks_names_only(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / ".tandemignore").write_text("*.py\n")
    assert cloud_denied(str(tmp_path / "other" / "a.py"), str(tmp_path / "ws"), DEFAULT_DENY) is None
    assert cloud_denied(str(tmp_path / "other" / ".env"), str(tmp_path / "ws"), DEFAULT_DENY)
    assert cloud_denied(str(tmp_path / "ws" / "a.py"), str(tmp_path / "ws"), DEFAULT_DENY)


def test_custom_globs_match_the_relative_path(tmp_path: Path) -> None:
    assert cloud_denied(str(tmp_path / "config" / "prod.json"), str(tmp_path), ["config/*.json"])
    assert cloud_denied(str(tmp_path / "prod.json"), str(tmp_path), ["config/*.json"]) is None


@pytest.mark.parametrize(
    ("path", "root", "globs", "denied_by"),
    [
        pytest.param("/ws/server.pem", "/ws", ["**/*.pem"], "'**/*.pem'", id="double-star-at-the-root"),
        pytest.param("/ws/a/b/server.pem", "/ws", ["**/*.pem"], "'**/*.pem'", id="double-star-nested"),
        pytest.param("/ws/config/prod.json", "/ws", ["config/**/*.json"], "'config/**/*.json'", id="zero-dirs"),
        pytest.param("/ws/KEY.PEM", "/ws", DEFAULT_DENY, "'*.pem'", id="upper-case-pem"),
        pytest.param("/ws/.ENV", "/ws", DEFAULT_DENY, "'.env*'", id="upper-case-dotenv"),
        pytest.param("/ws/deploy/Secrets.Yaml", "/ws", DEFAULT_DENY, "'secrets.*'", id="mixed-case-secrets"),
        pytest.param("/ws/Config/Prod.JSON", "/ws", ["config/*.json"], "'config/*.json'", id="relative-any-case"),
        pytest.param("C:\\proj\\.ENV", "C:\\proj", DEFAULT_DENY, "'.env*'", id="windows-dotenv"),
        pytest.param("C:\\proj\\certs\\Server.Pem", "c:\\Proj", DEFAULT_DENY, "'*.pem'", id="windows-pem"),
        pytest.param(
            "C:\\proj\\Config\\prod.json", "c:\\Proj", ["config/*.json"], "'config/*.json'", id="windows-relative"
        ),
        pytest.param("file:///c%3A/proj/ID_RSA", "c:\\proj", DEFAULT_DENY, "'id_rsa*'", id="windows-file-uri"),
        pytest.param("untitled:.env", "/ws", DEFAULT_DENY, "'.env*'", id="untitled-dotenv"),
        pytest.param("untitled:/home/me/KEY.pem", None, DEFAULT_DENY, "'*.pem'", id="untitled-path"),
        pytest.param("vscode-notebook-cell:/ws/.env.local#W0sZmlsZQ%3D%3D", "/ws", DEFAULT_DENY, "'.env*'", id="cell"),
        pytest.param("untitled:Untitled-1", "/ws", DEFAULT_DENY, None, id="untitled-ordinary"),
        pytest.param("C:\\proj\\src\\app.py", "C:\\proj", DEFAULT_DENY, None, id="windows-ordinary"),
        pytest.param("/ws/src/pem.py", "/ws", ["**/*.pem"], None, id="pem-lookalike"),
    ],
)
def test_deny_globs_match_at_the_root_in_any_case_and_on_buffer_names(
    path: str, root: str | None, globs: list[str], denied_by: str | None
) -> None:
    reason = cloud_denied(path, root, globs)
    if denied_by is None:
        assert reason is None
    else:
        assert reason is not None and denied_by in reason


def test_ignore_file_lines_match_in_any_case(tmp_path: Path) -> None:
    (tmp_path / ".tandemignore").write_text(IGNORE)
    assert (
        cloud_denied(str(tmp_path / "BUILD" / "out.py"), str(tmp_path), [])
        == "BUILD/out.py is listed in .tandemignore ('build/')"
    )
    assert cloud_denied(str(tmp_path / "db" / "DUMP.SQL"), str(tmp_path), [])
    assert cloud_denied(str(tmp_path / "db" / "Seed.sql"), str(tmp_path), []) is None  # negated in any case too


def test_a_bad_bracket_in_a_glob_is_taken_literally(tmp_path: Path) -> None:
    assert cloud_denied(str(tmp_path / "[z-a].txt"), str(tmp_path), ["[z-a].txt"])
    assert cloud_denied(str(tmp_path / "b.txt"), str(tmp_path), ["[z-a].txt"]) is None


@pytest.mark.parametrize(
    ("url", "leaves"),
    [
        pytest.param("http://127.0.0.1:8080", False, id="loopback-v4"),
        pytest.param("http://127.3.4.5:8080/v1", False, id="loopback-range"),
        pytest.param("http://[::1]:8000", False, id="loopback-v6"),
        pytest.param("http://LocalHost.:8000", False, id="localhost"),
        pytest.param("http://10.0.0.7:8000/v1", True, id="private-network"),
        pytest.param("https://gpu-pool.internal", True, id="host-name"),
        pytest.param("http://localhost.example.com", True, id="localhost-lookalike"),
        pytest.param("http://0.0.0.0:8000", True, id="unspecified"),
    ],
)
def test_leaves_machine(url: str, leaves: bool) -> None:
    assert leaves_machine(url) is leaves


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("code", "secret", "kind"),
    [
        pytest.param(
            'client = OpenAI(api_key="sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD")',
            "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            "openai_key",
            id="openai",
        ),
        pytest.param(
            "OPENAI_API_KEY=sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7s",
            "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7s",
            "openai_key",
            id="openai-project",
        ),
        pytest.param(
            "key = 'sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA-_xyz'",
            "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0EdCbA-_xyz",
            "anthropic_key",
            id="anthropic",
        ),
        pytest.param(
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7EXAMPLE",
            "aws_access_key",
            id="aws-access-key",
        ),
        pytest.param(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_key",
            id="aws-secret-key",
        ),
        pytest.param(
            'GH = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"',
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_token",
            id="github-classic",
        ),
        pytest.param(
            "token: github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
            "github_token",
            id="github-fine-grained",
        ),
        pytest.param(
            "SLACK = 'xoxb-2048-1234567890-AbCdEfGhIjKlMnOp'",
            "xoxb-2048-1234567890-AbCdEfGhIjKlMnOp",
            "slack_token",
            id="slack",
        ),
        pytest.param(
            "maps_key = AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
            "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
            "google_api_key",
            id="google",
        ),
        pytest.param(
            "stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "stripe_key",
            id="stripe",
        ),
        pytest.param(f"KEY = '''\n{PEM}\n'''", PEM, "private_key", id="pem-block"),
        pytest.param(
            f"KEY = '''\n{PEM.split('-----END')[0]}",
            PEM.split("-----END")[0],
            "private_key",
            id="pem-block-cut-off",
        ),
        pytest.param('db_password = "hunter2hunter2"', "hunter2hunter2", "secret_assignment", id="password"),
        pytest.param("secret: 'c0rrect-h0rse'", "c0rrect-h0rse", "secret_assignment", id="yaml-secret"),
        pytest.param('token="abc123def456"', "abc123def456", "secret_assignment", id="token"),
        pytest.param('password: str = "tr0ub4dor&3"', "tr0ub4dor&3", "secret_assignment", id="typed-password"),
        pytest.param(
            '{"clientSecret": "9f8e7d6c5b4a"}',
            "9f8e7d6c5b4a",
            "secret_assignment",
            id="json-secret",
        ),
        pytest.param(f"headers = {{'Authorization': 'Bearer {JWT}'}}", JWT, "jwt", id="jwt"),
        pytest.param(
            'DSN = "postgres://admin:s3cr3tP4ss@db.example.com:5432/app"',
            "s3cr3tP4ss",
            "connection_string",
            id="postgres-url",
        ),
        pytest.param(
            "redis://:p%40ssw0rd@cache:6379/0",
            "p%40ssw0rd",
            "connection_string",
            id="redis-no-user",
        ),
    ],
)
def test_secrets_are_redacted_and_restored(code: str, secret: str, kind: str) -> None:
    red = redact(code)
    assert secret not in red.text
    assert "<<SECRET_1>>" in red.text
    assert red.kinds == [kind]
    assert red.placeholders == {"<<SECRET_1>>": secret}
    assert restore(red.text, red) == code


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("password = get_password()", id="password-from-call"),
        pytest.param('token = request.headers["x"]', id="token-from-header"),
        pytest.param("if password == user.password:\n    login()", id="password-comparison"),
        pytest.param(
            'assert sha256(b"abc").hexdigest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"',
            id="hash-in-test",
        ),
        pytest.param('commit = "9fceb02d0ae598e95dc970b74767f19372d61af8"', id="git-sha"),
        pytest.param('request_id = "123e4567-e89b-12d3-a456-426614174000"', id="uuid"),
        pytest.param("sk = SigningKey.generate()\nsig = sk.sign(msg)", id="sk-variable"),
        pytest.param(
            'PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADU'
            'lEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="',
            id="base64-image",
        ),
        pytest.param('URL = "https://example.com:8080/api/v1?user=me&page=2"', id="url-no-credentials"),
        pytest.param('dsn = f"postgres://{user}:{password}@{host}/db"', id="dsn-template"),
        pytest.param('url = "postgres://app:${DB_PASSWORD}@db/app"', id="dsn-env-reference"),
        pytest.param('password = ""', id="empty-password"),
        pytest.param('token_type = "bearer"\nmax_tokens = "64"\nauthor = "Ada"', id="token-lookalikes"),
        pytest.param("git@github.com:org/repo.git", id="ssh-remote"),
    ],
)
def test_ordinary_code_is_left_alone(code: str) -> None:
    red = redact(code)
    assert red.text == code
    assert red.kinds == [] and red.placeholders == {}


def test_placeholders_are_stable_and_shared() -> None:
    key = "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7s"
    first = redact(f'a = "{key}"\nb = "{key}"\npassword = "hunter2hunter2"')
    assert first.text == 'a = "<<SECRET_1>>"\nb = "<<SECRET_1>>"\npassword = "<<SECRET_2>>"'
    second = redact(f"error: bad key {key} and AKIAIOSFODNN7EXAMPLE", first)
    assert second.text == "error: bad key <<SECRET_1>> and <<SECRET_3>>"
    assert second.kinds == ["openai_key", "secret_assignment", "aws_access_key"]
    assert restore("use <<SECRET_3>> and <<SECRET_9>>", second) == ("use AKIAIOSFODNN7EXAMPLE and <<SECRET_9>>")


@pytest.mark.parametrize(
    ("offset", "end", "expected"),
    [
        pytest.param(0, False, 0, id="before"),
        pytest.param(4, False, 4, id="at-secret-start"),
        pytest.param(10, False, 4, id="inside-secret-as-start"),
        pytest.param(10, True, 16, id="inside-secret-as-end"),
        pytest.param(41, False, 41 - 37 + 16, id="after"),
    ],
)
def test_offsets_map_into_the_redacted_text(offset: int, end: bool, expected: int) -> None:
    red = redact("k = sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7z\nprint(k)")  # the key spans 4..37
    assert red.text == "k = <<SECRET_1>>\nprint(k)"
    assert red.map_offset(offset, end=end) == expected


def test_audit_log_never_holds_a_secret(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "cloud.jsonl")
    code = 'password = "hunter2hunter2"'
    red = redact(code)
    log.write(
        "gpt-4o",
        "https://bob:hunter2hunter2@git.example.com/app.py",
        len(red.text),
        12,
        5,
        red.kinds,
    )
    log.write("gpt-4o", "file:///w/app.py", 10, 1, 1, [])
    raw = (tmp_path / "audit" / "cloud.jsonl").read_text()
    assert "hunter2hunter2" not in raw
    first, second = (json.loads(line) for line in raw.splitlines())
    assert first["model"] == "gpt-4o" and first["redacted"] == ["secret_assignment"]
    assert first["promptTokens"] == 12 and first["completionTokens"] == 5
    assert first["bytesSent"] == len(red.text)
    assert first["time"] and second["uri"] == "file:///w/app.py"
