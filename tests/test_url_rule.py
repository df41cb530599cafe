"""The one outbound URL rule (`domain/urls.py`) and the pinned HTTP adapter that enforces it on
resolved addresses. Resolvers are injected: nothing here sends traffic beyond loopback."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
from collections.abc import Iterator

import pytest
import requests

from comfyburst.adapters.pinned_http import pinned_connection, pinned_session
from comfyburst.domain.request_policy import RequestPolicy, check_model_url
from comfyburst.domain.urls import Target, UrlRefused, UrlRule, check_address, check_url
from comfyburst.errors import InvalidRequest
from comfyburst_worker._download import DownloadError, HttpDownloader
from comfyburst_worker._hosts import HostPolicy

RULE = UrlRule.of(["civitai.com", "huggingface.co"], ["hf.co"], ["127.0.0.1:8080"])
PUBLIC = Target("https", "civitai.com", 443)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://civitai.com/m", "https://"),
        ("ftp://civitai.com/m", "https://"),
        ("https://user:pw@civitai.com/m", "user info"),
        ("https://civitai.com:8443/m", "port"),
        ("https://127.0.0.1/m", "IP address"),
        ("https://2130706433/m", "IP address"),
        ("https://0x7f.1/m", "IP address"),
        ("https://127.1/m", "IP address"),
        ("https://[::1]/m", "IP address"),
        ("https://localhost/m", "private"),
        ("https://models/m", "private"),  # single label
        ("https://box.localdomain/m", "private"),
        ("https://metadata.google.internal/m", "private"),
        ("https://nas.local/m", "private"),
        ("https://router.home.arpa/m", "private"),
        ("https://evilcivitai.com/m", "not allowed"),
        ("https://cdn-lfs.hf.co/m", "not allowed"),  # a CDN is no source of its own
        ("https://civitai.com/m m", "ASCII"),
        ("http://127.0.0.1:8081/m", "https://"),  # not the listed port
    ],
)
def test_refused_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(UrlRefused, match=why.replace("(", r"\(")):
        check_url(url, RULE)


def test_allowed_urls_and_their_targets() -> None:
    assert check_url("https://cdn.civitai.com/m?x=1", RULE) == Target(
        "https", "cdn.civitai.com", 443
    )
    assert check_url("https://cdn-lfs.hf.co/m", RULE, redirect=True).host == "cdn-lfs.hf.co"
    assert check_url("http://127.0.0.1:8080/m", RULE) == Target("http", "127.0.0.1", 8080, True)


def test_api_and_worker_share_the_rule() -> None:
    """The copies used to disagree (ports, `.localdomain`, single labels): now one answer."""
    policy = RequestPolicy(model_hosts=("example.com",), http_model_hosts=("127.0.0.1:8080",))
    worker = HostPolicy(https_hosts=("example.com",), http_hostports=("127.0.0.1:8080",))
    for url in (
        "https://a.example.com/m",
        "https://a.example.com:444/m",
        "https://x.localdomain/m",
        "https://example/m",
        "http://127.0.0.1:8080/m",
        "https://0177.0.0.1/m",
    ):
        api_ok = worker_ok = True
        try:
            check_model_url(url, policy)
        except InvalidRequest:
            api_ok = False
        try:
            worker.check(url)
        except ValueError:
            worker_ok = False
        assert api_ok == worker_ok, url


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the metadata server
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fd00:ec2::254",  # the other clouds' metadata address, unique-local
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 to the metadata server
        "64:ff9b:1::a00:1",  # NAT64 local-use prefix to 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of the metadata server
        "::ffff:0:7f00:1",  # SIIT's IPv4-translated 127.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(UrlRefused, match="non-public"):
        check_address(address, PUBLIC)


def test_public_addresses_pass_and_test_entries_must_be_loopback() -> None:
    check_address("8.8.8.8", PUBLIC)
    check_address("2606:4700::1111", PUBLIC)
    check_address("64:ff9b::808:808", PUBLIC)  # NAT64 to a public address is judged as it
    test = Target("http", "models.test", 8080, test=True)
    check_address("127.0.0.1", test)
    with pytest.raises(UrlRefused, match="not a loopback"):
        check_address("10.0.0.5", test)


@pytest.mark.parametrize("resolved", [["127.0.0.1"], ["10.0.0.7"], ["8.8.8.8", "169.254.169.254"]])
def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(resolved) -> None:
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return resolved

    session = pinned_session(UrlRule.of(["example.com"]), resolver)
    with pytest.raises(requests.exceptions.InvalidURL, match="non-public"):
        session.get("https://models.example.com/m.bin", timeout=5)
    assert calls == ["models.example.com"]


def test_worker_download_refuses_a_name_resolving_to_a_private_address(tmp_path) -> None:
    downloader = HttpDownloader(
        HostPolicy(https_hosts=("example.com",)),
        retries=0,
        resolver=lambda host, port: ["10.0.0.7"],
    )
    with pytest.raises(DownloadError, match="refused"):
        downloader.fetch("https://models.example.com/m.bin", tmp_path / "m")
    assert not (tmp_path / "m").exists()


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.headers['Host']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain_port() -> Iterator[int]:
    yield from _serve()


def test_connection_goes_to_the_checked_address_with_the_name_as_host(plain_port) -> None:
    """`models.test` resolves nowhere but in our resolver: that the request lands proves the
    connection used the checked address, and only one lookup was made."""
    lookups: list[str] = []
    hostport = f"models.test:{plain_port}"

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    rule = UrlRule.of([], [], [hostport])
    answer = pinned_session(rule, resolver).get(f"http://{hostport}/m.bin?v=2", timeout=5)
    assert answer.text == f"{hostport} /m.bin?v=2"
    conn = pinned_connection(f"http://{hostport}/x", rule, 5, resolver)
    conn.request("GET", "/x", headers={"Host": hostport}, preload_content=False)
    assert conn.getresponse().read() == f"{hostport} /x".encode()
    conn.close()
    assert lookups == ["models.test", "models.test"]


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[int, str]]:
    """A loopback https server whose certificate names `models.test` only (own throwaway CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "models.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("models.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    for port in _serve(tls):
        yield port, str(cert_file)


def test_https_to_the_checked_address_verifies_the_certificate_for_the_name(tls_server) -> None:
    port, ca_file = tls_server
    hostport = f"models.test:{port}"
    session = pinned_session(UrlRule.of([], [], [hostport]), lambda h, p: ["127.0.0.1"])
    assert session.get(f"https://{hostport}/m", verify=ca_file, timeout=5).text == f"{hostport} /m"
    # The same address under a name the certificate does not carry fails verification.
    other = f"other.test:{port}"
    session = pinned_session(UrlRule.of([], [], [other]), lambda h, p: ["127.0.0.1"])
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"https://{other}/m", verify=ca_file, timeout=5)


