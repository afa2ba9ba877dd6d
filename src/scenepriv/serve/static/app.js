// scenepriv serve: pick photos, upload them as one job, follow its progress, compare, check and download.
// Plain browser JavaScript, no library; every request goes to the server that served this page.
"use strict";

const $ = (id) => document.getElementById(id);
const HEADERS = { "X-Scenepriv": "1" };  // the server refuses changes without it (another site cannot send it)
let config = null;
let chosen = [];      // File objects to upload
let jobId = null;
let timer = null;
const cards = new Map();  // file index -> its card's elements

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// a file's size as people read it: KB below a megabyte (a 46 KB photo is not "0.0 MB")
function fileSize(bytes) {
  return bytes < 1048576 ? `${Math.max(1, Math.round(bytes / 1024))} KB` : `${(bytes / 1048576).toFixed(1)} MB`;
}
function percent(p) { return `${Math.round(100 * p)}%`; }
function extension(name) { const dot = name.lastIndexOf("."); return dot < 0 ? "" : name.slice(dot).toLowerCase(); }

// --- choosing photos ---------------------------------------------------------------------------------------------

function problemOf(file) {
  if (!config.formats.includes(extension(file.name))) return "not a photo this page takes (JPEG, PNG, HEIC, WebP)";
  if (file.size > config.max_upload_mb * 1048576) return `larger than the ${config.max_upload_mb} MB a photo may have here`;
  return null;
}

function addFiles(files) {
  for (const file of files) {
    if (!chosen.some((f) => f.name === file.name && f.size === file.size)) chosen.push(file);
  }
  showChosen();
}

function showChosen() {
  const list = $("chosen");
  list.replaceChildren();
  chosen.forEach((file, i) => {
    const problem = problemOf(file);
    const remove = element("button", { type: "button", class: "link", text: "remove", "aria-label": `remove ${file.name}` });
    remove.addEventListener("click", () => { chosen.splice(i, 1); showChosen(); });
    list.append(element("li", problem ? { class: "refused" } : {}, element("span", { text: file.name }),
      element("small", { text: problem ? ` ${problem} (will be left out)` : ` ${fileSize(file.size)}` }), " ", remove));
  });
  $("start").disabled = !chosen.some((file) => !problemOf(file));
}

function setUpPicking() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); addFiles(event.dataTransfer.files); });
  // a photo dropped beside the zone must not make the browser leave the page to show it
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

function showStrengths() {
  const box = $("strengths");
  for (const strength of config.strengths) {
    const input = element("input", { type: "radio", name: "strength", value: strength.name, id: `strength-${strength.name}` });
    input.checked = strength.name === config.strength;
    box.append(element("label", { for: input.id }, input, element("strong", { text: ` ${strength.name}` }),
      element("span", { text: strength.help ? `: ${strength.help}` : "" })));
  }
}

// --- one job -----------------------------------------------------------------------------------------------------

function start() {
  const form = new FormData();
  const taken = chosen.filter((file) => !problemOf(file));
  for (const file of taken) form.append("files", file, file.name);
  form.append("strength", document.querySelector("input[name=strength]:checked").value);
  $("start").disabled = true;
  $("message").textContent = "";
  const bar = $("upload");
  bar.value = 0;
  bar.hidden = false;
  const request = new XMLHttpRequest();
  request.open("POST", "/api/jobs");
  for (const [key, value] of Object.entries(HEADERS)) request.setRequestHeader(key, value);
  request.upload.addEventListener("progress", (event) => { if (event.lengthComputable) bar.value = event.loaded / event.total; });
  request.upload.addEventListener("load", () => bar.removeAttribute("value"));  // sent: the server reads the photos
  request.addEventListener("load", () => {
    bar.hidden = true;
    let answer = {};
    try { answer = JSON.parse(request.responseText); } catch { answer = { detail: request.statusText }; }
    if (request.status !== 201) {
      $("message").textContent = answer.detail || `the server answered ${request.status}`;
      $("start").disabled = false;
      return;
    }
    const refused = chosen.filter((file) => problemOf(file)).map((file) => `${file.name}: ${problemOf(file)}`);
    follow(answer, refused);
  });
  request.addEventListener("error", () => {
    bar.hidden = true;
    $("message").textContent = "the scenepriv server cannot be reached: is it still running?";
    $("start").disabled = false;
  });
  request.send(form);
}

