"""The SSRF guard: hostile URLs refused with their reason, the checked address dialled, a job that fails closed.

No test here sends a packet beyond 127.0.0.0/8. Names resolve through a
resolver of the test's own (``TableResolver``), which maps them to hostile
addresses that the guard judges without connecting; the only servers dialled
listen on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcloud import client
from flowcloud.workers.core.errors import AddressRefused, ProviderConnectionError
from flowcloud.workers.core.ssrf import Guard, numeric_address
from flowcloud.workers.providers import http
from tests.conftest import config_yaml, run_cli

PUBLIC = "93.184.216.34"  # never dialled: only judged


class TableResolver:
    """``socket.getaddrinfo``'s signature over a table of names; each name's answers in turn per call."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int, *args, **kwargs) -> list[tuple]:
        self.calls.append(host)
        rounds = self.table.get(host)
        if rounds is None:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test's table")
        answers = rounds[min(self.calls.count(host), len(rounds)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers]


NAMES = {
    "localhost.test": [["127.0.0.1"]],
    "intranet.test": [["10.20.30.40"]],
    "metadata.test": [["169.254.169.254"]],
    "v6-loopback.test": [["::1"]],
    "mapped.test": [["::ffff:192.168.1.1"]],
    "two-faced.test": [[PUBLIC, "127.0.0.1"]],  # its second answer differs from its first
    "public.test": [[PUBLIC]],
}

# (hostile URL, what the refusal must say); each is judged through the resolver above, none is dialled.
HOSTILE = [
    ("http://127.0.0.1/v1", "loopback address"),
    ("http://127.8.9.10:8080/v1", "loopback address"),
    ("http://10.0.0.1/v1", "private address"),
    ("http://172.16.5.4/v1", "private address"),
    ("http://192.168.0.10/v1", "private address"),
    ("http://100.64.0.1/v1", "carrier-grade NAT"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    ("http://169.254.1.1/v1", "link-local address"),
    ("http://0.0.0.0:8400/v1", "unspecified address"),
    ("http://224.0.0.251/v1", "multicast address"),
    ("http://240.0.0.1/v1", "reserved address"),
    ("http://192.0.2.7/v1", "non-public address"),
    ("http://[::1]/v1", "loopback address"),
    ("http://[::]/v1", "unspecified address"),
    ("http://[fc00::1]/v1", "private address"),
    ("http://[fd12:3456::1]/v1", "private address"),
    ("http://[fe80::1]/v1", "link-local address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata address"),
    ("http://[ff02::1]/v1", "multicast address"),
    ("http://[::ffff:127.0.0.1]/v1", "loopback address (carried in ::ffff:7f00:1)"),
    ("http://[::ffff:a9fe:a9fe]/v1", "cloud metadata address (carried in ::ffff:a9fe:a9fe)"),
    ("http://[::ffff:10.0.0.1]/v1", "private address (carried in"),
    ("http://[64:ff9b::7f00:1]/v1", "loopback address (carried in"),
    ("http://[2002:a9fe:a9fe::1]/v1", "cloud metadata address (carried in"),
    ("http://2130706433/v1", "loopback address"),  # decimal
    ("http://0x7f000001/v1", "loopback address"),  # hex
    ("http://0177.0.0.1/v1", "loopback address"),  # octal
    ("http://0x7f.1/v1", "loopback address"),  # hex, short
    ("http://127.1/v1", "loopback address"),  # short
    ("http://0251.0376.0251.0376/v1", "cloud metadata address"),  # octal 169.254.169.254
    ("http://0xa9fea9fe/v1", "cloud metadata address"),
    ("http://localhost.test:8400/v1", "loopback address"),  # a DNS name resolving to 127.0.0.1
    ("http://intranet.test/v1", "private address"),
    ("http://metadata.test/v1", "cloud metadata address"),
    ("http://v6-loopback.test/v1", "loopback address"),
    ("http://mapped.test/v1", "private address (carried in"),
    ("http://two-faced.test/v1", "loopback address"),
    ("http://user:secret@public.test/v1", "credentials in the URL"),
    ("http://token@public.test/v1", "credentials in the URL"),
    ("ftp://public.test/v1", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://public.test:70/_x", "scheme 'gopher'"),
    ("http:///v1", "no host in the URL"),
    ("http://[::1/v1", "not a URL"),
]


@pytest.mark.parametrize("url, reason", HOSTILE, ids=[url for url, _ in HOSTILE])
def test_a_hostile_url_is_refused_with_its_reason(url, reason):
    guard = Guard("hostile", resolver=TableResolver(NAMES))
    with pytest.raises(AddressRefused) as refused:
        guard.check(url)
    error = refused.value
    assert reason in error.rule
    assert error.retryable is False and error.kind == "address_refused"
    assert str(error).startswith(f"hostile: refused to connect to {error.host}")
    assert "secret" not in str(error) and "token" not in str(error)
    if error.address is not None:  # the address the rule was judged on, named in the message
        assert error.address in str(error) and ipaddress.ip_address(error.address)


def test_the_table_covers_at_least_thirty_urls():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("url, address", [
    ("https://public.test/v1", PUBLIC),
    ("http://8.8.8.8/v1", "8.8.8.8"),
    ("https://[2606:4700:4700::1111]/v1", "2606:4700:4700::1111"),
    ("https://[64:ff9b::808:808]/v1", "64:ff9b::808:808"),  # NAT64 of a public address
])
def test_a_public_address_is_accepted(url, address):
    destination = Guard("public", resolver=TableResolver(NAMES)).check(url)
    assert destination.address == ipaddress.ip_address(address)
    assert destination.host == urlsplit(url).hostname


@pytest.mark.parametrize("url", ["http://127.0.0.1/v1", "http://0x7f000001/v1", "http://10.1.1.1/v1",
                                 "http://[::ffff:192.168.0.1]/v1", "http://100.100.1.1/v1", "http://localhost.test/v1"])
def test_allow_private_lets_loopback_private_and_cgnat_through(url):
    assert Guard("local", allow_private=True, resolver=TableResolver(NAMES)).check(url)


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://metadata.test/", "http://[fe80::1]/",
                                 "http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:169.254.169.254]/"])
def test_allow_private_never_lets_metadata_link_local_or_unspecified_through(url):
    with pytest.raises(AddressRefused):
        Guard("local", allow_private=True, resolver=TableResolver(NAMES)).check(url)


class Recorder(BaseHTTPRequestHandler):
    """Answers every request as ``reply`` says, recording the path and the Host header."""

    protocol_version = "HTTP/1.1"  # keep-alive: a pooled connection serves several requests
    seen: list[tuple[str, str]]
    reply: tuple[int, dict[str, str]]

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path, self.headers["Host"]))
        status, headers = self.reply
        body = json.dumps({"choices": [{"message": {"content": "ok"}}]}).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    servers = []

    def start(status: int = 200, headers: dict[str, str] | None = None,
              tls: ssl.SSLContext | None = None) -> tuple[int, list]:
        seen: list[tuple[str, str]] = []
        handler = type("Handler", (Recorder,), {"seen": seen, "reply": (status, headers or {})})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port, seen

    yield start
    for server in servers:
        server.shutdown()


