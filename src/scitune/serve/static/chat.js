// scitune chat page: sends the conversation to /v1/chat/completions with stream: true and shows the reply as it
// arrives. Model text is only ever set with textContent (never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], image: null, busy: false };

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function errorText(res) {
  try {
    const body = await res.json();
    return (body.error && body.error.message) || res.statusText;
  } catch (e) {
    return res.status + " " + res.statusText;
  }
}

async function loadModel() {
  try {
    const res = await fetch("/v1/models", { headers: headers(false) });
    if (!res.ok) throw new Error(await errorText(res));
    const body = await res.json();
    state.model = body.data[0].id;
    $("model").textContent = "model: " + state.model;
  } catch (e) {
    $("model").textContent = "model list unavailable: " + e.message;
  }
}

function bubble(role, text, image) {
  $("hint").hidden = true;
  const div = document.createElement("div");
  div.className = "msg " + role;
  if (image) {
    const img = document.createElement("img");
    img.src = image;
    img.alt = "attached figure";
    div.appendChild(img);
  }
  const span = document.createElement("span");
  span.className = "text";
  span.textContent = text;
  div.appendChild(span);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setImage(dataUrl) {
  state.image = dataUrl;
  $("preview").hidden = !dataUrl;
  $("clear-image").hidden = !dataUrl;
  if (dataUrl) $("preview").src = dataUrl;
  else { $("preview").removeAttribute("src"); $("file").value = ""; }
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Parse server-sent events from a fetch body; calls onEvent(json) for each data line until [DONE].
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("question").value.trim();
  if (state.busy || (!text && !state.image)) return;
  if (!state.model) await loadModel();
  const parts = [];
  if (state.image) parts.push({ type: "image_url", image_url: { url: state.image } });
  if (text) parts.push({ type: "text", text: text });
  const turn = { role: "user", content: parts };
  bubble("user", text, state.image);
  state.messages.push(turn);
  $("question").value = "";
  setImage(null);
  const out = bubble("assistant", "");
  out.dataset.state = "streaming";
  const span = out.querySelector(".text");
  state.busy = true;
  $("send").disabled = true;
  const started = performance.now();
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify({
        model: state.model || "",
        messages: state.messages,
        stream: true,
        max_tokens: parseInt($("max-tokens").value, 10) || 128,
        temperature: parseFloat($("temperature").value) || 0,
      }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    await readEvents(res, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices.length ? chunk.choices[0].delta : null;
      if (delta && delta.content) span.textContent += delta.content;
    });
    state.messages.push({ role: "assistant", content: span.textContent });
    if (!span.textContent) span.textContent = "(empty answer)";
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = ((performance.now() - started) / 1000).toFixed(1) + " s";
    out.appendChild(meta);
    out.dataset.state = "done";
  } catch (e) {
    state.messages.pop(); // the failed turn is not part of the conversation
    out.classList.add("error");
    span.textContent = "Error: " + e.message;
    out.dataset.state = "error";
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadModel();
  $("ask").addEventListener("submit", send);
  $("file").addEventListener("change", async () => {
    const file = $("file").files[0];
    if (file) setImage(await readFile(file));
  });
  $("clear-image").addEventListener("click", () => setImage(null));
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
  });
  $("reset").addEventListener("click", () => {
    state.messages = [];
    for (const m of Array.from(document.querySelectorAll(".msg"))) m.remove();
    $("hint").hidden = false;
  });
  $("api-key").addEventListener("change", loadModel);
});