function follow(view, refusedHere = []) {
  jobId = view.id;
  sessionStorage.setItem("scenepriv-job", jobId);
  $("pick").hidden = true;
  $("job").hidden = false;
  $("results").replaceChildren();
  cards.clear();
  for (const message of refusedHere) $("results").append(element("p", { class: "error", text: message }));
  show(view);
  poll();
}

async function poll() {
  clearTimeout(timer);
  if (!jobId) return;
  let view;
  try {
    const response = await fetch(`/api/jobs/${encodeURIComponent(jobId)}`);
    if (response.status === 404) { gone("These photos are no longer on the server (expired, or the server was restarted)."); return; }
    view = await response.json();
  } catch {
    $("job-state").textContent = "the scenepriv server cannot be reached: is it still running?";
    timer = setTimeout(poll, 3000);
    return;
  }
  show(view);
  timer = setTimeout(poll, view.state === "done" ? 15000 : 700);
}

function gone(message) {
  sessionStorage.removeItem("scenepriv-job");
  $("job-state").textContent = message;
  $("zip").hidden = true;
  $("forget").hidden = true;
  for (const card of cards.values()) {
    if (!card.download) continue;
    card.download.hidden = true;
    card.downloaded.textContent = "";
  }
}

// How far a photo is (0-1) and what it is doing, in words.
function progressOf(file, maxSteps) {
  if (file.state === "protecting" && file.shrinking) return { fraction: null, text: "protecting… making the change smaller" };
  if (file.state === "protecting" && file.step) {
    const bound = maxSteps && file.step <= maxSteps ? ` of at most ${maxSteps}` : "";
    return { fraction: maxSteps ? Math.min(file.step / maxSteps, 1) : null, text: `protecting… step ${file.step}${bound}` };
  }
  if (file.state === "protecting") return { fraction: 0, text: "protecting…" };
  if (file.state === "checking") return { fraction: null, text: "checking what the protection holds against…" };
  return null;
}

function show(view) {
  const working = view.files.find((file) => file.state === "protecting" || file.state === "checking");
  let state;
  if (view.state === "waiting") state = view.ahead ? `Waiting: ${view.ahead} job${view.ahead > 1 ? "s" : ""} ahead of yours` : "Starting";
  else if (view.state === "running") {
    const doing = working ? `${working.state === "checking" ? "Checking" : "Protecting"} ${working.name}` : "Working";
    state = `${doing}: ${view.done} of ${view.total} finished`;
  }
  else {
    const protectedCount = view.files.filter((file) => file.result && file.result.verdict.level !== "fails").length;
    state = `Done: ${protectedCount} of ${view.total} photo${view.total > 1 ? "s" : ""} protected; below each, what it holds against`;
  }
  $("job-state").textContent = state;
  const partial = working ? ((progressOf(working, view.max_steps) || {}).fraction ?? 0.9) : 0;
  $("progress").value = view.total ? Math.min(1, (view.done + 0.95 * partial) / view.total) : 0;
  for (const file of view.files) showFile(file, view.max_steps);
  const zip = $("zip");
  zip.hidden = !view.zip;
  if (view.zip) zip.href = view.zip;
  $("forget").hidden = view.files_removed;
  $("kept").textContent = view.files_removed ? "The photos have been deleted from the server. The results stay on this page until you leave it."
    : view.expires_in != null ? keptUntil(view.expires_in)
    : `The server keeps the protected photos ${config.expiry_minutes} min after they are ready, then deletes them.`;
}

