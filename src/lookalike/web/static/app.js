// The gallery page: plain DOM, no framework, talks only to this server's JSON API.
"use strict";

const PER_PAGE = 30;

const state = {
  info: null,
  groups: null, // the last /api/groups answer
  route: null, // the parsed location.hash now shown
  page: 1,
  galleryParams: null, // the gallery view last shown, for "back to the gallery"
  answer: null, // the last /api/query answer, in the server's order
  uploads: [], // {file, url} of each picture uploaded in this tab (#/upload/N)
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(url, options = {}) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// Place an absolutely positioned element over a box of the image, in percentages of its size.
function place(node, [x0, y0, x1, y1], width, height) {
  node.style.left = `${(100 * x0) / width}%`;
  node.style.top = `${(100 * y0) / height}%`;
  node.style.width = `${(100 * (x1 - x0)) / width}%`;
  node.style.height = `${(100 * (y1 - y0)) / height}%`;
}

// One image with its head box drawn over it. With `pick` ({faces, face, onPick}) each face of
// a picture with several is a button: clicking one asks with that face (query --face N).
function frame(src, width, height, headBox, fallback, alt, pick = null) {
  const box = el("div", { class: fallback ? "box fallback" : "box" });
  const wrap = el("div", { class: "frame" }, [el("img", { src, alt, loading: "lazy" }), box]);
  if (width && height) {
    wrap.style.aspectRatio = `${width} / ${height}`;
    if (headBox) place(box, headBox, width, height);
    if (pick && pick.faces && pick.faces.length > 1) {
      pick.faces.forEach((faceBox, n) => {
        const current = n === pick.face;
        const button = el("button", {
          class: current ? "face-pick current" : "face-pick",
          "data-face": String(n),
          title: current ? `face ${n}: asking with this face` : `face ${n}: ask with this face`,
          "aria-label": `face ${n}`,
        });
        place(button, faceBox, width, height);
        button.addEventListener("click", (event) => {
          event.stopPropagation();
          if (!current) pick.onPick(n);
        });
        wrap.append(button);
      });
    }
  } else {
    box.hidden = true;
  }
  if (fallback) box.title = "no face found: the head view is a fallback crop";
  return wrap;
}

// A new view (a history entry) for the current query asked with another face.
function pickFace(n) {
  const route = parseRoute(location.hash);
  const params = new URLSearchParams(route.params);
  if (n === 0) params.delete("f");
  else params.set("f", String(n));
  go(route.view, route.arg, params);
}

// "face 1 of 3 asks" when the picture has several, for the query's caption.
function faceNote(faces, face) {
  if (!faces || faces.length < 2 || face === null || face === undefined) return "";
  return `face ${face} of ${faces.length} asks (click another face to ask with it)`;
}

// The first label task (e.g. the character) as a chip; all of them in its tooltip.
function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return [];
  const all = entries.map(([task, value]) => `${task}: ${value}`).join("\n");
  return [el("span", { class: "label", title: all, text: entries[0][1] })];
}

function itemTile(item, size, caption, pick = null) {
  // A link to outside the indexed folder is listed but never served: say so instead.
  const picture = item.viewable
    ? frame(`/thumbs/${encodePath(item.path)}?size=${size}`, item.width, item.height,
        item.head_box, item.fallback, item.path, pick)
    : el("div", { class: "frame hidden-file", text: "file outside the indexed folder" });
  return el("figure", { class: "tile", "data-id": String(item.id), "data-path": item.path }, [
    picture,
    el("figcaption", {}, caption),
  ]);
}

