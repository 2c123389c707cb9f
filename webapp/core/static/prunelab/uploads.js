// Big files in: a small client of the tus resumable-upload protocol 1.0.0 (https://tus.io/protocols/resumable-upload)
// for the upload forms (data-tus="dataset" or "badnet"). The file goes to /api/uploads/ in chunks with a progress
// bar; a failed chunk is retried after a pause from the offset the server reports (HEAD), and the upload's URL is
// kept in localStorage under the file's name, size and date, so choosing the same file after a reload resumes it.
// Then the form is submitted with the upload's id instead of the file, and the server checks the file as it
// checks any upload. Without this script the form sends the file in one multipart request, as before.
"use strict";

const TUS_VERSION = "1.0.0";
const CHUNK_BYTES = 8 * 2 ** 20; // the server takes up to 16 MiB a request (PRUNELAB_MAX_UPLOAD_CHUNK_BYTES)
const PAUSES_S = [1, 2, 4, 8, 15, 30, 30, 30]; // after each failure in a row; then the upload stops and says so

class Refused extends Error {} // the server said no: trying again cannot help
class Broken extends Error {} // the connection failed, or the server could not answer: try again

function send(method, url, headers, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    if (onProgress) xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = xhr.onabort = xhr.ontimeout = () => reject(new Broken("the connection failed"));
    xhr.send(body ?? null);
  });
}

function detail(xhr) {
  try {
    return JSON.parse(xhr.responseText).detail || `the server answered ${xhr.status}`;
  } catch {
    return `the server answered ${xhr.status}`;
  }
}

// Answers worth another try: a conflict of offsets (409) or a lock (423) settle with HEAD; 5xx may pass.
function judge(xhr, expected) {
  if (xhr.status === expected) return xhr;
  if (xhr.status === 409 || xhr.status === 423 || xhr.status >= 500) throw new Broken(detail(xhr));
  throw new Refused(detail(xhr));
}

function base64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

function megabytes(bytes) {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GB` : `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

async function tusUpload(file, kind, endpoint, csrf, report) {
  const headers = { "Tus-Resumable": TUS_VERSION, "X-CSRFToken": csrf };
  const key = `prunelab-tus:${kind}:${file.name}:${file.size}:${file.lastModified}`;
  const offsetOf = async (url) => {
    const xhr = await send("HEAD", url, headers);
    if (xhr.status === 404) throw new Refused(`${file.name}: the upload is gone (used, deleted or expired); choose the file again.`);
    judge(xhr, 200);
    return Number(xhr.getResponseHeader("Upload-Offset"));
  };
  let url = localStorage.getItem(key);
  let offset = null;
  if (url) {
    try {
      offset = await offsetOf(url);
      report(offset, `Resuming ${file.name} from ${megabytes(offset)}`);
    } catch {
      localStorage.removeItem(key); // gone, or not this user's: start afresh
      offset = null;
    }
  }
  if (offset === null) {
    const metadata = `filename ${base64(file.name)},kind ${base64(kind)}`;
    const created = judge(
      await send("POST", endpoint, { ...headers, "Upload-Length": String(file.size), "Upload-Metadata": metadata }),
      201,
    );
    url = new URL(created.getResponseHeader("Location"), window.location.href).href;
    localStorage.setItem(key, url);
    offset = 0;
  }
  let failures = 0;
  while (offset < file.size) {
    try {
      const chunk = file.slice(offset, offset + CHUNK_BYTES);
      const start = offset;
      const patched = judge(
        await send(
          "PATCH",
          url,
          { ...headers, "Upload-Offset": String(start), "Content-Type": "application/offset+octet-stream" },
          chunk,
          (loaded) => report(start + loaded),
        ),
        204,
      );
      offset = Number(patched.getResponseHeader("Upload-Offset"));
      failures = 0;
      report(offset);
    } catch (error) {
      if (error instanceof Refused) throw error;
      if (failures >= PAUSES_S.length) {
        throw new Refused(
          `${file.name}: the connection failed ${failures} times in a row (${error.message}). ` +
            "Submit again (or reload and choose the same file): the upload resumes where it stopped.",
        );
      }
      const pause = PAUSES_S[failures++];
      report(offset, `The connection failed (${error.message}); trying again in ${pause} s`);
      await sleep(pause);
      try {
        offset = await offsetOf(url); // where the server stands: the bytes of a broken chunk that arrived count
      } catch (again) {
        if (again instanceof Refused) throw again;
      }
    }
  }
  return { id: url.split("/").pop(), forget: () => localStorage.removeItem(key) };
}

function resumableForm(form) {
  const fileInput = form.querySelector("input[type=file][name=file]");
  const uploadInput = form.querySelector("input[name=upload]");
  const button = form.querySelector("button[type=submit]");
  const box = form.querySelector(".upload-progress");
  if (!fileInput || !uploadInput || !box || !window.XMLHttpRequest) return;
  const bar = box.querySelector("progress");
  const status = box.querySelector(".upload-status");
  const label = button.textContent;
  form.addEventListener("submit", async (event) => {
    const file = fileInput.files[0];
    if (!file) return; // nothing chosen: the form says so (or uses the upload it already has)
    event.preventDefault();
    button.disabled = true;
    box.hidden = false;
    status.classList.remove("errorlist");
    const report = (done, note) => {
      bar.max = file.size;
      bar.value = done;
      box.dataset.percent = String(Math.floor((100 * done) / file.size));
      status.textContent = note || `${file.name}: ${megabytes(done)} of ${megabytes(file.size)} (${box.dataset.percent} %)`;
    };
    report(0, `Starting ${file.name}`);
    try {
      const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
      const upload = await tusUpload(file, form.dataset.tus, form.dataset.tusEndpoint, csrf, report);
      box.dataset.done = "true";
      status.textContent = `${file.name} is uploaded; checking it...`;
      uploadInput.value = upload.id;
      fileInput.disabled = true; // the bytes are on the server: the form sends the upload's id, not the file
      upload.forget();
      form.submit();
    } catch (error) {
      status.textContent = error instanceof Refused ? error.message : `${file.name}: ${error.message}`;
      status.classList.add("errorlist");
      button.disabled = false;
      button.textContent = label;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-tus]").forEach(resumableForm);
});
