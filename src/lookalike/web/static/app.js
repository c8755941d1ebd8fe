// The gallery page: plain DOM, no framework, talks only to this server's JSON API.
"use strict";

const PER_PAGE = 30;

const state = {
  info: null,
  offset: 0,
  total: 0,
  filters: {},
  candidates: [], // the last query's candidate pool, with per-view scores
  views: [],
  uploadUrl: null,
  groups: null, // the last /api/groups answer
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

// One image with its head box drawn over it, in percentages of the image's size.
function frame(src, width, height, headBox, fallback, alt) {
  const box = el("div", { class: fallback ? "box fallback" : "box" });
  const wrap = el("div", { class: "frame" }, [el("img", { src, alt, loading: "lazy" }), box]);
  if (width && height) {
    wrap.style.aspectRatio = `${width} / ${height}`;
    if (headBox) {
      const [x0, y0, x1, y1] = headBox;
      box.style.left = `${(100 * x0) / width}%`;
      box.style.top = `${(100 * y0) / height}%`;
      box.style.width = `${(100 * (x1 - x0)) / width}%`;
      box.style.height = `${(100 * (y1 - y0)) / height}%`;
    }
  } else {
    box.hidden = true;
  }
  if (fallback) box.title = "no face found: the head view is a fallback crop";
  return wrap;
}

// The first label task (e.g. the character) as a chip; all of them in its tooltip.
function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (!entries.length) return [];
  const all = entries.map(([task, value]) => `${task}: ${value}`).join("\n");
  return [el("span", { class: "label", title: all, text: entries[0][1] })];
}

function itemTile(item, size, caption) {
  // A link to outside the indexed folder is listed but never served: say so instead.
  const picture = item.viewable
    ? frame(`/thumbs/${encodePath(item.path)}?size=${size}`, item.width, item.height,
        item.head_box, item.fallback, item.path)
    : el("div", { class: "frame hidden-file", text: "file outside the indexed folder" });
  return el("figure", { class: "tile", "data-id": String(item.id), "data-path": item.path }, [
    picture,
    el("figcaption", {}, caption),
  ]);
}

// -- gallery --------------------------------------------------------------------------------
async function loadPage() {
  const params = new URLSearchParams({ offset: state.offset, limit: PER_PAGE });
  for (const [task, value] of Object.entries(state.filters)) {
    if (value) params.append("label", `${task}:${value}`);
  }
  const page = await api(`/api/items?${params}`);
  state.total = page.total;
  const gallery = $("gallery");
  gallery.replaceChildren(
    ...page.items.map((item) => {
      const tile = itemTile(item, 256, [el("div", { text: item.path }), ...labelChips(item.labels)]);
      tile.addEventListener("click", () => queryItem(item));
      return tile;
    }),
  );
  const pages = Math.max(1, Math.ceil(page.total / PER_PAGE));
  const current = Math.floor(state.offset / PER_PAGE) + 1;
  $("page").textContent = `page ${current} of ${pages} (${page.total} images)`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + PER_PAGE >= page.total;
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
      state.filters[task] = select.value;
      state.offset = 0;
      loadPage().catch((e) => showError(e.message));
    });
    holder.append(el("label", {}, [`${task} `, select]));
  }
}

// -- queries and live re-ranking --------------------------------------------------------------
function poolSize() {
  return Math.min(state.info.limits.default_pool, state.info.count);
}

async function queryItem(item) {
  showError("");
  const pool = poolSize();
  const answer = await api(`/api/query?id=${item.id}&k=${pool}&pool=${pool}`).catch((e) => {
    showError(e.message);
    return null;
  });
  if (!answer) return;
  const caption = [el("div", { text: item.path }), ...labelChips(item.labels)];
  showQuery(itemTile(item, 512, caption), answer);
}

async function queryUpload(file) {
  showError("");
  // The server refuses larger bodies unread; say it here rather than as a broken connection.
  const limit = state.info.limits.max_upload_bytes;
  if (file.size > limit) {
    showError(`${file.name}: ${file.size} bytes; uploads are limited to ${limit} bytes`);
    return;
  }
  const pool = poolSize();
  const answer = await api(`/api/query?k=${pool}&pool=${pool}`, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  }).catch((e) => {
    showError(e.message);
    return null;
  });
  if (!answer) return;
  if (state.uploadUrl) URL.revokeObjectURL(state.uploadUrl);
  state.uploadUrl = URL.createObjectURL(file);
  const q = answer.query;
  const same = q.same_as.length ? " (this very file is in the collection)" : "";
  const tile = el("figure", { class: "tile" }, [
    frame(state.uploadUrl, q.width, q.height, q.head_box, q.fallback, file.name),
    el("figcaption", { text: `uploaded: ${file.name}${same}` }),
  ]);
  showQuery(tile, answer);
}

function showQuery(tile, answer) {
  state.candidates = answer.results;
  state.views = answer.views;
  $("query-tile").replaceChildren(tile);
  $("query-caption").textContent = `${answer.results.length} candidates from the index, re-ranked exactly`;
  $("detail").hidden = false;
  renderResults();
  $("detail").scrollIntoView({ block: "start" });
}

function headWeight() {
  return Number($("weight").value);
}