// -- links: every view is a hash route, so Back/Forward, reload and bookmarks work ----------
// #/gallery?page=N&name=TEXT&label=task:value   a page of the gallery
// #/item/ID?k=K&w=W&f=F                         an item and its look-alikes (w: slider moved,
//                                               f: which face asks, when not the first)
// #/upload/N?k=K&w=W&f=F                        an uploaded picture's look-alikes (this tab only)
// #/groups, #/duplicates                        the reports
function parseRoute(hash) {
  const [path, query] = (hash.replace(/^#/, "") || "/gallery").split("?");
  const parts = path.split("/").filter(Boolean);
  return { view: parts[0] || "gallery", arg: parts[1], params: new URLSearchParams(query || "") };
}

function routeHash(view, arg, params) {
  const query = params && params.toString();
  return `#/${view}${arg === undefined ? "" : `/${arg}`}${query ? `?${query}` : ""}`;
}

// A new view is a new history entry; `replace` (typing, the slider) edits the current one.
function go(view, arg, params, replace = false) {
  const hash = routeHash(view, arg, params);
  if (replace) {
    history.replaceState(null, "", hash);
    render().catch((e) => showError(e.message));
  } else if (hash === location.hash) {
    render().catch((e) => showError(e.message));
  } else {
    location.hash = hash;
  }
}

function showOnly(view) {
  $("detail").hidden = !["item", "upload"].includes(view);
  $("gallery-section").hidden = view !== "gallery";
  $("groups").hidden = view !== "groups";
  $("duplicates").hidden = view !== "duplicates";
  for (const name of ["gallery", "groups", "duplicates"]) {
    $(`show-${name}`).classList.toggle("current", name === view);
  }
}

async function render() {
  showError("");
  const route = parseRoute(location.hash);
  state.route = route;
  showOnly(route.view);
  if (route.view === "item") await showItem(Number(route.arg), route.params);
  else if (route.view === "upload") await showUpload(route.arg, route.params);
  else if (route.view === "groups") await showGroups();
  else if (route.view === "duplicates") await showDuplicates();
  else await loadPage(route.params);
}

// -- gallery --------------------------------------------------------------------------------
function galleryParams(changes) {
  const params = new URLSearchParams(state.route && state.route.view === "gallery" ? state.route.params : "");
  for (const [key, value] of Object.entries(changes)) {
    if (key === "label") continue;
    if (value === "" || value === null || value === undefined) params.delete(key);
    else params.set(key, value);
  }
  if ("label" in changes) {
    params.delete("label");
    for (const [task, value] of Object.entries(changes.label)) if (value) params.append("label", `${task}:${value}`);
  }
  return params;
}

function currentLabels(params) {
  const out = {};
  for (const spec of params.getAll("label")) {
    const [task, ...rest] = spec.split(":");
    out[task] = rest.join(":");
  }
  return out;
}

async function loadPage(params) {
  const current = Math.max(1, Number(params.get("page")) || 1);
  const name = params.get("name") || "";
  const labels = currentLabels(params);
  // The controls follow the URL (a reload, Back).
  if ($("name-filter").value !== name && document.activeElement !== $("name-filter")) $("name-filter").value = name;
  for (const select of document.querySelectorAll("#filters select")) select.value = labels[select.dataset.task] || "";
  const query = new URLSearchParams({ offset: (current - 1) * PER_PAGE, limit: PER_PAGE });
  if (name) query.set("name", name);
  for (const spec of params.getAll("label")) query.append("label", spec);
  const page = await api(`/api/items?${query}`);
  if (parseRoute(location.hash).view !== "gallery") return; // the user moved on meanwhile
  const gallery = $("gallery");
  gallery.replaceChildren(
    ...page.items.map((item) => {
      const tile = itemTile(item, 256, [el("div", { text: item.path }), ...labelChips(item.labels)]);
      tile.addEventListener("click", () => go("item", item.id));
      return tile;
    }),
  );
  const pages = Math.max(1, Math.ceil(page.total / PER_PAGE));
  const found = name ? ` matching "${name}"` : "";
  $("page").textContent = `page ${current} of ${pages} (${page.total} images${found})`;
  $("prev").disabled = current <= 1;
  $("next").disabled = current >= pages;
  state.page = current;
  state.galleryParams = params;
}

function buildFilters(labels) {
  const holder = $("filters");
  holder.replaceChildren();
  for (const [task, values] of Object.entries(labels)) {
    const select = el("select", { "data-task": task }, [el("option", { value: "", text: "all" })]);
    for (const [value, count] of Object.entries(values)) {
      select.append(el("option", { value, text: `${value} (${count})` }));
    }
    select.addEventListener("change", () => {
      const chosen = currentLabels(galleryParams({}));
      chosen[task] = select.value;
      go("gallery", undefined, galleryParams({ label: chosen, page: "" }));
    });
    holder.append(el("label", {}, [`${task} `, select]));
  }
}

// -- queries: the first view is the server's (= `lookalike query`'s) ranking ------------------
// Without w the page shows the index's ranking exactly as `lookalike query` gives it; moving
// the slider asks the server to re-rank its candidates by w * head + (1 - w) * whole.
function queryParams(params) {
  const k = Number(params.get("k")) || Number($("k").value);
  const w = params.get("w");
  const query = new URLSearchParams({ k });
  if (w !== null) query.set("head_weight", w);
  if (w !== null) query.set("pool", poolSize());
  const face = Number(params.get("f")) || 0;
  if (face) query.set("face", face);
  return { k, w: w === null ? null : Number(w), query };
}

function poolSize() {
  return Math.min(state.info.limits.default_pool, state.info.count);
}

function setControls(k, w) {
  $("k").value = String(k);
  const moved = w !== null;
  const weight = $("weight");
  if (!weight.disabled) weight.value = String(moved ? w : state.info.default_head_weight ?? 0.5);
  $("weight-value").textContent = moved
    ? `head ${w.toFixed(2)} / whole ${(1 - w).toFixed(2)}`
    : "as the index ranks (lookalike query)";
  $("reset-weight").hidden = !moved;
}

let querySeq = 0; // answers to an older request than the newest are dropped

async function showItem(id, params) {
  const { k, w, query } = queryParams(params);
  setControls(k, w);
  query.set("id", id);
  const seq = ++querySeq;
  $("query-caption").textContent = "finding look-alikes…";
  const answer = await api(`/api/query?${query}`);
  if (seq !== querySeq) return;
  const item = answer.query;
  const shown = $("query-tile").firstChild;
  const asked = `${item.id}/${item.face}`;
  if (!shown || shown.dataset.asked !== asked) {
    const caption = [
      el("div", { text: item.path }),
      el("div", { class: "muted face-note", text: faceNote(item.faces, item.face) }),
      ...labelChips(item.labels),
    ];
    const pick = { faces: item.faces, face: item.face, onPick: pickFace };
    const tile = itemTile(item, 512, caption, pick);
    tile.dataset.asked = asked;
    $("query-tile").replaceChildren(tile);
  }
  showAnswer(answer, w);
}

async function showUpload(n, params) {
  const upload = state.uploads[n];
  if (!upload) {
    $("query-tile").replaceChildren();
    $("results").replaceChildren();
    $("query-caption").textContent = "";
    throw new Error("uploaded pictures are not kept across reloads: drop the picture again");
  }
  const { k, w, query } = queryParams(params);
  setControls(k, w);
  const seq = ++querySeq;
  $("query-caption").textContent = "finding look-alikes…";
  const answer = await api(`/api/query?${query}`, {
    method: "POST",
    headers: { "Content-Type": upload.file.type || "application/octet-stream" },
    body: upload.file,
  });
  if (seq !== querySeq) return;
  const q = answer.query;
  const same = q.same_as.length ? " (this very file is in the collection)" : "";
  const pick = { faces: q.faces, face: q.face, onPick: pickFace };
  $("query-tile").replaceChildren(
    el("figure", { class: "tile" }, [
      frame(upload.url, q.width, q.height, q.head_box, q.fallback, upload.file.name, pick),
      el("figcaption", {}, [
        el("div", { text: `uploaded: ${upload.file.name}${same}` }),
        el("div", { class: "muted face-note", text: faceNote(q.faces, q.face) }),
      ]),
    ]),
  );
  showAnswer(answer, w);
}

function queryUpload(file) {
  showError("");
  // The server refuses larger bodies unread; say it here rather than as a broken connection.
  const limit = state.info.limits.max_upload_bytes;
  if (file.size > limit) {
    showError(`${file.name}: ${file.size} bytes; uploads are limited to ${limit} bytes`);
    return;
  }
  const n = String(state.uploads.length);
  state.uploads.push({ file, url: URL.createObjectURL(file) });
  go("upload", n);
}

function showAnswer(answer, w) {
  state.answer = answer;
  const how = w === null ? "ranked as the index ranks (as lookalike query does)" : `re-ranked at head weight ${w.toFixed(2)}`;
  $("query-caption").textContent = `${answer.results.length} look-alikes, ${how}`;
  renderResults();
  $("results").dataset.headWeight = w === null ? "index" : w.toFixed(2);
}

// Slider, k and minimum score change the current route (one history entry per view).
function changeQuery(changes) {
  const route = parseRoute(location.hash);
  const params = new URLSearchParams(route.params);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) params.delete(key);
    else params.set(key, value);
  }
  go(route.view, route.arg, params, true);
}