function keptUntil(seconds) {
  const at = new Date(Date.now() + seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `The server keeps these photos until ${at} (in ${Math.max(1, Math.round(seconds / 60))} min), so you can ` +
    "download them again; then it deletes them, as it does when it stops. To delete them sooner: “Delete these " +
    "photos from the server now”.";
}

const STATES = { waiting: "waiting", done: "done", failed: "not protected" };

function showFile(file, maxSteps) {
  let card = cards.get(file.index);
  if (!card) {
    const node = element("article", { class: "photo", "data-index": String(file.index) });
    card = { node, title: element("h3", { text: file.name }), state: element("span", { class: "state" }),
      bar: element("progress", { class: "steps", max: "1", "aria-label": `progress of ${file.name}` }),
      message: element("p", { class: "error" }), body: element("div"), download: null, filled: false };
    node.append(element("div", { class: "row" }, card.title, card.state, card.bar), card.message, card.body);
    $("results").append(node);
    cards.set(file.index, card);
  }
  card.node.dataset.state = file.state;
  card.message.textContent = file.message || "";
  if (file.result && !card.filled) {
    card.filled = true;
    fillResult(card, file);
  }
  const progress = file.result ? null : progressOf(file, maxSteps);
  card.state.textContent = file.result ? file.result.verdict.badge : progress ? progress.text : STATES[file.state] || file.state;
  card.bar.hidden = !progress;
  if (progress && progress.fraction != null) card.bar.value = progress.fraction;
  else if (progress) card.bar.removeAttribute("value");  // no measure: the bar moves on its own
  if (card.download) {
    card.download.hidden = !file.download;
    card.downloaded.textContent = file.download && file.downloaded ? "downloaded; you can download it again" : "";
  }
}

function fillResult(card, file) {
  const result = file.result;
  card.node.dataset.verdict = result.verdict.level;
  card.download = element("a", { class: "button download", href: file.download || "#", download: file.output_name,
    text: `Download ${file.output_name}` });
  card.download.addEventListener("click", () => setTimeout(poll, 1500));
  card.downloaded = element("span", { class: "note" });
  card.body.append(
    element("p", { class: "verdict", text: result.verdict.text }),
    element("p", {}, "The classifier it was protected against saw ", element("strong", { text: `“${result.before.name}”` }),
      " in the original; in the protected photo it sees ", element("strong", { text: `“${result.after.name}”` }), "."),
    element("p", { class: "visibility", text: result.visibility }),
    compare(result),
    element("p", { class: "row" }, card.download, card.downloaded),
    ...result.warnings.map((warning) => element("p", { class: "note", text: `Note: ${warning}` })),
    details(result),
  );
}

function compare(result) {
  const crop = result.crop;
  const frame = element("div", { class: "frame" });
  const before = element("img", { src: crop.before, width: crop.width, height: crop.height, alt: "original", draggable: "false" });
  const after = element("img", { src: crop.after, width: crop.width, height: crop.height, alt: "protected", class: "after", draggable: "false" });
  const handle = element("div", { class: "handle" });
  frame.append(before, after, handle);
  const slider = element("input", { type: "range", min: "0", max: "100", value: "50", step: "0.5",
    "aria-label": "slide between the original (left) and the protected photo (right)" });
  const set = (at) => { frame.style.setProperty("--at", `${at}%`); slider.value = String(at); };
  slider.addEventListener("input", () => set(Number(slider.value)));
  const drag = (event) => {
    if (event.type === "pointermove" && !event.buttons) return;
    const box = frame.getBoundingClientRect();
    set(Math.min(100, Math.max(0, (100 * (event.clientX - box.left)) / box.width)));
  };
  frame.addEventListener("pointerdown", drag);
  frame.addEventListener("pointermove", drag);
  let zoom = 1;
  const figure = element("figure", { class: "compare" });
  const size = () => {
    frame.style.width = `${crop.width * zoom}px`;
    frame.style.height = `${crop.height * zoom}px`;
    figure.style.width = `${Math.max(crop.width * zoom, 256)}px`;
  };
  const zoomButton = element("button", { type: "button", class: "secondary small", text: "zoom 200%" });
  zoomButton.addEventListener("click", () => {
    zoom = zoom === 1 ? 2 : 1;
    zoomButton.textContent = zoom === 1 ? "zoom 200%" : "zoom 100%";
    frame.classList.toggle("zoomed", zoom === 2);
    size();
  });
  size();
  set(50);
  figure.append(frame, slider, element("div", { class: "ends" }, element("span", { text: "◀ original" }),
    element("span", { text: "protected ▶" })), element("figcaption", { text:
      `The most changed ${crop.width}×${crop.height} region at 100%, from (${crop.left}, ${crop.top}) of the ` +
      `${result.size[0]}×${result.size[1]} photo: slide to compare.` }), zoomButton);
  return figure;
}

function number(value, digits) { return value == null ? "not measured" : value.toFixed(digits); }

// The jargon, folded: models, top-1 classes and probabilities, the checks table, butteraugli, PSNR, SSIM, steps.
function details(result) {
  const models = result.checks.map((verdict) => verdict.model + (verdict.protected_against ? " (protected against)" : ""));
  const head = element("tr", {}, element("th", { text: "top-1 under each check (✓: differs from the original's)" }),
    ...models.map((model) => element("th", { text: model })));
  const rows = result.checks[0].checks.map((row, i) => element("tr", {}, element("td", { text: row.check }),
    ...result.checks.map((verdict) => {
      const check = verdict.checks[i];
      return element("td", { class: check.holds ? "holds" : "fails",
        title: `original: ${check.original_top1}; protected: ${check.top1}`, text: check.holds ? `✓ ${check.top1}` : `✗ ${check.top1}` });
    })));
  const psnr = result.psnr == null ? "∞" : result.psnr.toFixed(1);
  return element("details", { class: "details" }, element("summary", { text: "Technical details" }),
    element("p", { text: `Top-1 of ${result.checks[0].model} before: ${result.before.name} (${percent(result.before.probability)}); ` +
      `after: ${result.after.name} (${percent(result.after.probability)}); ${result.iterations} iterations.` }),
    element("p", { text: `Butteraugli ${number(result.butteraugli, 2)} (1.0: just noticeable; JPEG quality 85 of a ` +
      `typical photo scores 1.1-1.6, quality 75 2.5-2.8); PSNR ${psnr} dB; SSIM ${number(result.ssim, 4)}.` }),
    element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows)),
    element("p", { class: "note", text: `${result.holds} of ${result.checked} checks hold: the file as saved and ` +
      "re-encoded as JPEG at quality 75 and 50, at full and half size, each judged by every classifier." }));
}

