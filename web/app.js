// Shazzam for Clothes: pick, drop, paste or shoot a photo; see every garment found outlined and
// the similar items of the one chosen. Plain browser JavaScript, no build step.
"use strict";

const API = document.querySelector('meta[name="shazzam-api"]').content.replace(/\/$/, "");
// Bodies above this go through POST /uploads (a search takes 4.5 MB: Lambda's 6 MB less base64's third).
const DIRECT_UPLOAD_LIMIT = 4 * 1024 * 1024;
const MAX_PHOTO_BYTES = 20 * 1024 * 1024;
// Other names phones give a photo's type (Android galleries say image/jpg): POST /uploads is asked
// for the type they name, the one its grant then holds the upload to.
const PHOTO_TYPE_ALIASES = { "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png", "image/x-ms-bmp": "image/bmp" };

// A stalled link (a phone in a lift) neither answers nor fails, and fetch would wait for ever. A search
// answers within 30 s (API Gateway gives up at 29 s): one not answered 90 s after its photo is sent is
// not coming. The photo goes by XMLHttpRequest, which tells how far it has gone: however slowly it
// goes (GPRS sends under 4 kB/s), it is given up only once no byte of it has gone for 45 s. It counts
// a byte gone once the system has taken it, though, and the system's send buffer can take most of a
// photo at once: once the photo is said to have gone, its answer has 90 s, and no less than 90 s and
// its bytes' time at 4 kB/s (about a poor 2G upload) from when it began to go. A photo sent first by
// /uploads has no longer than its grant lasts (api.UPLOAD_EXPIRES_S, 15 minutes): the store refuses
// it after that.
const ANSWER_DEADLINE_MS = 90 * 1000;
const UPLOAD_STALL_MS = 45 * 1000;
const SLOWEST_BYTES_PER_MS = 4;
const UPLOAD_GRANT_MS = 15 * 60 * 1000;
const deadlineFor = (bytes) => ANSWER_DEADLINE_MS + bytes / SLOWEST_BYTES_PER_MS;

const $ = (id) => document.getElementById(id);
// search: the latest search's number; an answer to an older one (a photo or filters changed since)
// is dropped. inFlight: the running search's AbortController, which aborts it when a newer one
// starts, and the photo and parameters it is for. options: the category and shop lists, loading.
// settling: the timer of a search a list browsed with the keys waits on, which any search replaces.
const state = { photo: null, answer: null, chosen: 0, photoUrl: null, search: 0, inFlight: null, options: null, error: null, settling: null };

class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title);
    this.status = status;
    this.title = title;
  }
}

// What to say when an error answer is not the API's own (API Gateway's throttling and timeouts
// answer {"message": ...}, a proxy HTML).
const PLAIN_ERRORS = {
  429: ["The server is busy", "Try again in a moment."],
  502: ["Something went wrong on our side", "Try again in a moment."],
  503: ["The service is unavailable", "Try again in a moment."],
  504: ["The search took too long", "Try again, or with a smaller photo."],
};

// fetch, whose own error ("Failed to fetch") says nothing to a shopper; a request with a photo to
// send (options.sending) goes by send.
async function reach(url, options) {
  try {
    return await (options.sending ? send(url, options) : fetch(url, options));
  } catch (error) {
    if (error.name === "AbortError") throw error; // a newer search replaced this one
    throw new ApiError(0, "Cannot reach the server", "Check your connection and try again.");
  }
}

// A POST as fetch makes it, answering a Response or failing as fetch does, by XMLHttpRequest, which
// (unlike fetch) tells how far the body has gone: sending.progress(fraction) is called as it goes
// (from 0, before the first byte), sending.sent() once all of it has. Its progress listener makes a
// request to another origin (the bucket, a static page's API) a preflighted one; both answer it.
function send(url, { method, body, signal, sending }) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    request.responseType = "blob";
    request.upload.addEventListener("progress", (event) => event.total && sending.progress(event.loaded / event.total));
    request.upload.addEventListener("load", () => sending.sent());
    request.addEventListener("load", () => {
      const headers = new Headers();
      for (const line of request.getAllResponseHeaders().split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
      }
      // The store's 204 has no body, and a Response refuses even an empty one for it.
      resolve(new Response(request.response.size ? request.response : null, { status: request.status, headers }));
    });
    request.addEventListener("error", () => reject(new TypeError("Failed to fetch")));
    const replaced = () => reject(new DOMException("A newer search replaced this one", "AbortError"));
    request.addEventListener("abort", replaced);
    if (signal.aborted) return replaced(); // an unsent request's abort() fires no event
    signal.addEventListener("abort", () => request.abort());
    sending.progress(0);
    request.send(body);
  });
}

