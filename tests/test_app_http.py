"""The real `edge-dse ui` answers only its own page (DNS rebinding, cross-site requests, uploads).

A web page elsewhere can point a name it controls at 127.0.0.1 and drive the UI from the user's
browser: its requests reach the loopback socket carrying the attacker's Host and Origin. Raw
HTTP requests carrying those headers are sent to every route here, and must be refused with
nothing done; the same requests addressed to 127.0.0.1 work (so the refusal is the guard's).
"""

from __future__ import annotations

import http.client
import json
import os
import re
from pathlib import Path

import pytest
from conftest import run_cli, running_ui, shipped_model_dir, write_topic

pytest.importorskip("gradio")

EVIL = "evil.example"


def call(port: int, method: str, path: str, host: str, origin: str | None = None, body=None,
         headers: dict | None = None) -> tuple[int, str]:
    """(status, body) of one raw HTTP request to 127.0.0.1:port with exactly these headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    sent = {"Host": host, **(headers or {})}
    if origin is not None:
        sent["Origin"] = origin
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def api(port: int, name: str, data: list) -> str:
    """Run a named API call the way gradio_client does (addressed to 127.0.0.1): its result."""
    host = f"127.0.0.1:{port}"
    status, text = call(port, "POST", f"/gradio_api/call/{name}", host, body={"data": data})
    assert status == 200, text
    status, stream = call(port, "GET", f"/gradio_api/call/{name}/{json.loads(text)['event_id']}", host)
    assert status == 200 and "event: complete" in stream, stream
    return stream


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    docs, home = root / "docs", root / "home"
    docs.mkdir()
    home.mkdir()
    write_topic(docs, "bread", ".md")
    (home / "secret-notes.txt").write_text("the picker must not list this to another site\n")
    with running_ui(root / "lib", "--model", str(shipped_model_dir()), home=home) as (_, port, _):
        yield port, root


def routes(port: int, docs: Path, picker: int) -> list[tuple[str, str, object]]:
    """Every kind of route: the page, its config, each API action (the state-changing ones
    first), Gradio's queue, component functions (the folder picker), files and uploads."""
    bread = str(docs / "bread.md")
    return [
        ("POST", "/gradio_api/call/add", {"data": [str(docs)]}),
        ("POST", "/gradio_api/call/sync", {"data": []}),
        ("POST", "/gradio_api/call/remove", {"data": [str(docs)]}),
        ("POST", "/gradio_api/run/remove", {"data": [str(docs)]}),
        ("POST", "/gradio_api/queue/join", {"data": [str(docs)], "fn_index": 0, "session_hash": "s1"}),
        ("POST", "/gradio_api/component_server",
         {"component_id": picker, "fn_name": "ls", "data": [], "session_hash": "s1"}),
        ("POST", "/gradio_api/upload", {"files": []}),
        ("POST", "/gradio_api/call/search", {"data": ["sourdough", 5, "keyword", False]}),
        ("POST", "/gradio_api/call/open", {"data": [bread, 0, 50]}),
        ("GET", "/", None),
        ("GET", "/config", None),
        ("GET", "/gradio_api/info", None),
        ("GET", "/gradio_api/queue/data?session_hash=s1", None),
        ("GET", f"/gradio_api/file={bread}", None),
    ]


def picker_id(port: int) -> int:
    status, text = call(port, "GET", "/config", f"127.0.0.1:{port}")
    assert status == 200
    return next(c["id"] for c in json.loads(text)["components"] if c.get("props", {}).get("elem_id") == "browse")


def assert_all_refused(port: int, docs: Path) -> None:
    for method, path, body in routes(port, docs, picker_id(port)):
        rebinding = call(port, method, path, f"{EVIL}:{port}", f"http://{EVIL}:{port}", body)
        wrong_port = call(port, method, path, f"127.0.0.1:{port + 1}", None, body)
        no_port = call(port, method, path, "localhost", None, body)
        cross_site = call(port, method, path, f"127.0.0.1:{port}", f"http://{EVIL}", body)
        other_local_port = call(port, method, path, f"localhost:{port}", f"http://localhost:{port + 1}", body)
        null_origin = call(port, method, path, f"127.0.0.1:{port}", "null", body)
        for status, text in (rebinding, wrong_port, no_port):
            assert status == 400 and text.startswith("refused: Host"), (method, path, status, text)
        for status, text in (cross_site, other_local_port, null_origin):
            assert status == 403 and text.startswith("refused: a request from another site"), (method, path, status, text)
        assert "secret-notes" not in rebinding[1] + cross_site[1]