// The minimum score typed in, or null when the box is empty.
function minScore() {
  const text = $("min-score").value.trim();
  return text === "" || !Number.isFinite(Number(text)) ? null : Number(text);
}

// Why no shown result is a good match: none reaches the minimum, or the best is improbable.
function noMatchNote(all, kept, min) {
  if (!all.length) return "No good match: the collection has no other image.";
  if (!kept.length) {
    return `No good match: no result reaches the minimum score ${min} (the best scored ${all[0].score.toFixed(3)}).`;
  }
  const p = kept[0].probability;
  if (typeof p === "number" && p < 0.5) {
    return `No good match: the best result is probably not the same character (P(same) ${p.toFixed(2)}).`;
  }
  return "";
}

// The server's answer in the server's order; the minimum score only hides, as `query` does.
function renderResults() {
  const answer = state.answer;
  if (!answer) return;
  const min = minScore();
  const all = answer.results;
  const kept = all.filter((r) => min === null || r.score >= min);
  const note = noMatchNote(all, kept, min);
  $("no-match").textContent = note;
  $("no-match").hidden = !note;
  $("results").replaceChildren(
    ...kept.map((item, i) => {
      const parts = answer.views.filter((v) => v in item.scores).map((v) => `${v} ${item.scores[v].toFixed(3)}`).join(" · ");
      const p = typeof item.probability === "number" ? ` · P(same) ${item.probability.toFixed(2)}` : "";
      const face = item.face ? ` · face ${item.face}` : "";
      const caption = [
        el("div", {}, [el("span", { class: "score", text: `#${i + 1}  ${item.score.toFixed(3)}` })]),
        el("div", { class: "muted", text: parts + p + face }),
        el("div", { text: item.path }),
        ...labelChips(item.labels),
      ];
      const tile = itemTile(item, 256, caption);
      tile.dataset.score = item.score.toFixed(6);
      // A picture found through one of its faces asks with that face in turn.
      const asks = item.face ? new URLSearchParams({ f: String(item.face) }) : undefined;
      tile.addEventListener("click", () => go("item", item.id, asks));
      return tile;
    }),
  );
}