async function api(path, options = {}) {
  const response = await reach(API + path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const [title, detail] = PLAIN_ERRORS[response.status] || [`Error ${response.status}`, "Try again in a moment."];
    throw new ApiError(response.status, (body && body.title) || title, (body && (body.detail || body.message)) || detail);
  }
  // Every answer of the API is JSON; a Wi-Fi login page or a proxy answers HTML with a 200.
  if (body === null) throw new ApiError(response.status, "The server's answer could not be read", "Try again in a moment.");
  return body;
}

// --- the options: categories and shops come from the API -------------------------------------

async function fetchOptions() {
  const [categories, health] = await Promise.all([api("/categories"), api("/health")]);
  for (const category of categories.categories) {
    $("category").append(new Option(`${category.name} (${category.items})`, category.name));
  }
  for (const shop of health.shops) $("shop").append(new Option(shop, shop));
}

// Once; a failed load (the server was unreachable a moment) is tried again a few seconds later and
// before each search, so the lists do not stay empty for the rest of the visit.
function loadOptions() {
  state.options = state.options || fetchOptions().catch((error) => {
    state.options = null;
    throw error;
  });
  return state.options;
}

function keepLoadingOptions(delay = 2000, shown = null) {
  loadOptions()
    .then(() => {
      if (shown && state.error === shown) showError(null); // the server is back: the error is stale
    })
    .catch((error) => {
      if (!shown) {
        showError(error);
        shown = error;
      }
      if (delay <= 60000) setTimeout(() => keepLoadingOptions(delay * 2, shown), delay);
    });
}

// --- searching ---------------------------------------------------------------------------------

function searchParameters() {
  const parameters = {};
  for (const name of ["category", "min_price", "max_price", "shop"]) {
    const value = $(name).value.trim();
    if (value) parameters[name] = value;
  }
  return parameters;
}

// The API refuses a min price above the max (422); the browser says so before asking, as it does
// for a price it cannot read.
function checkPriceRange() {
  const min = $("min_price").valueAsNumber;
  const max = $("max_price").valueAsNumber;
  $("max_price").setCustomValidity(min > max ? "The max price is below the min price." : "");
}

async function uploadFirst(photo, signal, sending) {
  const upload = await api("/uploads", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ content_type: PHOTO_TYPE_ALIASES[photo.type] || photo.type || "image/jpeg" }),
    signal,
  });
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
  form.append("file", photo);
  const stored = await reach(upload.url, { method: "POST", body: form, signal, sending });
  if (!stored.ok) throw new ApiError(stored.status, "Upload failed", "The photo could not be uploaded; try a smaller one.");
  return upload.key;
}

