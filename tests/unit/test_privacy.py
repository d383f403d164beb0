"""Privacy: cloud deny rules, secret redaction and restoring, the audit log."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from lsp_server.config import Settings
from lsp_server.privacy import (
    AuditLog,
    PasswordsHidden,
    cloud_denied,
    hide_passwords,
    leaves_machine,
    redact,
    restore,
)

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
PGP = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"
    "\n"
    "lQOYBGTxZx8BCADL7n3kV0w2yq5Vn0bqXz7Jc4o8r1m9Vb2Q6g9pX4x3a1zK8nQw\n"
    "Yb5D2mC7x0fR9sL3tE6uH1jK4nP8qW2eR5tY7uI9oP0aS3dF6gH8jK1lZ4xC7vB\n"
    "=J8mK\n"
    "-----END PGP PRIVATE KEY BLOCK-----"
)
OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBz6d1V5m0Vq8R2b9kT4xWc3nJ7hY2pL6sD1fG8aK0eQAAAAJgH2a6dB9mu\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
AZURE = "Fd0Nhcy/1kGD2VD/eR1UYzaLiA/zNyD7CHLn/xC+1hsYgBds1ghxY5OokvQyx7eNWVQ4vnakJkS1pAWTN3lg8z=="
VAULT = "hvs.Y_uCu3ZR1zTOlUcR64cXQLioDnkHIfxIq2HZt-PlJhx2jIclHkCiHp6bR1IqfEouHgxzNNAL5wIScGebcy8F5n3-YNBDRzr"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


SECRETS = [
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
    # Kinds an attack on the server found missing (issue 20), then more of gitleaks' rules.
    pytest.param(f"KEY = '''\n{PGP}\n'''", PGP, "private_key", id="pgp-private-key-block"),
    pytest.param(OPENSSH, OPENSSH, "private_key", id="openssh-private-key"),
    pytest.param(
        'login(token="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")',
        "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",
        "huggingface_token",
        id="hugging-face",
    ),
    pytest.param(
        "git clone https://oauth2:glpat-PtYgjmUhBel31iEl2hpC@gitlab.com/acme/app.git",
        "glpat-PtYgjmUhBel31iEl2hpC",
        "gitlab_token",
        id="gitlab-pat",
    ),
    pytest.param(
        'sg = SendGridAPIClient("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")',
        "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",
        "sendgrid_key",
        id="sendgrid",
    ),
    pytest.param(
        "//registry.npmjs.org/:_authToken=npm_TAwR4y9ojfljoQoaF1LlqsajAIxNKu8iS2G8",
        "npm_TAwR4y9ojfljoQoaF1LlqsajAIxNKu8iS2G8",
        "npm_token",
        id="npm",
    ),
    pytest.param(
        'curl -H "Authorization: Bearer E40o1C6xc4sohdmM0Lm7exG3lCMqXXQ8agOMTNwn" https://api.example.com/v1',
        "E40o1C6xc4sohdmM0Lm7exG3lCMqXXQ8agOMTNwn",
        "auth_header",
        id="authorization-bearer",
    ),
    pytest.param(
        "Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l2",
        "YWxhZGRpbjpvcGVuc2VzYW1l2",
        "auth_header",
        id="authorization-basic",
    ),
    pytest.param(
        "services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: Pg-s3cret!2024\n",
        "Pg-s3cret!2024",
        "secret_assignment",
        id="yaml-unquoted",
    ),
    pytest.param(
        "    environment:\n      POSTGRES_PASSWORD: example  # docker's own sample\n",
        "example",
        "secret_assignment",
        id="yaml-unquoted-word-under-an-env-key",
    ),
    pytest.param(
        "export API_TOKEN=tok_9f8e7d6c5b4a3f2e\n", "tok_9f8e7d6c5b4a3f2e", "secret_assignment", id="shell-export"
    ),
    pytest.param("db_password=s3cr3t-Pa55\nDEBUG=0\n", "s3cr3t-Pa55", "secret_assignment", id="dotenv"),
    pytest.param(
        "DATABASE_URL=postgres://app:p@ss@w0rd@db.internal:5432/app",
        "p@ss@w0rd",
        "connection_string",
        id="url-password-with-at",
    ),
    pytest.param(
        "password = pypi-AgEIcHlwaS5vcmcg6YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po_799NksnRH9ucAUsdMlHUvTCQC",
        "pypi-AgEIcHlwaS5vcmcg6YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po_799NksnRH9ucAUsdMlHUvTCQC",
        "pypi_token",
        id="pypi",
    ),
    pytest.param(
        "SLACK_HOOK = 'https://hooks.slack.com/services/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'",
        "https://hooks.slack.com/services/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",
        "slack_webhook",
        id="slack-webhook",
    ),
    pytest.param(
        "doctl auth init -t dop_v1_67c76fb008f86bebb2737f6a6f0fb23c6f5da2cec255404e4fb440034d660869",
        "dop_v1_67c76fb008f86bebb2737f6a6f0fb23c6f5da2cec255404e4fb440034d660869",
        "digitalocean_token",
        id="digitalocean",
    ),
    pytest.param(
        'headers={"X-Shopify-Access-Token": "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"}',
        "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",
        "shopify_token",
        id="shopify",
    ),
    pytest.param(
        "databricks:\n  host_token: dapi2ea68ef786e4d3cea27d26934b484e73\n",
        "dapi2ea68ef786e4d3cea27d26934b484e73",
        "databricks_token",
        id="databricks",
    ),
    pytest.param(
        f"vault login {VAULT}",
        VAULT,
        "vault_token",
        id="vault",
    ),
    pytest.param(
        "postman.key = PMAK-cb14028d512c9791e558e08b-aa7196b50ac2f86702824c1c099724caf4",
        "PMAK-cb14028d512c9791e558e08b-aa7196b50ac2f86702824c1c099724caf4",
        "postman_key",
        id="postman",
    ),
    pytest.param(
        "doppler configure set token dp.pt.sUNPjc01T5GOBUSZGi6HWGK10Zb0RLZ5TR9SPofbciO",
        "dp.pt.sUNPjc01T5GOBUSZGi6HWGK10Zb0RLZ5TR9SPofbciO",
        "doppler_token",
        id="doppler",
    ),
    pytest.param(
        "client = LinearClient(lin_api_x9gy1CJdObOIRpFqaDZeV7G5IfQHeVVEqZe2qpUW)",
        "lin_api_x9gy1CJdObOIRpFqaDZeV7G5IfQHeVVEqZe2qpUW",
        "linear_key",
        id="linear",
    ),
    pytest.param(
        "grafana_sa = glsa_noVPDF2yeE6RsXcNOPmeMjvqPVStNKia_f1f836f9",
        "glsa_noVPDF2yeE6RsXcNOPmeMjvqPVStNKia_f1f836f9",
        "grafana_token",
        id="grafana",
    ),
    pytest.param(
        "pulumi login --token pul-9eee3692f09e2e8c662248b483b7ffc050fec94d",
        "pul-9eee3692f09e2e8c662248b483b7ffc050fec94d",
        "pulumi_token",
        id="pulumi",
    ),
    pytest.param(
        "newrelic.api(NRAK-WYUHVAUVZHMASQXEZYEX1RDRGDS)",
        "NRAK-WYUHVAUVZHMASQXEZYEX1RDRGDS",
        "new_relic_key",
        id="new-relic",
    ),
    pytest.param(
        'client = Client("SK478da6bd0c621de49f145fda9988c79f", api_secret)',
        "SK478da6bd0c621de49f145fda9988c79f",
        "twilio_key",
        id="twilio",
    ),
    pytest.param(
        "# created: 2024-05-01\nAGE-SECRET-KEY-1E822YDLWU4UMGV09T4950HSVP6C6DC34RL3HGD930CEUMNPGZM7LQYEAU0\n",
        "AGE-SECRET-KEY-1E822YDLWU4UMGV09T4950HSVP6C6DC34RL3HGD930CEUMNPGZM7LQYEAU0",
        "age_secret_key",
        id="age",
    ),
    pytest.param(
        'bot = Bot("7283461920:AAnCttn6kfaqDeMqG3omjMyXHCabM6JOF8E")',
        "7283461920:AAnCttn6kfaqDeMqG3omjMyXHCabM6JOF8E",
        "telegram_bot_token",
        id="telegram",
    ),
    pytest.param(
        f"conn = 'DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE};EndpointSuffix=x'",
        AZURE,
        "azure_storage_key",
        id="azure-storage",
    ),
    pytest.param(
        "DT_API = dt0c01.X82MUX4B0PZCYC3EDQMEVXRV.CQURTAEBOG43YQ15I5LATJPUU3XF6MZKP0EC498UK1GEQFNG052LOI03P8HSSRRX",
        "dt0c01.X82MUX4B0PZCYC3EDQMEVXRV.CQURTAEBOG43YQ15I5LATJPUU3XF6MZKP0EC498UK1GEQFNG052LOI03P8HSSRRX",
        "dynatrace_token",
        id="dynatrace",
    ),
    pytest.param(
        "square.client(access=sq0atp-GHz4FxFEtKyPiYGFDm7ena)",
        "sq0atp-GHz4FxFEtKyPiYGFDm7ena",
        "square_token",
        id="square",
    ),
]
"""Real-looking secrets (fake values): code holding one, the secret, its kind."""


def test_the_table_covers_at_least_25_kinds() -> None:
    assert len({param.values[2] for param in SECRETS}) >= 25


@pytest.mark.parametrize(("code", "secret", "kind"), SECRETS)
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
        pytest.param('status = "risk-assessment-framework-v2-abcdef"', id="key-prefix-inside-a-word"),
        pytest.param("@dataclass\nclass Config:\n    token: str\n    api_key: str | None = None", id="fields"),
        pytest.param("password=get_password()\nsecret=self.secret", id="unspaced-assignments-of-code"),
        pytest.param("conn = connect(\n    host=host,\n    password=db_password,\n)", id="keyword-argument-line"),
        pytest.param("interface Login {\n  password: string;\n  token: process.env.API_TOKEN,\n}", id="typescript"),
        pytest.param("auth: true\ncredentials: null\n", id="yaml-literals"),
        pytest.param("export API_TOKEN=$(vault read -field=token secret/app)", id="shell-command-substitution"),
        pytest.param("env:\n  API_TOKEN: ${{ secrets.DEPLOY_TOKEN }}\n", id="github-actions-reference"),
        pytest.param("# Authorization: Bearer tokens are defined by RFC 6750", id="bearer-in-prose"),
        pytest.param('headers = {"Authorization": f"Bearer {token}"}', id="bearer-template"),
        pytest.param('path = hf_hub_download(repo_id="gpt2", filename="config.json")', id="hf-function"),
        pytest.param('os.environ["npm_config_cache"] = "/tmp/npm"', id="npm-config-variable"),
        pytest.param("ssh://git@github.com:22/org/repo.git\nhttp://localhost:8080/@scope/pkg", id="at-in-urls"),
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


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:pw@team-llm:8080/v1", "http://alice:***@team-llm:8080/v1"),
        (
            'POST https://a:b@c/d "HTTP/1.1 200" then http://u:p@q',
            'POST https://a:***@c/d "HTTP/1.1 200" then http://u:***@q',
        ),
        (
            "http://alice@team-llm/v1 and http://team-llm:8080/v1",
            "http://alice@team-llm/v1 and http://team-llm:8080/v1",
        ),
        ("postgres://user:p%40ss@db/x", "postgres://user:***@db/x"),
    ],
)
def test_a_urls_password_is_hidden_and_nothing_else(text: str, shown: str) -> None:
    assert hide_passwords(text) == shown


def test_log_lines_hide_passwords_in_their_tracebacks_too() -> None:
    try:
        raise ConnectionError("cannot reach http://alice:pw-s3cret@team-llm/v1")
    except ConnectionError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "to %s", ("http://bob:hunter2@h/",), sys.exc_info())
    line = PasswordsHidden("%(message)s").format(record)
    assert "to http://bob:***@h/" in line and "http://alice:***@team-llm/v1" in line
    assert "hunter2" not in line and "pw-s3cret" not in line