// score = w * cos(head) + (1 - w) * cos(whole), as the API's head_weight; ties by id.
function rerank(candidates, weight) {
  const both = state.views.includes("head") && state.views.includes("whole");
  const scored = candidates.map((c) => ({
    item: c,
    score: both ? weight * c.scores.head + (1 - weight) * c.scores.whole : c.scores.fused,
  }));
  scored.sort((a, b) => b.score - a.score || a.item.id - b.item.id);
  return scored;
}

// The minimum score typed in, or null when the box is empty.
function minScore() {
  const text = $("min-score").value.trim();
  return text === "" || !Number.isFinite(Number(text)) ? null : Number(text);
}

// Why no shown result is a good match: none reaches the minimum, or the best is improbable.
function noMatchNote(ranked, kept, min) {
  if (!ranked.length) return "No good match: the collection has no other image.";
  if (!kept.length) {
    return `No good match: no result reaches the minimum score ${min} (the best scored ${ranked[0].score.toFixed(3)}).`;
  }
  const p = kept[0].item.probability;
  if (typeof p === "number" && p < 0.5) {
    return `No good match: the best result is probably not the same character (P(same) ${p.toFixed(2)}).`;
  }
  return "";
}

function renderResults() {
  const k = Number($("k").value);
  const weight = headWeight();
  $("weight-value").textContent = `head ${weight.toFixed(2)} / whole ${(1 - weight).toFixed(2)}`;
  const min = minScore();
  const all = rerank(state.candidates, weight);
  const ranked = all.filter(({ score }) => min === null || score >= min).slice(0, k);
  const note = noMatchNote(all, ranked, min);
  $("no-match").textContent = note;
  $("no-match").hidden = !note;
  $("results").replaceChildren(
    ...ranked.map(({ item, score }, i) => {
      const parts = state.views.map((v) => `${v} ${item.scores[v].toFixed(3)}`).join(" · ");
      const p = typeof item.probability === "number" ? ` · P(same) ${item.probability.toFixed(2)}` : "";
      const caption = [
        el("div", {}, [el("span", { class: "score", text: `#${i + 1}  ${score.toFixed(3)}` })]),
        el("div", { class: "muted", text: parts + p }),
        el("div", { text: item.path }),
        ...labelChips(item.labels),
      ];
      const tile = itemTile(item, 256, caption);
      tile.dataset.score = score.toFixed(6);
      tile.addEventListener("click", () => queryItem(item));
      return tile;
    }),
  );
}

// -- character groups and near duplicates ------------------------------------------------------
function reportTile(item, note) {
  const tile = itemTile(item, 256, [el("div", { text: item.path }), el("div", { class: "muted", text: note })]);
  tile.addEventListener("click", () => queryItem(item));
  return tile;
}

async function showGroups() {
  showError("");
  const report = await api("/api/groups").catch((e) => showError(e.message));
  if (!report) return;
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
  $("groups").hidden = false;
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
  showError("");
  const report = await api("/api/duplicates").catch((e) => showError(e.message));
  if (!report) return;
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
  $("duplicates").hidden = false;
}

// -- evaluation table -------------------------------------------------------------------------
async function loadEvaluation() {
  const response = await fetch("/api/evaluation");
  if (!response.ok) return;
  const data = await response.json();
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
  const rate = typeof data.detection_rate === "number" ? data.detection_rate : null;
  $("evaluation-note").textContent =
    `${rows[0].queries} labelled queries, leave-one-out` +
    (rate === null ? "" : `; faces detected in ${(100 * rate).toFixed(1)}% of images`);
  $("evaluation").hidden = false;
}

// -- wiring -----------------------------------------------------------------------------------
function wire() {
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PER_PAGE);
    loadPage().catch((e) => showError(e.message));
  });
  $("next").addEventListener("click", () => {
    state.offset += PER_PAGE;
    loadPage().catch((e) => showError(e.message));
  });
  $("show-groups").addEventListener("click", showGroups);
  $("show-duplicates").addEventListener("click", showDuplicates);
  $("download-labels").addEventListener("click", downloadLabels);
  $("weight").addEventListener("input", renderResults);
  $("k").addEventListener("change", renderResults);
  $("min-score").addEventListener("input", renderResults);
  $("show-boxes").addEventListener("change", (e) => {
    document.body.classList.toggle("hide-boxes", !e.target.checked);
  });
  $("close").addEventListener("click", () => {
    $("detail").hidden = true;
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

async function start() {
  wire();
  try {
    state.info = await api("/api/info");
  } catch (e) {
    showError(e.message);
    return;
  }
  const info = state.info;
  $("summary").textContent =
    `${info.collection}: ${info.count} images · preset ${info.preset} (${info.blocks.join(", ")}) · ` +
    `${info.backbone}, detector ${info.detector}, index ${info.index}`;
  const weight = $("weight");
  if (info.default_head_weight === null) {
    weight.disabled = true;
    $("weight-note").textContent = `preset ${info.preset} has one view (${info.views[0]}): nothing to weigh`;
  } else {
    weight.value = String(info.default_head_weight);
    $("weight-note").textContent = `the index ranks as at head ${info.default_head_weight.toFixed(2)}`;
  }
  buildFilters(info.labels);
  await loadPage().catch((e) => showError(e.message));
  if (info.has_evaluation) await loadEvaluation();
  document.body.dataset.ready = "1";
}

start();