async function search() {
  clearTimeout(state.settling);
  if (!state.photo) return;
  const parameters = searchParameters();
  const asked = JSON.stringify(parameters);
  const running = state.inFlight;
  // Apply tapped again while this same search runs (a slow link, an impatient thumb): it runs on;
  // starting it over would throw its upload away.
  if (running && running.photo === state.photo && running.asked === asked && $("filters").checkValidity()) return;
  const ticket = ++state.search; // from here on, an older search's answer is dropped
  if (running) running.controller.abort();
  // A price the browser cannot read ("12e"), or a range the API refuses, is not sent: say so,
  // search nothing.
  if (!$("filters").reportValidity()) {
    state.inFlight = null;
    setBusy(false);
    return;
  }
  const controller = new AbortController();
  state.inFlight = { controller, photo: state.photo, asked };
  showError(null);
  setBusy(true, "Looking for garments…");
  loadOptions().catch(() => {}); // if the lists failed to load, try again now
  // The running request's deadline: once it passes, the search is aborted and says why.
  let deadline = null;
  let expired = false;
  const giveUpAfter = (ms) => {
    clearTimeout(deadline);
    deadline = setTimeout(() => {
      expired = true;
      controller.abort();
    }, ms);
  };
  // While the photo goes, the deadline is UPLOAD_STALL_MS after its latest progress, but no later
  // than its grant lapses, where it has one; once it is said to have gone, its answer has
  // ANSWER_DEADLINE_MS, and no less than until answerBy, while the rest of it may still be on its way.
  let sendBy = Infinity;
  let answerBy = 0;
  const sending = {
    progress: (fraction) => {
      giveUpAfter(Math.min(UPLOAD_STALL_MS, sendBy - Date.now()));
      showUpload(fraction);
    },
    sent: () => {
      giveUpAfter(Math.max(ANSWER_DEADLINE_MS, answerBy - Date.now()));
      setBusy(true, "Looking for garments…");
    },
  };
  try {
    let answer;
    if (state.photo.size > DIRECT_UPLOAD_LIMIT) {
      // Counted from before the grant is asked for, which it lapses a little after.
      sendBy = Date.now() + UPLOAD_GRANT_MS;
      answerBy = Date.now() + Math.min(deadlineFor(state.photo.size), UPLOAD_GRANT_MS + ANSWER_DEADLINE_MS);
      giveUpAfter(ANSWER_DEADLINE_MS);
      const key = await uploadFirst(state.photo, controller.signal, sending);
      giveUpAfter(ANSWER_DEADLINE_MS);
      answer = await api("/search", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ upload: key, ...parameters }),
        signal: controller.signal,
      });
    } else {
      const form = new FormData();
      form.append("image", state.photo, state.photo.name || "photo");
      for (const [name, value] of Object.entries(parameters)) form.append(name, value);
      answerBy = Date.now() + deadlineFor(state.photo.size);
      answer = await api("/search", { method: "POST", body: form, signal: controller.signal, sending });
    }
    if (ticket !== state.search) return;
    state.answer = answer;
    // The garment chosen stays chosen while it is there; after an answer of none, the first is.
    state.chosen = Math.max(0, Math.min(state.chosen, answer.garments.length - 1));
    render();
  } catch (error) {
    if (ticket === state.search) {
      showError(expired ? new ApiError(0, "No answer from the server", "Check your connection and try again.") : error);
      clearAnswer(); // the results shown are not those of the filters now asked for
    }
  } finally {
    clearTimeout(deadline);
    if (ticket === state.search) {
      state.inFlight = null;
      setBusy(false);
    }
  }
}

// The arrow keys on a closed list (Chromium, Firefox) change it, and fire change, at each press, while
// a keyboard or screen-reader user browses its options: each started a search that aborted the one
// before, and the status said "Looking for garments…" again at every option heard. A change made by
// a key (between its keydown and keyup) is searched once the keys have rested SETTLE_MS; an option
// picked from the opened list (a pointer, a finger) is searched at once.
const SETTLE_MS = 500;

function searchOnChange(list) {
  let keyDown = false;
  list.addEventListener("keydown", () => (keyDown = true));
  list.addEventListener("keyup", () => (keyDown = false));
  list.addEventListener("blur", () => (keyDown = false)); // Tab's keyup lands on the next field
  list.addEventListener("change", () => {
    clearTimeout(state.settling);
    if (keyDown) state.settling = setTimeout(search, SETTLE_MS);
    else search();
  });
}

function choosePhoto(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(new ApiError(415, "That is not a photo", `${file.name || "The file"} is ${file.type}; choose a JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP or TIFF image.`));
    return;
  }
  if (file.size > MAX_PHOTO_BYTES) {
    // In the limit's unit (MB of 1024 × 1024 bytes, as the server counts), rounded up: a photo just
    // over the limit must not read as the limit itself.
    const megabytes = (Math.ceil((file.size / 1024 / 1024) * 10) / 10).toFixed(1);
    showError(new ApiError(413, "That photo is too large", `It is ${megabytes} MB; photos up to ${MAX_PHOTO_BYTES / 1024 / 1024} MB work.`));
    return;
  }
  state.photo = file;
  state.chosen = 0;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  // Show the photo at once; its outlines and results follow when the search answers.
  $("photo").hidden = false;
  $("stage").removeAttribute("aria-label"); // the photo names itself again
  $("photo").src = state.photoUrl;
  $("stage").style.removeProperty("--photo-ratio");
  clearAnswer();
  $("result").hidden = false;
  $("apply").disabled = false;
  search();
}

// --- showing -------------------------------------------------------------------------------------

