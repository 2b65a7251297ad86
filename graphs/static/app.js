// Push-to-talk against this cluster's POST /v1/voice/turn (NDJSON frames, docs/voice.md).
// Hold the button or the space bar to record; let go to send. The reply plays sentence by
// sentence as its audio frames arrive; pressing again while it speaks interrupts it.
// #app exposes what happened for tests: data-state, data-playback, data-stream (the latest
// turn's reply still streaming), data-samples-scheduled, data-samples-played (both counted over
// the page session) and data-turns.

const TOKEN_KEY = "her-serve.token";
const CHOICE_KEY = "her-serve.voice";
const CONVERSATION_KEY = "her-serve.conversation";
const UPLOAD_RATE = 16000; // what Whisper wants; resampled here, so uploads stay small
const OUTPUT_RATE = 24000;
const MIN_SECONDS = 0.3;
const MAX_SECONDS = 60;
const ENGINES = ["kokoro", "piper", "chatterbox"];
const STAGES = [
  ["stt", "speech to text"], ["retrieval", "retrieval"], ["llm_first_token", "first token"],
  ["first_audio", "first audio"], ["llm_done", "LLM done"], ["total", "total"],
];

const $ = (id) => document.getElementById(id);
const app = $("app");
const talk = $("talk");
const conversation = $("conversation");
const engineSelect = $("engine");
const voiceSelect = $("voice");

function newId() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0")).join("");
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function setState(state) {
  app.dataset.state = state;
  $("talk-label").textContent = {
    recording: "Listening… let go to send",
    thinking: "Thinking…",
    speaking: "Speaking · press to interrupt",
  }[state] || "Hold to talk";
}

// ---- the token: asked for only when /health says the server has one; never in a URL ----

let tokenWaiters = [];

function askToken(reason) {
  if (reason) $("token-reason").textContent = reason;
  setStatus("Waiting for the token");
  if (!$("token-dialog").open) $("token-dialog").showModal();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

$("token-form").addEventListener("submit", () => {
  localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  tokenWaiters.forEach((resolve) => resolve());
  tokenWaiters = [];
});

$("forget-token").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  askToken("The token was forgotten; enter it again to talk.").then(loadVoices);
});

async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    localStorage.removeItem(TOKEN_KEY);
    askToken("The server refused the token; enter it again.").then(loadVoices);
  }
  return response;
}

async function errorMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// ---- engine and voice ----

let voices = [];

function saved() {
  try {
    return JSON.parse(localStorage.getItem(CHOICE_KEY)) || {};
  } catch {
    return {};
  }
}

function fillVoices() {
  const engine = engineSelect.value;
  const wanted = saved().engine === engine ? saved().voice : null;
  voiceSelect.replaceChildren(...voices.filter((v) => v.model === engine).map((v) => {
    const option = new Option(v.id, v.id);
    option.selected = wanted ? v.id === wanted : v.default;
    return option;
  }));
}

function remember() {
  localStorage.setItem(CHOICE_KEY,
    JSON.stringify({ engine: engineSelect.value, voice: voiceSelect.value }));
}

async function loadVoices() {
  const response = await api("/v1/audio/voices");
  if (!response.ok) {
    setStatus(`Voices unavailable: ${await errorMessage(response)}`, true);
    if (response.status !== 401) setTimeout(loadVoices, 5000);
    return;
  }
  voices = (await response.json()).data;
  const engines = ENGINES.filter((e) => voices.some((v) => v.model === e));
  const wanted = engines.includes(saved().engine) ? saved().engine : engines[0];
  engineSelect.replaceChildren(...engines.map((e) => new Option(e, e, false, e === wanted)));
  fillVoices();
  setStatus("Ready");
}

engineSelect.addEventListener("change", () => { fillVoices(); remember(); });
voiceSelect.addEventListener("change", remember);

// ---- audio: one context for the microphone and the reply ----

let context = null;

function audioContext() {
  context ??= new AudioContext();
  // Phones start a context suspended until a gesture; every press and release is one.
  if (context.state === "suspended") context.resume();
  return context;
}

class Microphone {
  constructor() {
    this.node = null;
    this.stream = null;
    this.chunks = [];
    this.flushed = null;
  }

  async open() {
    if (this.node) return;
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("this browser gives the microphone only to https:// or localhost pages");
    }
    const ctx = audioContext();
    this.stream = await navigator.mediaDevices.getUserMedia(
      { audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true } });
    await ctx.audioWorklet.addModule("/static/capture.js");
    const node = new AudioWorkletNode(ctx, "capture");
    node.port.onmessage = ({ data }) => {
      if (data.flushed) this.flushed?.();
      else this.chunks.push(data);
    };
    const mute = ctx.createGain(); // keeps the worklet pulled without playing the microphone
    mute.gain.value = 0;
    ctx.createMediaStreamSource(this.stream).connect(node).connect(mute).connect(ctx.destination);
    this.node = node;
  }

  start() {
    this.chunks = [];
    this.node.port.postMessage("start");
  }

  async stop() {
    const flushed = new Promise((resolve) => { this.flushed = resolve; });
    this.node.port.postMessage("stop");
    await flushed;
    const samples = new Float32Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const chunk of this.chunks) { samples.set(chunk, at); at += chunk.length; }
    return samples;
  }

  close() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.node?.disconnect();
    this.node = this.stream = null;
  }
}

