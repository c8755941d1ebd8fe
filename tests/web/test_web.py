"""The HTTP API of `lookalike serve`, against a real server on 127.0.0.1 (ephemeral port),
on small collections built with the fake backbone."""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.cli import build_parser, main
from lookalike.config import get_preset
from lookalike.indexing.indexer import Indexer
from lookalike.store.collection import Collection
from lookalike.vectors import l2_normalize
from lookalike.web import Gallery, GalleryServer, RequestError, WebLimits
from lookalike.web.server import ServerStartError

COLOURS = {"red": (200, 30, 40), "green": (40, 180, 60), "blue": (30, 60, 200)}
PER_COLOUR = 8
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
UPLOAD_LIMIT = 64 * 1024


DEFAULT_HEAD_WEIGHT = 4 / (4 + 0.2**2)


def draw(path: Path, colour, seed: int, size=(48, 64)) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.empty((size[1], size[0], 3), np.uint8)
    pixels[:] = colour
    noise = rng.integers(-40, 40, size=pixels.shape)
    pixels = np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def fake_config(preset: str = "default"):
    config = get_preset(preset).with_options(backbone="fake", detector="none")
    # Without the dense final PCA (which mixes the views), the fused cosine is exactly the
    # slider's score at the default head weight: the tests below check that identity.
    return dataclasses.replace(config, fusion=dataclasses.replace(config.fusion, out_dim=None))


def build_collection(base: Path, preset: str = "default") -> tuple[Path, Path]:
    """(indexed root, collection): three colour folders, plus an image linked from outside."""
    root = base / "photos"
    for n, (name, colour) in enumerate(COLOURS.items()):
        for i in range(PER_COLOUR):
            draw(root / name / f"{i}.png", colour, seed=100 * n + i)
    outside = base / "outside"
    draw(outside / "secret.png", (120, 120, 120), seed=999)
    (outside / "secret.txt").write_bytes(SECRET)
    (root / "linked").mkdir()
    (root / "linked" / "outside.png").symlink_to(outside / "secret.png")
    coll = base / "coll"
    Indexer(root, coll, fake_config(preset), progress=False).run()
    return root, coll