// The outlines, tabs and results shown taken away: an older photo's, or those a failed search
// leaves, which are not of the filters now asked for.
function clearAnswer() {
  const focused = answerFocused();
  state.answer = null;
  for (const id of ["boxes", "garments", "items"]) $(id).replaceChildren();
  $("summary").textContent = "";
  if (focused) $("apply").focus(); // the way to search again, not the page's start
}

// Whether the garments' tabs or the results hold the focus: replaced, they would drop it to the
// page's start, where a keyboard's next Tab begins.
function answerFocused() {
  return $("garments").contains(document.activeElement) || $("items").contains(document.activeElement);
}

function setBusy(busy, message = "") {
  document.body.classList.toggle("busy", busy);
  $("result").setAttribute("aria-busy", String(busy));
  $("status").textContent = message;
  $("upload").hidden = true;
}

// How much of the photo has gone: the bar follows every step; the status, which a screen reader
// reads out, says it in steps of 10 %, not many times a second.
function showUpload(fraction) {
  const bar = $("upload");
  bar.hidden = false;
  bar.value = fraction;
  const said = `Uploading the photo… ${Math.floor(fraction * 10) * 10} %`;
  if ($("status").textContent !== said) $("status").textContent = said;
}

function showError(error) {
  state.error = error;
  const box = $("error");
  box.hidden = !error;
  box.replaceChildren();
  if (!error) return;
  const title = document.createElement("strong");
  title.textContent = error.title || "Something went wrong";
  box.append(title);
  if (error.message && error.message !== title.textContent) {
    const detail = document.createElement("span");
    detail.textContent = error.message;
    box.append(detail);
  }
}

function price(item) {
  if (item.price === null) return "Price on the shop's page";
  if (!item.currency) return item.price; // the shop named no currency: no symbol made up
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: item.currency }).format(Number(item.price));
  } catch {
    return `${item.price} ${item.currency || ""}`.trim();
  }
}

function garmentName(garment) {
  // A garment the catalogue has no category for (a bag, glasses, a belt) is named by what the detector saw.
  return garment.category || garment.label || "garment";
}

function garmentLabel(garment, index) {
  if (garment.searchable === false) return `${index + 1}. ${garmentName(garment)} (not sold here yet)`;
  const how = garment.category_source === "request" ? "as you chose" : `${Math.round(garment.confidence * 100)}% sure`;
  return `${index + 1}. ${garmentName(garment)} (${how})`;
}

function render() {
  const { answer } = state;
  $("result").hidden = false;
  const { width, height } = answer.image;
  $("stage").style.setProperty("--photo-ratio", String(width / height)); // the photo's shape, never squashed
  hideTurnedPhoto();

  const boxes = $("boxes");
  const tabs = $("garments");
  const focused = answerFocused(); // the new chosen tab takes the focus back
  boxes.replaceChildren();
  tabs.replaceChildren();
  // Smaller outlines stack above larger ones, so a dress inside a coat's outline can be clicked;
  // the outlines stay in the list's order, as the tabs do.
  const area = ({ box: [left, top, right, bottom] }) => (right - left) * (bottom - top);
  const largestFirst = answer.garments.map((garment, index) => index).sort((a, b) => area(answer.garments[b]) - area(answer.garments[a]));
  answer.garments.forEach((garment, index) => {
    const [left, top, right, bottom] = garment.box;
    const outline = document.createElement("button");
    outline.type = "button";
    outline.className = "box";
    outline.tabIndex = -1; // the tabs below are the keyboard's way in; the outlines are for pointing
    outline.style.left = `${(100 * left) / width}%`;
    outline.style.top = `${(100 * top) / height}%`;
    outline.style.width = `${(100 * (right - left)) / width}%`;
    outline.style.height = `${(100 * (bottom - top)) / height}%`;
    outline.style.zIndex = String(largestFirst.indexOf(index) + 1);
    outline.setAttribute("aria-label", garmentLabel(garment, index));
    outline.dataset.label = `${index + 1} ${garmentName(garment)}`;
    outline.addEventListener("click", () => choose(index));
    boxes.append(outline);

    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "garment";
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-controls", "similar");
    tab.textContent = garmentLabel(garment, index);
    tab.addEventListener("click", () => choose(index));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      choose((index + step + answer.garments.length) % answer.garments.length, true);
    });
    tabs.append(tab);
  });
  if (!answer.garments.length) {
    $("summary").textContent = "No garment found in this photo. Try one where the clothes fill more of the picture.";
    $("items").replaceChildren();
    if (focused) $("apply").focus();
    return;
  }
  choose(state.chosen, focused);
}