function resample(samples, from, to) {
  // Each output sample averages the input samples it covers: a box low-pass, enough for speech.
  if (from === to) return samples;
  const ratio = from / to;
  const out = new Float32Array(Math.floor(samples.length / ratio));
  for (let i = 0; i < out.length; i++) {
    const start = Math.floor(i * ratio);
    const end = Math.max(start + 1, Math.min(samples.length, Math.floor((i + 1) * ratio)));
    let sum = 0;
    for (let j = start; j < end; j++) sum += samples[j];
    out[i] = sum / (end - start);
  }
  return out;
}

function wav(samples, rate) {
  // 16-bit mono PCM WAV.
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 0x7fff, true));
  return new Blob([view], { type: "audio/wav" });
}

class Player {
  // Schedules each audio frame right after the previous one, so sentences play as they arrive.
  constructor() {
    this.sources = new Set();
    this.next = 0;
    this.onIdle = null;
  }

  get playing() {
    return this.sources.size > 0;
  }

  play(base64, rate) {
    const ctx = audioContext();
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
    if (!pcm.length) return;
    const buffer = ctx.createBuffer(1, pcm.length, rate);
    const channel = buffer.getChannelData(0);
    pcm.forEach((s, i) => { channel[i] = s / 0x8000; });
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const entry = { source, start: Math.max(this.next, ctx.currentTime + 0.05), samples: pcm.length, rate };
    source.start(entry.start);
    this.next = entry.start + buffer.duration;
    this.sources.add(entry);
    count("samplesScheduled", pcm.length);
    app.dataset.playback = "playing";
    source.onended = () => {
      this.sources.delete(entry);
      count("samplesPlayed", entry.samples);
      if (!this.playing) {
        app.dataset.playback = "finished";
        this.onIdle?.();
      }
    };
  }

  stop() {
    // Barge-in: silence at once, counting only what was heard of each sentence.
    const now = context ? context.currentTime : 0;
    for (const entry of this.sources) {
      entry.source.onended = null;
      entry.source.stop();
      const heard = Math.round((now - entry.start) * entry.rate);
      count("samplesPlayed", Math.max(0, Math.min(entry.samples, heard)));
    }
    this.sources.clear();
    this.next = 0;
    app.dataset.playback = "stopped";
  }
}

function count(key, n) {
  app.dataset[key] = String(Number(app.dataset[key]) + n);
}

const microphone = new Microphone();
const player = new Player();

// ---- a turn: upload, read the NDJSON frames, show and play them ----

let conversationId = sessionStorage.getItem(CONVERSATION_KEY) || newId();
sessionStorage.setItem(CONVERSATION_KEY, conversationId);
let current = null; // the turn being answered: {id, view, open, stopped, abort}

function turnView() {
  conversation.querySelector(".empty")?.remove();
  const view = document.createElement("article");
  view.className = "turn";
  view.innerHTML = `<p class="transcript pending">…</p><p class="reply"></p>
    <p class="notes"></p><dl class="timings"></dl>`;
  conversation.append(view);
  return view;
}

function showTimings(view, timings) {
  view.querySelector(".timings").replaceChildren(...STAGES
    .filter(([key]) => key in timings)
    .flatMap(([key, label]) => {
      const term = document.createElement("dt");
      const value = document.createElement("dd");
      term.textContent = label;
      value.textContent = `${Math.round(timings[key]).toLocaleString("en")} ms`;
      return [term, value];
    }));
}

function note(view, text, isError = false) {
  const line = document.createElement("span");
  line.textContent = text;
  line.classList.toggle("error", isError);
  view.querySelector(".notes").append(line);
}

function finishIfQuiet(turn) {
  if (current === turn && !turn.open && !player.playing) {
    current = null;
    if (app.dataset.state !== "recording") setState("idle");
  }
}

async function send(samples, rate) {
  const id = newId();
  const turn = { id, view: turnView(), open: true, stopped: false, abort: new AbortController() };
  current = turn;
  app.dataset.turns = String(Number(app.dataset.turns) + 1);
  app.dataset.stream = "open";
  setState("thinking");
  const form = new FormData();
  form.append("file", wav(resample(samples, rate, UPLOAD_RATE), UPLOAD_RATE), "question.wav");
  form.append("turn_id", id);
  form.append("conversation_id", conversationId);
  form.append("output_sample_rate", String(OUTPUT_RATE));
  if (engineSelect.value) form.append("engine", engineSelect.value);
  if (voiceSelect.value) form.append("voice", voiceSelect.value);
  if ($("system-prompt").value.trim()) form.append("system_prompt", $("system-prompt").value.trim());
  if ($("max-tokens").value) form.append("max_tokens", $("max-tokens").value);
  if ($("language").value) form.append("language", $("language").value);
  if ($("retrieve").checked) form.append("retrieve", "true");
  try {
    const response = await api("/v1/voice/turn", { method: "POST", body: form, signal: turn.abort.signal });
    if (!response.ok) throw new Error(await errorMessage(response));
    await readFrames(response.body, (frame) => show(turn, frame));
  } catch (error) {
    if (!turn.stopped) note(turn.view, `The turn failed: ${error.message}`, true);
  } finally {
    turn.open = false;
    if (current === turn) app.dataset.stream = "closed";
    turn.view.querySelector(".transcript").classList.remove("pending");
    finishIfQuiet(turn);
  }
}