// -- character groups and near duplicates ------------------------------------------------------
function reportTile(item, note) {
  const tile = itemTile(item, 256, [el("div", { text: item.path }), el("div", { class: "muted", text: note })]);
  tile.addEventListener("click", () => go("item", item.id));
  return tile;
}

async function showGroups() {
  $("groups-note").textContent = "finding character groups…";
  const report = await api("/api/groups");
  state.groups = report;
  $("groups-note").textContent =
    `${report.groups.length} groups of ${report.min_size} or more; ${report.ungrouped.length} pictures in no group`;
  $("groups-list").replaceChildren(
    ...report.groups.map((g) => {
      const name = el("input", { type: "text", class: "group-name", placeholder: g.name, "aria-label": `name of ${g.name}` });
      name.dataset.group = g.name;
      const tiles = g.members.map((m) => reportTile(m, m.id === g.representative.id ? "representative" : ""));
      return el("div", { class: "report-group", "data-group": g.name }, [
        el("strong", { text: `${g.name} (${g.size})` }), name, el("div", { class: "grid" }, tiles),
      ]);
    }),
  );
}

// file,character: each grouped file with its group's name (typed in, or group_N).
function labelsCsv() {
  const quote = (v) => (/[",\n\r]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
  const names = {};
  for (const input of document.querySelectorAll(".group-name")) {
    names[input.dataset.group] = input.value.trim() || input.dataset.group;
  }
  const rows = state.groups.groups.flatMap((g) => g.members.map((m) => [m.path, names[g.name]]));
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return ["file,character", ...rows.map((r) => r.map(quote).join(","))].join("\n") + "\n";
}

function downloadLabels() {
  const url = URL.createObjectURL(new Blob([labelsCsv()], { type: "text/csv" }));
  const link = el("a", { href: url, download: "labels.csv" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function showDuplicates() {
  $("duplicates-note").textContent = "finding near duplicates…";
  const report = await api("/api/duplicates");
  $("duplicates-note").textContent =
    `${report.groups.length} groups among ${report.compared} pictures (hashes at most ${report.threshold} bits apart)`;
  $("duplicates-list").replaceChildren(
    ...report.groups.map((g, n) => {
      const keep = reportTile(g.keep, `keep: ${g.keep.width}x${g.keep.height}, ${g.keep.bytes} bytes`);
      keep.classList.add("keep");
      const others = g.others.map((f) => reportTile(f, `${f.width}x${f.height}, ${f.distance} bits`));
      return el("div", { class: "report-group duplicate-group" }, [
        el("strong", { text: `group ${n + 1}` }), el("div", { class: "grid" }, [keep, ...others]),
      ]);
    }),
  );
}

// -- evaluation table: re-read while the page is open, so a later `evaluate` run shows ---------
const EVALUATION_POLL_MS = 5000;
let evaluationSeen = "";

async function loadEvaluation() {
  const response = await fetch("/api/evaluation", { cache: "no-store" });
  if (!response.ok) {
    $("evaluation").hidden = true;
    return;
  }
  const text = await response.text();
  if (text === evaluationSeen) return;
  evaluationSeen = text;
  const data = JSON.parse(text);
  const rows = data.presets || [];
  if (!rows.length) return;
  const k = rows[0].k;
  const head = ["preset", `P@${k}`, `mAP@${k}`, `ANN recall@${k}`, "feel", "dims"];
  const table = $("evaluation-table");
  table.replaceChildren(el("tr", {}, head.map((h) => el("th", { text: h }))));
  for (const r of rows) {
    const cells = [r.preset, r.precision_at_k, r.map_at_k, r.ann_recall_at_k, r.feel, r.dims];
    table.append(
      el(
        "tr",
        {},
        cells.map((c) => el("td", { text: typeof c === "number" && !Number.isInteger(c) ? c.toFixed(3) : String(c) })),
      ),
    );
  }
  showPerLabel(rows);
  const rate = typeof data.detection_rate === "number" ? data.detection_rate : null;
  $("evaluation-note").textContent =
    `${rows[0].queries} labelled queries, leave-one-out` +
    (rate === null ? "" : `; faces detected in ${(100 * rate).toFixed(1)}% of images`);
  $("evaluation").hidden = false;
}

// Each label's precision of the collection's own preset (or the first that has them), worst
// first, and what its queries found instead: where this collection's answers go wrong.
function showPerLabel(rows) {
  const own = (state.info && state.info.preset) || "";
  const scored = rows.find((r) => r.preset === own && r.per_label) || rows.find((r) => r.per_label && r.per_label.length);
  const box = $("evaluation-labels");
  if (!scored || !scored.per_label.length) {
    box.hidden = true;
    return;
  }
  $("evaluation-labels-summary").textContent = `per label (${scored.preset}), worst first`;
  const table = $("evaluation-labels-table");
  const head = ["label", "queries", `P@${scored.k}`, "most often found instead"];
  table.replaceChildren(el("tr", {}, head.map((h) => el("th", { text: h }))));
  for (const r of scored.per_label) {
    const instead = r.found_instead.map(([label, times]) => `${label} (${times})`).join(", ") || "-";
    const cells = [r.label, String(r.queries), r.precision_at_k.toFixed(3), instead];
    table.append(el("tr", {}, cells.map((c) => el("td", { text: c }))));
  }
  box.hidden = false;
}

// -- wiring -----------------------------------------------------------------------------------
let nameTimer = null;

function wire() {
  window.addEventListener("hashchange", () => render().catch((e) => showError(e.message)));
  $("prev").addEventListener("click", () => go("gallery", undefined, galleryParams({ page: Math.max(1, state.page - 1) })));
  $("next").addEventListener("click", () => go("gallery", undefined, galleryParams({ page: state.page + 1 })));
  $("name-filter").addEventListener("input", () => {
    clearTimeout(nameTimer);
    // One history entry for the whole typing, not one per key.
    nameTimer = setTimeout(() => {
      const replace = (state.route.params.get("name") || "") !== "";
      go("gallery", undefined, galleryParams({ name: $("name-filter").value.trim(), page: "" }), replace);
    }, 250);
  });
  $("download-labels").addEventListener("click", downloadLabels);
  $("weight").addEventListener("input", () => changeQuery({ w: Number($("weight").value).toFixed(2) }));
  $("reset-weight").addEventListener("click", () => changeQuery({ w: null }));
  $("k").addEventListener("change", () => changeQuery({ k: $("k").value }));
  $("min-score").addEventListener("input", renderResults);
  $("show-boxes").addEventListener("change", (e) => {
    document.body.classList.toggle("hide-boxes", !e.target.checked);
  });
  $("close").addEventListener("click", () => {
    go("gallery", undefined, state.galleryParams);
  });
  $("upload").addEventListener("change", (e) => {
    if (e.target.files.length) queryUpload(e.target.files[0]);
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) queryUpload(e.dataTransfer.files[0]);
  });
}

function describe(info) {
  const labels = Object.keys(info.labels);
  const labelled = labels.length ? ` · labels: ${labels.join(", ")}` : "";
  return `${info.collection}: ${info.count} images · preset ${info.preset} · ${info.dims} dims · ` +
    `${info.views.join(" + ")} view${info.views.length > 1 ? "s" : ""}${labelled}`;
}

async function start() {
  wire();
  try {
    state.info = await api("/api/info");
  } catch (e) {
    $("loading").textContent = "";
    showError(e.message);
    return;
  }
  const info = state.info;
  $("summary").textContent = describe(info);
  $("summary").title = `backbone ${info.backbone}, detector ${info.detector}, index ${info.index}`;
  const root = document.documentElement.style;
  root.setProperty("--box-detected", info.box_colours.detected);
  root.setProperty("--box-fallback", info.box_colours.fallback);
  if (info.default_head_weight === null) {
    $("weight").disabled = true;
    $("weight-note").textContent = `preset ${info.preset} has one view (${info.views[0]}): nothing to weigh`;
  } else {
    $("weight-note").textContent = "move the slider to weigh the head against the whole picture";
  }
  buildFilters(info.labels);
  await render().catch((e) => showError(e.message));
  $("loading").hidden = true;
  await loadEvaluation().catch(() => {});
  setInterval(() => loadEvaluation().catch(() => {}), EVALUATION_POLL_MS);
  document.body.dataset.ready = "1";
}

start();