// A photo whose EXIF orientation the server applies and this browser does not (a WebP, a PNG whose
// eXIf comes after its pixels) shows a quarter turned from the answer's shape, stretched into it
// under outlines of other parts. It is hidden, as one the browser cannot decode is: the outlines
// show on the blank stage. Which way it is turned is not known here, so it is not turned back.
function hideTurnedPhoto() {
  const photo = $("photo");
  if (!state.answer || !photo.naturalWidth) return; // not loaded yet: its load event looks again
  const { width, height } = state.answer.image;
  const portrait = (w, h) => Math.sign(h - w);
  if (portrait(width, height) * portrait(photo.naturalWidth, photo.naturalHeight) === -1) hidePhoto();
}

// The photo taken off the stage, its broken-image icon and alt text with it (an img without a
// picture still shows them); the stage takes its name, so a screen reader still hears "Your photo".
function hidePhoto() {
  const photo = $("photo");
  photo.removeAttribute("src");
  photo.hidden = true;
  $("stage").setAttribute("aria-label", photo.alt);
}

function choose(index, focus = false) {
  state.chosen = index;
  const garment = state.answer.garments[index];
  // The results, replaced below while they hold the focus (an outline clicked, or a tab in a browser
  // whose click moves no focus: Safari, some screen readers), would drop it to the page's start: the
  // chosen tab takes it, as it does from a tab no longer chosen.
  const focusTab = focus || answerFocused();
  [...$("boxes").children].forEach((box, i) => box.classList.toggle("chosen", i === index));
  [...$("garments").children].forEach((tab, i) => {
    tab.setAttribute("aria-selected", String(i === index));
    tab.tabIndex = i === index ? 0 : -1;
    if (i === index && focusTab) tab.focus();
  });
  const n = garment.results.length;
  $("summary").textContent = n
    ? `${n} similar ${garment.category} item${n === 1 ? "" : "s"} · searched in ${Math.round(state.answer.took_ms)} ms`
    : garment.searchable === false
      ? `The catalogue sells no ${garmentName(garment)} yet. Pick another garment.`
      : "Nothing matches in this category with these filters. Widen the price range or pick another shop.";
  $("items").replaceChildren(...garment.results.map(card));
}

function card(item) {
  const li = document.createElement("li");
  li.className = "item";
  const link = document.createElement("a");
  link.href = item.url;
  link.target = "_blank";
  link.rel = "noopener";
  const picture = document.createElement("img");
  picture.src = item.image_url;
  picture.alt = ""; // the link's title names it; the picture's own name would read the title twice
  picture.loading = "lazy";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = item.title;
  const cost = document.createElement("span");
  cost.className = "price";
  cost.textContent = price(item);
  const shop = document.createElement("span");
  shop.className = "shop";
  shop.textContent = item.shop;
  const newTab = document.createElement("span");
  newTab.className = "visually-hidden";
  newTab.textContent = "(opens in a new tab)";
  link.append(picture, title, cost, shop, newTab);
  li.append(link);
  return li;
}

// --- input: pick, drop, paste, camera; the filter form -------------------------------------------

$("file").addEventListener("change", (event) => choosePhoto(event.target.files[0]));
$("camera").addEventListener("change", (event) => choosePhoto(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choosePhoto(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const file = [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
  if (file) choosePhoto(file);
});
$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
$("min_price").addEventListener("input", checkPriceRange);
$("max_price").addEventListener("input", checkPriceRange);
searchOnChange($("category"));
searchOnChange($("shop"));
$("photo").addEventListener("load", () => {
  const { naturalWidth: width, naturalHeight: height } = $("photo");
  // The answer's shape, once it has come, is the one its outlines are drawn on.
  if (state.answer) hideTurnedPhoto();
  else if (width && height) $("stage").style.setProperty("--photo-ratio", String(width / height));
});
$("photo").addEventListener("error", () => {
  // Browsers without HEIC support cannot show the photo; the outlines still show on a blank stage.
  hidePhoto();
});

keepLoadingOptions();