def test_foreign_host_or_origin_is_refused_on_every_route_and_nothing_is_done(ui):
    port, root = ui
    docs, lib = root / "docs", root / "lib"
    assert_all_refused(port, docs)
    assert not (lib / "catalog.db").exists()  # no add went through: no library was even created
    # The same routes answer their own page: the refusals above were the guard's, not errors.
    host, origin = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    assert call(port, "GET", "/", host, origin)[0] == 200
    assert "secret-notes.txt" in call(port, "POST", "/gradio_api/component_server", f"localhost:{port}",
                                      f"http://localhost:{port}", {"component_id": picker_id(port), "fn_name": "ls",
                                                                   "data": [], "session_hash": "s1"})[1]
    assert f"added {docs}" in api(port, "add", [str(docs)])
    # With a folder in the library, search, open and remove are refused all the same.
    assert_all_refused(port, docs)
    assert "sourdough" in api(port, "search", ["sourdough", 5, "keyword", False]).lower()
    assert "1 files seen" in api(port, "sync", [])  # the folder is still there, untouched


def test_uploads_are_refused_and_nothing_is_stored(ui, tmp_path):
    port, _ = ui
    gradio_tmp = Path(os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))
    before = set(gradio_tmp.rglob("*")) if gradio_tmp.exists() else set()
    form = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 1_000_000 + b"\r\n--b--\r\n")
    status, text = call(port, "POST", "/gradio_api/upload", f"127.0.0.1:{port}", body=form,
                        headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 403 and "no uploads" in text
    after = set(gradio_tmp.rglob("*")) if gradio_tmp.exists() else set()
    assert not [p for p in after - before if p.name == "big.bin"]


def test_allow_remote_answers_only_the_hosts_the_user_named(tmp_path):
    with running_ui(tmp_path / "lib", "--allow-remote", "--trusted-host", "edse.test",
                    "--model", str(shipped_model_dir())) as (_, port, _):
        assert call(port, "GET", "/config", f"edse.test:{port}", f"http://edse.test:{port}")[0] == 200
        assert call(port, "GET", "/config", f"127.0.0.1:{port}")[0] == 200
        assert call(port, "GET", "/config", f"{EVIL}:{port}")[0] == 400
        assert call(port, "GET", "/config", f"edse.test:{port}", f"http://{EVIL}:{port}")[0] == 403


def test_trusted_host_without_allow_remote_is_refused_in_one_line(tmp_path):
    result = run_cli("ui", str(tmp_path / "lib"), "--trusted-host", "edse.test", "--port", "9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--trusted-host edse.test" in result.stderr and "--allow-remote" in result.stderr


def test_searches_print_no_warning(tmp_path):
    """Searches through the real app print no warning, with Python showing every kind (as
    `python -W default` or dev mode does): gradio's queue once summarised every past event in pandas
    after each one, which printed pandas 3 deprecations and made any warning come back on every
    request (app.GRADIO_QUIET_QUEUE). ResourceWarnings are not counted: gradio leaves a file and
    event loops for the garbage collector (at start-up, and in its tqdm hook during an add)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    write_topic(docs, "bread", ".md")
    log = tmp_path / "ui.log"
    with running_ui(tmp_path / "lib", "--model", str(shipped_model_dir()), log_path=log,
                    env={"PYTHONWARNINGS": "default"}) as (_, port, _):
        assert f"added {docs}" in api(port, "add", [str(docs)])
        for mode in ("vector", "keyword", "hybrid", "vector", "keyword"):
            assert "sourdough" in api(port, "search", ["sourdough bread", 3, mode, False]).lower()
    warned = re.findall(r"^\S+:\d+: (\w+): (.*)$", log.read_text(), re.M)
    assert not [w for w in warned if w[0] != "ResourceWarning"], warned