function again() {
  clearTimeout(timer);
  jobId = null;
  sessionStorage.removeItem("scenepriv-job");
  chosen = [];
  showChosen();
  $("job").hidden = true;
  $("pick").hidden = false;
}

async function forget() {
  if (!jobId) return;
  await fetch(`/api/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE", headers: HEADERS });
  clearTimeout(timer);
  gone("Deleted from the server.");
}

// What the classifiers protected against name, and how to protect against a scene classifier instead.
function showClassifier() {
  const about = $("classifier");
  if (config.names === "scenes") {
    about.textContent = "This server protects against a scene classifier (Places365), which names places such as " +
      "“bedroom” or “bar”.";
  } else if (config.names === "objects") {
    about.append("This server protects against an ImageNet classifier, which names objects rather than places " +
      "(a photo it sees as “monastery” may come out as “wood rabbit”). To protect against a scene classifier, " +
      "start it with ", element("code", { text: "scenepriv serve --model resnet50-places365" }),
      " (the model is downloaded on first use).");
  }
}

async function main() {
  config = await (await fetch("/api/config")).json();
  $("formats").textContent = `JPEG, PNG, HEIC, WebP; up to ${config.max_upload_mb} MB each, ${config.max_photos} at once`;
  showClassifier();
  showStrengths();
  setUpPicking();
  $("start").addEventListener("click", start);
  $("again").addEventListener("click", again);
  $("forget").addEventListener("click", forget);
  $("zip").addEventListener("click", () => setTimeout(poll, 1500));
  const earlier = sessionStorage.getItem("scenepriv-job");  // this tab's job, after a reload
  if (earlier) {
    const response = await fetch(`/api/jobs/${encodeURIComponent(earlier)}`);
    if (response.ok) follow(await response.json());
    else sessionStorage.removeItem("scenepriv-job");
  }
}

main();