def post(url: str, guard: Guard) -> http.Reply:
    return http.send(http.make_pool(1, url, guard), "POST", url, provider=guard.name, headers={},
                     timeout=(1, 1), body=b"{}")


@pytest.mark.parametrize("host", ["127.0.0.1", "redirector.test"])
def test_a_redirect_to_the_metadata_address_is_refused_not_followed(serve, host):
    port, seen = serve(302, {"Location": "http://169.254.169.254/latest/meta-data/iam/"})
    guard = Guard("local", allow_private=True, resolver=TableResolver({"redirector.test": [["127.0.0.1"]]}))
    with pytest.raises(AddressRefused, match="answered 302, a redirect to 169.254.169.254: redirects are not followed"):
        post(f"http://{host}:{port}/v1/chat/completions", guard)
    assert seen == [("/v1/chat/completions", f"{host}:{port}")]  # asked once; the redirect never followed


def test_the_connection_goes_to_the_address_that_was_checked_and_keeps_the_name(serve):
    port, seen = serve()
    # First answer loopback (allowed here), every later one the metadata address: a rebinding name.
    resolver = TableResolver({"rebinding.test": [["127.0.0.1"], ["169.254.169.254"]]})
    guard = Guard("local", allow_private=True, resolver=resolver)
    pool = http.make_pool(1, "http://rebinding.test/", guard)
    url = f"http://rebinding.test:{port}/v1/chat/completions"
    for _ in range(3):  # one connection, kept alive: judged once, dialled at the judged address
        http.send(pool, "POST", url, provider="local", headers={}, timeout=(1, 1), body=b"{}")
    assert resolver.calls == ["rebinding.test"]
    assert seen == [("/v1/chat/completions", f"rebinding.test:{port}")] * 3  # the Host header keeps the name
    pool.clear()  # a new connection asks again, and its answer is judged before it is dialled
    with pytest.raises(AddressRefused, match=r"rebinding.test \(169.254.169.254\): cloud metadata address"):
        http.send(pool, "POST", url, provider="local", headers={}, timeout=(1, 1), body=b"{}")
    assert len(seen) == 3