# --- deployment tokens go only where the deployer scoped them --------------------------------

HF, CIVITAI = "huggingface.co", "civitai.com"


def _token_policy(**scopes: tuple[str, ...]) -> HostPolicy:
    return HostPolicy(
        https_hosts=(HF, CIVITAI),
        redirect_hosts=("hf.co",),
        auth_headers={HF: "Bearer hf", CIVITAI: "Bearer cv"},
        token_scopes={CIVITAI: ("https://civitai.com/api/download/",), **scopes},
    )


def test_tokens_go_only_inside_their_scope() -> None:
    policy = _token_policy()
    assert policy.headers_for("https://huggingface.co/o/r/resolve/main/m") == {
        "Authorization": "Bearer hf"
    }
    assert policy.headers_for("https://civitai.com/api/download/models/1") == {
        "Authorization": "Bearer cv"
    }
    # Outside the scope: another path, a subdomain, plain http, another port, user info.
    assert policy.headers_for("https://civitai.com/api/v1/models/1") == {}
    assert policy.headers_for("https://civitai.com/api/downloadx/1") == {}
    assert policy.headers_for("https://cdn-lfs.huggingface.co/x") == {}
    assert policy.headers_for("http://huggingface.co/x") == {}
    assert policy.headers_for("https://huggingface.co:8443/x") == {}


def test_a_deployer_can_narrow_a_token_to_its_own_repos() -> None:
    policy = _token_policy(**{HF: ("https://huggingface.co/acme/",)})
    assert policy.headers_for("https://huggingface.co/acme/private/resolve/main/m")
    assert policy.headers_for("https://huggingface.co/someone/else/resolve/main/m") == {}


def test_no_token_on_a_redirect_to_another_host_even_inside_a_scope() -> None:
    policy = _token_policy(**{HF: ("https://huggingface.co/", "https://cdn.hf.co/")})
    submitted = "https://huggingface.co/o/r/resolve/main/m"
    assert policy.headers_for("https://cdn.hf.co/blob", submitted) == {}
    # A hop that stays on the submitted host keeps it (Hugging Face redirects within itself).
    assert policy.headers_for("https://huggingface.co/api/resolve-cache/m", submitted)


def test_the_deployment_config_carries_the_scopes_to_the_worker() -> None:
    from comfyburst.settings import FunctionSettings

    settings = FunctionSettings(
        project_id="p",
        jobs_bucket="j",
        outputs_bucket="o",
        signals_bucket="s",
        results_topic="t",
        huggingface_token_scope="https://huggingface.co/acme/,https://huggingface.co/datasets/acme/",
    )
    config = settings.deployment_config()
    assert config.huggingface_token_scope == [
        "https://huggingface.co/acme/",
        "https://huggingface.co/datasets/acme/",
    ]
    assert config.civitai_token_scope == ["https://civitai.com/api/download/"]


def test_the_worker_builds_its_policy_with_the_configured_scopes(tmp_path) -> None:
    from comfyburst.adapters.clock import SystemClock
    from comfyburst.schema import VmRef
    from comfyburst_worker.__main__ import build_services
    from tests._worker_support import local_config, local_settings
    from tests.fakes import InMemoryBlobStore, InMemoryJobStore

    config = local_config(civitai_token_scope=["https://civitai.com/api/download/models/"])
    services = build_services(
        local_settings("http://127.0.0.1:9", tmp_path / "models"),
        config,
        VmRef(name="vm", zone="z"),
        InMemoryJobStore(),
        InMemoryBlobStore(),
        SystemClock(),
        auth_headers={CIVITAI: "Bearer cv"},
    )
    policy = services.cache.downloader.policy
    assert policy.headers_for("https://civitai.com/api/download/models/9")
    assert policy.headers_for("https://civitai.com/api/download/other/9") == {}