async function readFrames(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop();
    lines.filter((line) => line.trim()).forEach((line) => onFrame(JSON.parse(line)));
  }
  if (pending.trim()) onFrame(JSON.parse(pending));
}

function show(turn, frame) {
  showFrame(turn, frame);
  conversation.scrollTop = conversation.scrollHeight; // keep the latest words in sight
}

function showFrame(turn, frame) {
  const view = turn.view;
  const reply = view.querySelector(".reply");
  if (frame.type === "transcript") {
    const transcript = view.querySelector(".transcript");
    transcript.classList.remove("pending");
    transcript.textContent = frame.text.trim() || "(nothing heard)";
  } else if (frame.type === "context") {
    note(view, `Looked up ${frame.results.length} of your documents.`);
  } else if (frame.type === "audio" && !turn.stopped) {
    reply.textContent = `${reply.textContent} ${frame.text}`.trim();
    player.onIdle = () => finishIfQuiet(turn);
    player.play(frame.audio, frame.sample_rate);
    setState("speaking");
  } else if (frame.type === "error") {
    note(view, `${frame.stage} failed: ${frame.message}`, true);
  } else if (frame.type === "done") {
    if (frame.cancelled) note(view, "Interrupted.");
    else if (frame.reply) reply.textContent = frame.reply;
    showTimings(view, frame.timings_ms || {});
  }
}

async function interrupt(turn) {
  turn.stopped = true;
  player.stop();
  if (!turn.open) return;
  const response = await api("/v1/voice/cancel", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ turn_id: turn.id }),
  });
  // 404: the server has not started the turn's answer yet (or just finished it); drop the stream.
  if (!response.ok) turn.abort.abort();
}

// ---- holding the button or the space bar ----

let holding = false;
let recording = null; // resolves once the microphone records (or fails to open)

function press() {
  if (holding) return;
  holding = true;
  audioContext();
  if (current) interrupt(current).catch((error) => setStatus(`Cancel failed: ${error.message}`, true));
  setState("recording");
  recording = microphone.open().then(() => microphone.start());
  recording.catch((error) => {
    holding = false;
    setState("idle");
    setStatus(`No microphone: ${error.message}`, true);
  });
}

async function release() {
  if (!holding) return;
  holding = false;
  audioContext();
  try {
    await recording; // a quick tap lets go before the microphone has opened
  } catch {
    return;
  }
  const samples = await microphone.stop();
  const rate = context.sampleRate;
  if (samples.length < MIN_SECONDS * rate) {
    setState("idle");
    setStatus("Too short: hold the button while you speak.");
    return;
  }
  setStatus("Ready");
  send(samples, rate);
}

talk.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  talk.setPointerCapture(event.pointerId);
  press();
});
for (const name of ["pointerup", "pointercancel"]) talk.addEventListener(name, () => release());
talk.addEventListener("contextmenu", (event) => event.preventDefault());

function typing(event) {
  return event.target.closest?.("input, textarea, select, dialog");
}

window.addEventListener("keydown", (event) => {
  if (event.code !== "Space" || typing(event)) return;
  event.preventDefault();
  if (!event.repeat) press();
});
window.addEventListener("keyup", (event) => {
  if (event.code !== "Space" || typing(event)) return;
  event.preventDefault();
  release();
});

// Never keep recording past the limit, nor hold the microphone in a hidden tab.
setInterval(() => {
  if (holding && microphone.chunks.length * 4096 > MAX_SECONDS * (context?.sampleRate || 48000)) release();
}, 1000);
document.addEventListener("visibilitychange", () => {
  if (document.hidden && !holding) microphone.close();
});

$("new-conversation").addEventListener("click", () => {
  if (current) interrupt(current);
  conversationId = newId();
  sessionStorage.setItem(CONVERSATION_KEY, conversationId);
  conversation.replaceChildren();
  setStatus("New conversation");
});

// ---- start: does the server want a token? ----

async function start() {
  const response = await fetch("/health");
  const health = await response.json();
  const needsToken = health.auth === "token";
  $("forget-token").hidden = !needsToken;
  if (needsToken && !localStorage.getItem(TOKEN_KEY)) await askToken();
  await loadVoices();
  const missing = ["VoiceGraph", "WhisperSTT"].filter((d) => health.deployments[d] !== "ready");
  if (missing.length) setStatus(`Not running: ${missing.join(", ")}`, true);
}

$("token-dialog").addEventListener("cancel", (event) => event.preventDefault());

start().catch((error) => setStatus(`Cannot reach the server: ${error.message}`, true));
