"""The gallery page in a real browser: Debian's Chromium, headless, driven by Playwright.

Needs /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it). Leaves a
screenshot in test-artifacts/gallery.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from lookalike.config import get_preset
from lookalike.indexing.indexer import Indexer
from lookalike.load.labels import read_labels_csv
from lookalike.render.sheets import DETECTED_BOX, FALLBACK_BOX
from lookalike.search.searcher import Searcher
from lookalike.web import Gallery, WebLimits
from tests.web.test_web import COLOURS, PER_COLOUR, Running, build_collection, draw, fake_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # Without these Chromium floods a closed network with refused connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _, coll = build_collection(tmp_path_factory.mktemp("browser"))
    scores = {"preset": "default", "precision_at_k": 0.9, "map_at_k": 0.8}
    scores |= {"ann_recall_at_k": 1.0, "feel": 0.7, "dims": 704, "k": 4, "queries": 25}
    scores["per_label"] = [
        {"label": "blue", "queries": 5, "precision_at_k": 0.5, "found_instead": [["red", 6]]},
        {"label": "red", "queries": 20, "precision_at_k": 1.0, "found_instead": []},
    ]
    (coll / "evaluation.json").write_text(json.dumps({"detection_rate": 0.5, "presets": [scores]}))
    running = Running(Gallery(coll, labels="folders"))
    yield running, coll
    running.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def api(running: Running, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{running.port}{path}", timeout=30) as r:
        return json.load(r)


def shown_ids(page) -> list[int]:
    return [
        int(i)
        for i in page.locator("#results .tile").evaluate_all(
            "tiles => tiles.map(t => t.dataset.id)"
        )
    ]


def test_gallery_click_slider_upload_and_evaluation(site, browser, tmp_path):
    running, coll = site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{running.port}/")
    page.wait_for_selector("body[data-ready='1']")

    # The gallery: a page of tiles, and a label filter.
    total = 3 * PER_COLOUR + 1
    assert page.locator("#gallery .tile").count() == min(total, 30)
    assert f"{total} images" in page.locator("#page").inner_text()
    page.select_option("#filters select[data-task='character']", "green")
    expect(page.locator("#gallery .tile")).to_have_count(PER_COLOUR)
    paths = page.locator("#gallery .tile").evaluate_all("ts => ts.map(t => t.dataset.path)")
    assert all(p.startswith("green/") for p in paths)

    # Click an image: its look-alikes appear, with scores and head boxes, never itself.
    clicked = page.locator("#gallery .tile").nth(2)
    query_id = int(clicked.get_attribute("data-id"))
    clicked.click()
    page.wait_for_selector("#results .tile")
    assert page.locator("#results .tile").count() == 8
    ranked = shown_ids(page)
    assert query_id not in ranked
    box = page.locator("#results .tile .box").first.bounding_box()
    assert box is not None and box["width"] > 5 and box["height"] > 5
    # At the preset's own weight the page ranks as the index does.
    fused = api(running, f"/api/query?id={query_id}&k=8&pool=100")
    assert ranked == [r["id"] for r in fused["results"]]

    # The slider re-ranks live, exactly as the API does for the same weight.
    slider = page.locator("#weight")
    for key, weight in (("Home", 0.0), ("End", 1.0)):
        slider.focus()
        page.keyboard.press(key)
        expect(page.locator("#weight-value")).to_contain_text(f"head {weight:.2f}")
        expect(page.locator(f"#results[data-head-weight='{weight:.2f}']")).to_have_count(1)
        want = api(running, f"/api/query?id={query_id}&k=8&pool=100&head_weight={weight}")
        assert shown_ids(page) == [r["id"] for r in want["results"]]

    # Upload a query image: the page shows it and its look-alikes.
    upload = Path(Gallery(coll).root) / "red" / "1.png"
    page.set_input_files("#upload", str(upload))
    expect(page.locator("#query-tile figcaption")).to_contain_text("uploaded: 1.png")
    page.wait_for_selector("#results .tile")
    shown = page.locator("#results .tile").evaluate_all("ts => ts.map(t => t.dataset.path)")
    assert shown and all(p.startswith("red/") for p in shown[:4])
    assert "red/1.png" not in shown  # the same file, indexed, is the query itself

    # The evaluation table.
    assert page.locator("#evaluation").is_visible()
    assert "0.900" in page.locator("#evaluation-table").inner_text()
    # Per label, folded until asked for: the worst first, with what its queries found instead.
    page.click("#evaluation-labels-summary")
    labels = page.locator("#evaluation-labels-table tr").all_inner_texts()
    assert [row.split("\t")[0] for row in labels] == ["label", "blue", "red"]
    assert "red (6)" in labels[1] and labels[2].endswith("-")

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "gallery.png"), full_page=True)
    assert (ARTIFACTS / "gallery.png").stat().st_size > 10_000
    assert errors == []
    page.close()


def test_a_refused_upload_shows_the_servers_message(site, browser, tmp_path):
    running, _ = site
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{running.port}/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#upload", str(text))
    expect(page.locator("#error")).to_contain_text("not an image")
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(WebLimits().max_upload_bytes + 1)
    page.set_input_files("#upload", str(big))
    expect(page.locator("#error")).to_contain_text("uploads are limited to")
    page.close()


@pytest.fixture(scope="module")
def site_with_copy(tmp_path_factory):
    """The colour folders and a half-size copy of red/0.png: one near-duplicate pair."""
    root, coll = build_collection(tmp_path_factory.mktemp("browser-copy"))
    with Image.open(root / "red" / "0.png") as image:
        image.resize((24, 32), Image.Resampling.LANCZOS).save(root / "red" / "0_small.png")
    Indexer(root, coll, fake_config(), progress=False).run()
    running = Running(Gallery(coll, labels="folders"))
    yield running
    running.stop()


def test_groups_named_in_the_page_download_as_a_labels_csv_and_duplicates_show(
    site_with_copy, browser, tmp_path
):
    running = site_with_copy
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{running.port}/")
    page.wait_for_selector("body[data-ready='1']")

    # The groups, as the API (and `lookalike groups --min-size 2`) gives them.
    groups = api(running, "/api/groups")["groups"]
    page.click("#show-groups")
    expect(page.locator("#groups .report-group")).to_have_count(len(groups))
    first = page.locator("#groups .report-group").first
    assert first.get_attribute("data-group") == groups[0]["name"]
    expect(first.locator(".tile")).to_have_count(groups[0]["size"])
    rep = first.locator(".tile").first
    assert int(rep.get_attribute("data-id")) == groups[0]["representative"]["id"]
    assert "representative" in rep.inner_text()

    # Name the first group and download the labels CSV: what train and evaluate read.
    first.locator("input.group-name").fill("Crimson, the first")
    with page.expect_download() as download:
        page.click("#download-labels")
    saved = tmp_path / "labels.csv"
    download.value.save_as(saved)
    labels = read_labels_csv(saved)
    names = {g["name"]: g for g in groups}
    for path, cells in labels.by_path.items():
        group = next(g for g in groups if path in {m["path"] for m in g["members"]})
        want = "Crimson, the first" if group is groups[0] else group["name"]
        assert cells["character"] == want
    assert len(labels.by_path) == sum(g["size"] for g in names.values())

    # Near duplicates: each group with the file to keep first.
    duplicates = api(running, "/api/duplicates")
    pairs = [(g["keep"]["path"], [o["path"] for o in g["others"]]) for g in duplicates["groups"]]
    assert ("red/0.png", ["red/0_small.png"]) in pairs  # the larger one is kept
    page.click("#show-duplicates")
    expect(page.locator("#duplicates-note")).to_contain_text(
        f"{len(duplicates['groups'])} groups among {duplicates['compared']} pictures"
    )
    expect(page.locator("#duplicates .duplicate-group")).to_have_count(len(duplicates["groups"]))
    for n, group in enumerate(duplicates["groups"]):
        keep = page.locator("#duplicates .duplicate-group").nth(n).locator(".tile").first
        assert int(keep.get_attribute("data-id")) == group["keep"]["id"]
        assert "keep" in (keep.get_attribute("class") or "")
    page.screenshot(path=str(ARTIFACTS / "groups.png"), full_page=True)
    assert errors == []
    page.close()


def cli_query(coll: Path, query: str, k: int) -> list[int]:
    """`lookalike query --json` in its own process, as a user runs it: the result ids."""
    cmd = [sys.executable, "-m", "lookalike", "query", str(coll), query, "-k", str(k), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return [r["id"] for r in json.loads(done.stdout)["results"]]


def open_page(running: Running, browser, hash_: str = ""):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{running.port}/{hash_}")
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


@pytest.fixture(scope="module")
def dense_site(tmp_path_factory):
    """The `default` preset unchanged, on enough pictures for its dense reduction: the
    fused vector has a learned part that no head weight reproduces."""
    root = tmp_path_factory.mktemp("browser-dense") / "photos"
    for n, colour in enumerate(COLOURS.values()):
        for i in range(100):
            draw(root / f"c{n}" / f"{i:03d}.png", colour, seed=1000 * n + i)
    coll = root.parent / "coll"
    config = get_preset("default").with_options(backbone="fake", detector="none")
    Indexer(root, coll, config, progress=False).run()
    assert Searcher(coll).fuser.reduces
    running = Running(Gallery(coll, labels="folders"))
    yield running, coll
    running.stop()


@pytest.mark.parametrize("collection", ["site", "dense_site"])
def test_the_first_view_is_the_query_commands_answer(collection, request, browser, tmp_path):
    running, coll = request.getfixturevalue(collection)
    page, errors = open_page(running, browser)
    k = int(page.locator("#k").input_value())
    # A stored item: clicked in the gallery.
    tile = page.locator("#gallery .tile").nth(5)
    path = tile.get_attribute("data-path")
    tile.click()
    expect(page.locator("#results[data-head-weight='index']")).to_have_count(1)
    assert shown_ids(page) == cli_query(coll, path, k)
    # An uploaded picture that is in no folder of the collection.
    picture = tmp_path / "new.png"
    Image.new("RGB", (40, 52), (35, 70, 190)).save(picture)
    page.set_input_files("#upload", str(picture))
    expect(page.locator("#query-tile figcaption")).to_contain_text("uploaded: new.png")
    expect(page.locator("#results .tile")).to_have_count(k)
    assert shown_ids(page) == cli_query(coll, str(picture), k)
    assert errors == []
    page.close()


def test_every_view_has_a_url_and_back_forward_and_reload_work(site, browser):
    running, _ = site
    page, errors = open_page(running, browser)
    base = f"http://127.0.0.1:{running.port}/"
    first = page.locator("#gallery .tile").first
    first_id = first.get_attribute("data-id")
    first.click()
    expect(page.locator(f"#query-tile .tile[data-id='{first_id}']")).to_have_count(1)
    assert page.url == f"{base}#/item/{first_id}"
    ranked = shown_ids(page)
    # A result's own look-alikes, then Back, Back, Forward.
    page.locator("#results .tile").first.click()
    second_id = str(ranked[0])
    expect(page.locator(f"#query-tile .tile[data-id='{second_id}']")).to_have_count(1)
    page.go_back()
    expect(page.locator(f"#query-tile .tile[data-id='{first_id}']")).to_have_count(1)
    assert shown_ids(page) == ranked
    page.go_back()
    expect(page.locator("#gallery-section")).to_be_visible()
    expect(page.locator("#detail")).to_be_hidden()
    page.go_forward()
    expect(page.locator(f"#query-tile .tile[data-id='{first_id}']")).to_have_count(1)
    # The slider's weight is in the URL; reloading shows the same view, re-ranked alike.
    slider = page.locator("#weight")
    slider.focus()
    page.keyboard.press("Home")
    expect(page.locator("#results[data-head-weight='0.00']")).to_have_count(1)
    weighted = shown_ids(page)
    assert "w=0.00" in page.url
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#results[data-head-weight='0.00']")).to_have_count(1)
    assert shown_ids(page) == weighted
    # The file-name filter: server-side, in the URL, kept on reload.
    page.goto(base)
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#name-filter", "BLUE/")
    expect(page.locator("#gallery .tile")).to_have_count(PER_COLOUR)
    assert "name=BLUE" in page.url
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#gallery .tile")).to_have_count(PER_COLOUR)
    assert page.locator("#name-filter").input_value() == "BLUE/"
    # The reports have URLs too.
    page.click("#show-groups")
    expect(page.locator("#groups .report-group").first).to_be_visible()
    assert page.url == f"{base}#/groups"
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#groups .report-group").first).to_be_visible()
    page.go_back()
    expect(page.locator("#gallery .tile")).to_have_count(PER_COLOUR)
    assert errors == []
    page.close()


def test_header_words_box_colours_and_a_later_evaluation(site, browser):
    running, coll = site
    page, errors = open_page(running, browser)
    summary = page.locator("#summary").inner_text()
    info = api(running, "/api/info")
    assert f"{info['count']} images" in summary and f"{info['dims']} dims" in summary
    assert f"preset {info['preset']}" in summary and "head." not in summary
    assert page.locator("#loading").is_hidden()
    # Head boxes in the contact sheets' colours (render.py); detector "none": all fallbacks.
    colour = page.locator("#gallery .tile .box.fallback").first.evaluate(
        "b => getComputedStyle(b).borderTopColor"
    )
    assert colour == "rgb({}, {}, {})".format(*FALLBACK_BOX)
    detected = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--box-detected')"
    )
    assert detected.strip() == "#{:02x}{:02x}{:02x}".format(*DETECTED_BOX)
    # An `evaluate` run after the page opened shows without a restart or a reload.
    saved = (coll / "evaluation.json").read_text()
    try:
        report = json.loads(saved)
        report["presets"][0]["precision_at_k"] = 0.625
        (coll / "evaluation.json").write_text(json.dumps(report))
        expect(page.locator("#evaluation-table")).to_contain_text("0.625", timeout=15_000)
    finally:
        (coll / "evaluation.json").write_text(saved)
    assert errors == []
    page.close()


def test_clicking_a_face_asks_with_it_and_back_returns(browser, tmp_path):
    """A group picture's faces are buttons on the query view: the second one asks as
    `query --face 1` does, in the URL, and Back returns to the first face's answer."""
    from tests.indexing.test_faces import COLOURS as FACE_COLOURS
    from tests.indexing.test_faces import config as face_config
    from tests.indexing.test_faces import draw as draw_faces

    root = tmp_path / "art"
    for n, colour in enumerate(FACE_COLOURS):
        for i in range(3):
            draw_faces(root / colour / f"{i}.png", colour, None, seed=10 * n + i)
    draw_faces(root / "group" / "red_and_blue.png", "red", "blue", seed=99)
    coll = tmp_path / "coll"
    Indexer(root, coll, face_config(), progress=False, processes=False).run()
    searcher = Searcher(coll)
    group = searcher.query("group/red_and_blue.png", k=2)
    by_face = searcher.query("group/red_and_blue.png", k=2, face=1)
    running = Running(Gallery(coll))
    try:
        page, errors = open_page(running, browser, f"#/item/{group.query_id}?k=2")
        expect(page.locator("#query-tile .face-pick")).to_have_count(2)
        expect(page.locator("#results .tile")).to_have_count(2)
        assert shown_ids(page) == [m.id for m in group.matches]
        page.locator("#query-tile .face-pick[data-face='1']").click()
        expect(page.locator("#query-tile .face-note")).to_contain_text("face 1 of 2 asks")
        assert "f=1" in page.url
        expect(page.locator("#results .tile")).to_have_count(2)
        page.wait_for_function(
            "ids => JSON.stringify([...document.querySelectorAll('#results .tile')]"
            ".map(t => Number(t.dataset.id))) === JSON.stringify(ids)",
            arg=[m.id for m in by_face.matches],
        )
        page.go_back()
        expect(page.locator("#query-tile .face-note")).to_contain_text("face 0 of 2 asks")
        assert shown_ids(page) == [m.id for m in group.matches]
        assert errors == []
        page.close()
    finally:
        running.stop()