class Running:
    """A GalleryServer on an ephemeral loopback port, in a background thread."""

    def __init__(self, gallery: Gallery) -> None:
        self.server = GalleryServer(gallery, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def request(self, method, path, body=None, headers=None, conn=None):
        """(status, headers, body bytes); JSON bodies decoded."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            if own:
                conn.close()
        if data and resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, resp, json.loads(data)
        return resp.status, resp, data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("web")
    root, coll = build_collection(base)
    evaluation = {"detection_rate": 0.0, "presets": [{"preset": "default", "k": 4}]}
    (coll / "evaluation.json").write_text(json.dumps(evaluation))
    return base, root, coll


@pytest.fixture(scope="module")
def served(built):
    _, _, coll = built
    gallery = Gallery(coll, labels="folders", limits=WebLimits(max_upload_bytes=UPLOAD_LIMIT))
    running = Running(gallery)
    yield running
    running.stop()


def png_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


# -- info, listing ------------------------------------------------------------------------
def test_info_describes_the_collection(served):
    status, _, info = served.get("/api/info")
    assert status == 200
    assert info["count"] == 3 * PER_COLOUR + 1
    assert info["preset"] == "default" and set(info["views"]) == {"head", "whole"}
    # default preset: head blocks weigh 1 + 1, whole blocks 0.5 + 0.5 (squared: 2 vs 0.5)
    # default preset: four head blocks of weight 1, one whole block of weight 0.2
    assert info["default_head_weight"] == pytest.approx(DEFAULT_HEAD_WEIGHT)
    assert info["labels"] == {
        "character": {"blue": PER_COLOUR, "green": PER_COLOUR, "linked": 1, "red": PER_COLOUR}
    }
    assert info["has_evaluation"] is True


def test_items_are_paged_in_path_order_and_filtered_by_label(served):
    status, _, page1 = served.get("/api/items?offset=0&limit=10")
    _, _, page2 = served.get("/api/items?offset=10&limit=10")
    _, _, rest = served.get("/api/items?offset=20&limit=10")
    assert status == 200 and page1["total"] == 3 * PER_COLOUR + 1
    paths = [i["path"] for p in (page1, page2, rest) for i in p["items"]]
    assert len(paths) == page1["total"] and paths == sorted(paths)
    _, _, reds = served.get("/api/items?limit=100&label=character:red")
    assert reds["total"] == PER_COLOUR
    assert all(i["path"].startswith("red/") for i in reds["items"])
    assert all(i["labels"] == {"character": "red"} for i in reds["items"])
    status, _, item = served.get(f"/api/items/{reds['items'][0]['id']}")
    assert status == 200 and item == reds["items"][0]


# -- queries and exact re-ranking ------------------------------------------------------------
def reference_view_vectors(coll: Path) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """ids, per-view unit vectors and fused vectors, recomputed here with plain numpy."""
    gen = Collection.open(coll).require_generation()
    views = {}
    for view in ("head", "whole"):
        blocks = [b for b in fake_config().blocks if b.view == view]
        parts = [l2_normalize(np.asarray(gen.block(b.key))) * b.weight for b in blocks]
        views[view] = l2_normalize(np.concatenate(parts, axis=1))
    return gen.ids, views, np.asarray(gen.fused())


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_head_weight_reranks_exactly_like_brute_force(served, built, weight):
    _, _, coll = built
    ids, views, _ = reference_view_vectors(coll)
    row = 3
    query_id = int(ids[row])
    n = len(ids)
    url = f"/api/query?id={query_id}&k=6&pool={n}&head_weight={weight}"
    status, _, answer = served.get(url)
    assert status == 200 and answer["score"] == "head_weight"
    scores = weight * (views["head"] @ views["head"][row]) + (1 - weight) * (
        views["whole"] @ views["whole"][row]
    )
    scores[row] = -np.inf
    expected = ids[np.lexsort((ids, -scores))[:6]]
    assert [r["id"] for r in answer["results"]] == expected.tolist()
    got = np.array([r["score"] for r in answer["results"]])
    assert got == pytest.approx(np.sort(scores)[::-1][:6], abs=1e-5)


def test_the_default_head_weight_reproduces_the_fused_ranking(served, built):
    _, _, coll = built
    ids, _, fused = reference_view_vectors(coll)
    _, _, plain = served.get(f"/api/query?id={int(ids[0])}&k=8")
    query = f"/api/query?id={int(ids[0])}&k=8&head_weight={DEFAULT_HEAD_WEIGHT}"
    _, _, weighted = served.get(query)
    assert plain["score"] == "fused" and plain["head_weight"] is None
    assert [r["id"] for r in plain["results"]] == [r["id"] for r in weighted["results"]]
    for r in weighted["results"]:
        assert r["score"] == pytest.approx(r["scores"]["fused"], abs=1e-5)
    exact = fused @ fused[0]
    assert plain["results"][0]["score"] == pytest.approx(np.sort(exact)[-2], abs=1e-5)


def test_query_by_path_equals_query_by_id_and_never_returns_itself(served):
    _, _, item = served.get("/api/query?path=green/2.png&k=5")
    _, _, by_id = served.get(f"/api/query?id={item['query']['id']}&k=5")
    assert item["query"]["path"] == "green/2.png"
    assert item["results"] == by_id["results"]
    assert len(item["results"]) == 5
    assert item["query"]["id"] not in [r["id"] for r in item["results"]]
    assert all(r["path"].startswith("green/") for r in item["results"][:3])
    scores = [r["score"] for r in item["results"]]
    assert scores == sorted(scores, reverse=True)


def test_upload_query_finds_the_same_as_the_indexed_file(served, built):
    _, root, _ = built
    data = png_bytes(root / "blue" / "4.png")
    status, _, answer = served.request(
        "POST", "/api/query?k=5", body=data, headers={"Content-Type": "image/png"}
    )
    assert status == 200, answer
    _, _, by_path = served.get("/api/query?path=blue/4.png&k=5")
    assert answer["query"]["kind"] == "upload"
    assert answer["query"]["same_as"] == [by_path["query"]["id"]]
    # The same results: the file's blocks are computed anew, in float32, the stored row's
    # are float16, so scores differ in the fourth decimal (and the fake backbone's are all
    # within 2e-4 of each other: ties may swap).
    uploaded = {r["id"]: r["score"] for r in answer["results"]}
    stored = {r["id"]: r["score"] for r in by_path["results"]}
    assert uploaded.keys() == stored.keys()
    assert all(abs(uploaded[i] - stored[i]) < 1e-3 for i in stored)
    assert answer["query"]["width"] == 48 and answer["query"]["height"] == 64


def test_upload_of_a_new_image_as_jpeg(served):
    buf = io.BytesIO()
    Image.new("RGB", (40, 50), COLOURS["red"]).save(buf, "JPEG")
    status, _, answer = served.request(
        "POST", "/api/query?k=3", body=buf.getvalue(), headers={"Content-Type": "image/jpeg"}
    )
    assert status == 200 and answer["query"]["same_as"] == []
    assert [r["path"].split("/")[0] for r in answer["results"]] == ["red"] * 3


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [
        (b"x" * (UPLOAD_LIMIT + 1), "image/png", 413, "limit"),
        (b"GIF89a", "text/html", 415, "upload type"),
        (b"<html>hello</html>", "image/png", 400, "not an image"),
        (b"", "image/png", 400, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", 400, "upload"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(served, body, ctype, status, words):
    got, _, answer = served.request(
        "POST", "/api/query", body=body, headers={"Content-Type": ctype}
    )
    assert got == status
    assert words in answer["error"]


def test_upload_without_a_length_is_refused(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: image/png\r\n\r\n"
            % served.port
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411")


# -- bad input: always a 4xx with a message -------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/query", 400),
        ("/api/query?id=1&path=red/1.png", 400),
        ("/api/query?id=abc", 400),
        ("/api/query?id=99999", 404),
        ("/api/query?path=red/99.png", 404),
        ("/api/query?id=1&k=0", 400),
        ("/api/query?id=1&k=100000", 400),
        ("/api/query?id=1&k=1&k=2", 400),
        ("/api/query?id=1&head_weight=nan", 400),
        ("/api/query?id=1&head_weight=1.5", 400),
        ("/api/query?id=1&head_weight=heavy", 400),
        ("/api/query?id=1&pool=0", 400),
        ("/api/items?limit=0", 400),
        ("/api/items?offset=-1", 400),
        ("/api/items?label=character", 400),
        ("/api/items?label=mood:happy", 400),
        ("/api/items/abc", 400),
        ("/api/items/424242", 404),
        ("/api/nothing", 404),
        ("/static/../server.py", 404),
        ("/static/", 404),
        ("/thumbs/red/1.png?size=99", 400),
    ],
)
def test_bad_requests_answer_4xx_json(served, path, status):
    got, resp, answer = served.get(path)
    assert got == status
    assert resp.getheader("Content-Type") == "application/json"
    assert answer["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("PUT", "/api/info", 405), ("DELETE", "/", 405), ("POST", "/api/items", 405)],
)
def test_other_methods_are_refused(served, method, path, status):
    got, _, answer = served.request(method, path)
    assert got == status and "not allowed" in answer["error"]


def test_head_is_refused_without_a_body(served):
    status, resp, body = served.request("HEAD", "/api/info")
    assert status == 405 and int(resp.getheader("Content-Length")) > 0 and body == b""


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["/api/query", "/api/items", "/thumbs/red/1.png", "/files/red/1.png"]),
    st.lists(
        st.tuples(
            st.sampled_from(["id", "path", "k", "pool", "head_weight", "offset", "limit", "label"]),
            st.text(max_size=12),
        ),
        max_size=4,
    ),
)
def test_no_query_string_makes_a_server_error(served, route, pairs):
    from urllib.parse import urlencode

    status, _, _ = served.get(f"{route}?{urlencode(pairs)}")
    assert status < 500


# -- files: only indexed files, only inside the root -------------------------------------------
def test_files_and_thumbnails_of_indexed_images(served, built):
    _, root, _ = built
    status, resp, data = served.get("/files/red/3.png")
    assert status == 200 and data == (root / "red" / "3.png").read_bytes()
    assert resp.getheader("Content-Type") == "image/png"
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    status, resp, data = served.get("/thumbs/red/3.png?size=128")
    assert status == 200 and resp.getheader("Content-Type") == "image/jpeg"
    assert max(Image.open(io.BytesIO(data)).size) <= 128


@pytest.mark.parametrize(
    "path",
    [
        "/files/../outside/secret.png",
        "/files/red/../../outside/secret.txt",
        "/files/%2e%2e/outside/secret.txt",
        "/files/%2E%2E%2Foutside%2Fsecret.txt",
        "/files/red%2f..%2f..%2foutside%2fsecret.png",
        "/files/..%5coutside%5csecret.txt",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        "/files/red/%00.png",
        "/files/red/./3.png",
        "/files/red",
        "/files/red/",
        "/files/",
        "/files/%ff%fe",
        "/files/linked/outside.png",
        "/thumbs/linked/outside.png",
        "/thumbs/%2e%2e/outside/secret.png",
    ],
)
def test_traversal_links_out_and_folders_are_refused(served, built, path):
    base, _, _ = built
    status, _, answer = served.get(path)
    assert status in (400, 403, 404)
    assert isinstance(answer, dict) and answer["error"]
    assert SECRET.decode() not in json.dumps(answer)
    assert (base / "outside" / "secret.png").read_bytes() not in json.dumps(answer).encode()


def test_a_link_to_outside_the_root_is_refused_as_outside(served):
    status, _, answer = served.get("/files/linked/outside.png")
    assert status == 403 and "outside the indexed folder" in answer["error"]


def test_requests_for_another_host_name_are_refused(served):
    status, _, answer = served.get("/api/info", headers={"Host": "evil.example:80"})
    assert status == 400 and "localhost" in answer["error"]
    status, _, _ = served.get("/api/info", headers={"Host": f"localhost:{served.port}"})
    assert status == 200


# -- page, OpenAPI, evaluation --------------------------------------------------------------------
def test_the_page_and_its_assets_come_from_the_package(served):
    status, resp, html = served.get("/")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/html")
    assert b'src="/static/app.js"' in html and b"http" not in html.split(b"<body>")[0]
    assert "default-src 'self'" in resp.getheader("Content-Security-Policy")
    for name in ("app.js", "style.css", "favicon.svg"):
        assert served.get(f"/static/{name}")[0] == 200


def test_every_documented_get_path_answers(served):
    status, _, spec = served.get("/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    _, _, first = served.get("/api/items?limit=1")
    item = first["items"][0]
    examples = {"{id}": str(item["id"]), "{path}": item["path"]}
    for path, ops in spec["paths"].items():
        url = path
        for placeholder, value in examples.items():
            url = url.replace(placeholder, value)
        if path == "/api/query":
            url += f"?id={item['id']}"
        if "get" in ops:
            assert served.get(url)[0] == 200, url
    assert set(spec["paths"]["/api/query"]) == {"get", "post"}


def test_evaluation_is_served_when_one_was_run(served, built):
    _, _, coll = built
    status, _, data = served.get("/api/evaluation")
    assert status == 200 and data == json.loads((coll / "evaluation.json").read_text())
    gallery = Gallery(coll, evaluation=coll / "missing.json")
    with pytest.raises(RequestError) as err:
        gallery.evaluation()
    assert err.value.status == 404 and "lookalike evaluate" in str(err.value)


def test_evaluate_command_saves_its_table_into_the_collection(tmp_path):
    _, coll = build_collection(tmp_path)
    (coll / "evaluation.json").unlink(missing_ok=True)
    code = main(["evaluate", str(coll), "--labels", "folders", "--preset", "default", "-q"])
    assert code == 0
    saved = json.loads((coll / "evaluation.json").read_text())
    assert [p["preset"] for p in saved["presets"]] == ["default"]
    assert Gallery(coll).info()["has_evaluation"] is True


# -- one-view presets, server start -----------------------------------------------------------
def test_a_one_view_preset_has_no_slider(tmp_path):
    _, coll = build_collection(tmp_path, preset="v1")
    gallery = Gallery(coll)
    assert gallery.info()["views"] == ["whole"] and gallery.default_head_weight is None
    item = gallery.items[0]
    answer = gallery.query_item(item, k=3)
    assert len(answer["results"]) == 3
    assert all(
        r["scores"]["whole"] == pytest.approx(r["score"], abs=1e-5) for r in answer["results"]
    )
    with pytest.raises(RequestError, match="head_weight needs the head and the whole view"):
        gallery.query_item(item, k=3, head_weight=0.5)


def test_a_preset_with_per_block_pca_reranks_on_the_reduced_blocks(tmp_path):
    _, coll = build_collection(tmp_path, preset="v4")
    gallery = Gallery(coll)
    gen = Collection.open(coll).require_generation()
    fuser = gen.fuser()
    head = l2_normalize(
        fuser.reducers_["head.pooled"].transform(np.asarray(gen.block("head.pooled")))
    )
    item = gallery.items[5]
    answer = gallery.query_item(item, k=5, pool=len(gallery.items), head_weight=1.0)
    scores = head @ head[item.row]
    scores[item.row] = -np.inf
    assert [r["score"] for r in answer["results"]] == pytest.approx(
        np.sort(scores)[::-1][:5], abs=1e-5
    )


def test_serve_binds_to_loopback_by_default_and_reports_a_busy_port(served):
    args = build_parser().parse_args(["serve", "coll"])
    assert args.host == "127.0.0.1"
    with pytest.raises(ServerStartError, match="pass --port"):
        GalleryServer(served.server.gallery, "127.0.0.1", served.port)


def test_the_serve_command_prints_its_address_and_answers(built):
    _, _, coll = built
    cmd = [sys.executable, "-m", "lookalike.cli", "serve", str(coll), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[1].strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/info", timeout=30) as answer:
            assert json.load(answer)["count"] == 3 * PER_COLOUR + 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_open_starts_the_browser_and_logs_each_request(built, tmp_path):
    _, _, coll = built
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "fake-browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER": str(browser)}
    cmd = [sys.executable, "-m", "lookalike", "serve", str(coll), "--port", "0", "--open"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().split(" at ")[1].strip()
        deadline = time.monotonic() + 30
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert opened.read_text().strip() == url
        with urllib.request.urlopen(url + "api/items?name=RED/&limit=100", timeout=30) as answer:
            assert answer.status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert '"GET /api/items?name=RED/&limit=100 HTTP/1.1" 200' in err, err


def test_items_are_filtered_by_a_part_of_the_file_name(served):
    _, _, found = served.get("/api/items?name=BLUE/&limit=100")
    assert found["total"] == PER_COLOUR and found["name"] == "blue/"
    assert all(i["path"].startswith("blue/") for i in found["items"])
    _, _, both = served.get("/api/items?name=blue&label=character:red")
    assert both["total"] == 0
    _, _, everything = served.get("/api/items?name=&limit=100")
    assert everything["total"] == 3 * PER_COLOUR + 1


# -- load ---------------------------------------------------------------------------------
def test_twenty_parallel_clients_get_correct_answers(served, built):
    """20 clients x 15 requests on keep-alive connections; every answer is checked."""
    _, root, _ = built
    _, _, listing = served.get("/api/items?limit=100")
    items = [i for i in listing["items"] if not i["path"].startswith("linked/")]
    expected = {
        i["id"]: [r["id"] for r in served.get(f"/api/query?id={i['id']}&k=4")[2]["results"]]
        for i in items
    }
    upload = png_bytes(root / "red" / "0.png")
    red0 = next(i["id"] for i in items if i["path"] == "red/0.png")

    def client(n: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        checked = 0
        try:
            for j in range(15):
                item = items[(n * 7 + j) % len(items)]
                kind = (n + j) % 5
                if kind == 0:
                    status, _, body = served.get("/api/items?offset=5&limit=5", conn=conn)
                    assert status == 200 and body["items"] == listing["items"][5:10]
                elif kind == 1:
                    status, _, body = served.get(f"/thumbs/{item['path']}", conn=conn)
                    assert status == 200 and body[:2] == b"\xff\xd8"
                elif kind == 2:
                    status, _, body = served.request(
                        "POST",
                        "/api/query?k=4",
                        body=upload,
                        headers={"Content-Type": "image/png"},
                        conn=conn,
                    )
                    assert status == 200 and [r["id"] for r in body["results"]] == expected[red0]
                elif kind == 3:
                    status, _, body = served.get("/api/query?id=abc", conn=conn)
                    assert status == 400
                else:
                    status, _, body = served.get(f"/api/query?id={item['id']}&k=4", conn=conn)
                    assert status == 200
                    assert [r["id"] for r in body["results"]] == expected[item["id"]]
                checked += 1
        finally:
            conn.close()
        return checked

    with ThreadPoolExecutor(max_workers=20) as pool:
        done = list(pool.map(client, range(20)))
    assert sum(done) == 300