def test_over_tls_the_socket_goes_to_the_judged_address_and_sni_and_the_certificate_keep_the_name(
        serve, tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=tls.test", "-addext", "subjectAltName=DNS:tls.test"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    port, seen = serve(tls=context)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # make_pool's CA bundle: this certificate alone
    guard = Guard("tls", allow_private=True, resolver=TableResolver({"tls.test": [["127.0.0.1"]]}))

    assert post(f"https://tls.test:{port}/v1/chat/completions", guard).status == 200
    assert names == ["tls.test"] and seen == [("/v1/chat/completions", f"tls.test:{port}")]
    with pytest.raises(ProviderConnectionError, match="TLS failed"):  # the certificate names tls.test only
        post(f"https://127.0.0.1:{port}/v1/chat/completions", guard)


def test_a_name_answering_twice_is_dialled_at_the_next_judged_address_when_the_first_is_closed(serve):
    port, seen = serve()  # listens on 127.0.0.1 only: nothing answers at 127.0.0.2
    guard = Guard("local", allow_private=True, resolver=TableResolver({"twice.test": [["127.0.0.2", "127.0.0.1"]]}))
    assert post(f"http://twice.test:{port}/v1/chat/completions", guard).status == 200
    assert seen == [("/v1/chat/completions", f"twice.test:{port}")]


def test_a_refused_address_is_refused_before_anything_is_sent(serve):
    port, seen = serve()
    with pytest.raises(AddressRefused, match=r"0x7f000001 \(127.0.0.1\): loopback address"):
        post(f"http://0x7f000001:{port}/v1/chat/completions", Guard("sim"))
    assert seen == []
    assert post(f"http://0x7f000001:{port}/v1/chat/completions", Guard("sim", allow_private=True)).status == 200
    assert seen == [("/v1/chat/completions", f"0x7f000001:{port}")]


def test_a_name_that_does_not_resolve_is_a_connection_error_not_a_refusal():
    with pytest.raises(ProviderConnectionError):
        post("http://nowhere.test/v1", Guard("sim", resolver=TableResolver({})))


def test_a_webhook_on_loopback_is_refused_unless_its_sink_allows_private(serve, caplog):
    from flowcloud.workers.alerts.sinks import Notice, deliver
    from flowcloud.workers.core.config_sections import AlertSink

    port, seen = serve()
    url = f"http://127.0.0.1:{port}/hook/secret-token"
    notice = Notice("backlog", "firing", "12 waiting")
    with caplog.at_level("WARNING"):
        assert deliver([AlertSink(kind="webhook", url=url)], [notice]) == 1
    assert seen == []
    assert "alert webhook: refused to connect to 127.0.0.1: loopback address" in caplog.text
    assert "secret-token" not in caplog.text
    assert deliver([AlertSink(kind="webhook", url=url, allow_private=True)], [notice]) == 0
    assert seen == [("/hook/secret-token", f"127.0.0.1:{port}")]


# -- end to end: a worker, the simulator, a provider whose base_url hides 127.0.0.1 in hex


def hex_config(tmp_path, redis_server, simulator, allow_private: bool):
    port = urlsplit(simulator.url).port
    text = config_yaml(redis_server.url, f"http://0x7f000001:{port}/v1")
    if not allow_private:
        text = text.replace("    allow_private: true\n", "")
    path = tmp_path / f"hex-{allow_private}.yaml"
    path.write_text(text)
    return {"FLOWCLOUD_CONFIG": str(path)}


def test_a_job_to_a_hex_loopback_base_url_fails_with_the_guards_error_and_sends_nothing(
        tmp_path, redis_server, simulator, start_worker, tag):
    refusing = start_worker(concurrency=4, env=hex_config(tmp_path, redis_server, simulator, allow_private=False))
    record = client.result(client.submit(f"{tag} hello", model="gpt-4o-mini"), timeout=60)
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["error"]["kind"] == "address_refused" and record["error"]["retryable"] is False
    assert record["error"]["host"] == "0x7f000001" and record["error"]["address"] == "127.0.0.1"
    assert "loopback address" in record["error"]["message"]
    assert simulator.requests_log(tag) == []
    refusing.stop()

    start_worker(concurrency=4, env=hex_config(tmp_path, redis_server, simulator, allow_private=True))
    record = client.result(client.submit(f"{tag} again", model="gpt-4o-mini"), timeout=60)
    assert record["status"] == "succeeded"
    assert len(simulator.requests_log(tag)) == 1


# -- config check names the field of a URL the guard refuses


def test_config_check_names_a_refused_provider_url_and_webhook(tmp_path, redis_server, simulator):
    text = config_yaml(redis_server.url, "http://0x7f000001:8400/v1").replace("    allow_private: true\n", "", 1)
    path = tmp_path / "refused.yaml"
    path.write_text(text + "alerts:\n  sinks: [{kind: webhook, url: 'http://169.254.169.254/hook/secret-token'}]\n")
    checked = run_cli("config", "check", env={"FLOWCLOUD_CONFIG": str(path)})
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "providers.0.base_url: sim: refused to connect to 0x7f000001 (127.0.0.1): loopback address" in checked.stdout
    assert "providers.1.base_url" not in checked.stdout  # the second provider has allow_private
    assert "alerts.sinks.0.url: alert webhook: refused to connect to 169.254.169.254: cloud metadata" in checked.stdout
    assert "secret-token" not in checked.stdout.split("# refused")[-1]


# -- property-based: whatever the URL, the guard answers with a destination or a classified refusal


def any_resolver(host: str, port: int, *args, **kwargs) -> list[tuple]:
    """Every name resolves, to an address picked from the name: hostile or public alike."""
    pool = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:10.0.0.1", PUBLIC, "2606:4700::1"]
    address = pool[sum(host.encode("utf-8", "surrogatepass")) % len(pool)]
    return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


hosts = st.one_of(
    st.from_regex(r"[a-z0-9.-]{0,30}", fullmatch=True),
    st.integers(0, 2**32 - 1).map(str),
    st.integers(0, 2**32 - 1).map(hex),
    st.ip_addresses().map(lambda a: f"[{a}]" if a.version == 6 else str(a)),
    st.text(max_size=30),
)
urls = st.one_of(
    st.builds(lambda scheme, user, host, port, path: f"{scheme}://{user}{host}{port}{path}",
              st.sampled_from(["http", "https", "HTTP", "ftp", "file", "", "javascript"]),
              st.sampled_from(["", "user@", "user:pw@", ":@"]), hosts,
              st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}"), st.text(max_size=5)),
              st.sampled_from(["", "/", "/v1", "/a?b=c#d"])),
    st.text(max_size=60),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(urls, st.booleans())
def test_the_guard_never_crashes_and_accepts_only_what_its_rules_allow(url, allow_private):
    guard = Guard("fuzz", allow_private=allow_private, resolver=any_resolver)
    try:
        destination = guard.check(url)
    except AddressRefused as refused:
        assert refused.rule and refused.kind == "address_refused"
        return
    assert urlsplit(url).scheme.lower() in ("http", "https") and "@" not in urlsplit(url).netloc
    address = destination.address
    dialled = getattr(address, "ipv4_mapped", None) or address
    local = dialled.is_loopback or dialled.is_private or dialled in ipaddress.ip_network("100.64.0.0/10")
    assert dialled.is_global or (allow_private and local), (url, destination)
    assert not (dialled.is_link_local or dialled.is_unspecified or dialled.is_multicast), (url, destination)


IPV4_PART = r"(0x[0-9a-fA-F]{1,8}|0[0-7]{0,11}|[1-9][0-9]{0,9})"


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.from_regex(rf"{IPV4_PART}(\.{IPV4_PART}){{0,3}}", fullmatch=True),
                 st.ip_addresses().map(str), st.from_regex(r"[0-9a-fx.:]{1,20}", fullmatch=True)))
def test_a_numeric_host_is_read_as_the_c_resolver_reads_it(host):
    # AI_NUMERICHOST: the C library parses the literal and asks no name server.
    try:
        answers = socket.getaddrinfo(host, 0, flags=socket.AI_NUMERICHOST, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):  # UnicodeError: an empty label, which no name has
        return  # not an address to the C resolver: a name, judged by its resolved addresses
    assert numeric_address(host) == [ipaddress.ip_address(answers[0][4][0])]
