// The chat page: one conversation, streamed from /v1/chat/completions. Reasoning streams into a
// panel that collapses to "Thought for N tokens, T s" when the answer starts. Earlier turns go
// back to the model without their reasoning. See api/ui/__init__.py for what the server serves.

import { loadMarkdown, showMarkdown } from "./markdown.js";
import { readEvents } from "./sse.js";
import { applyCard, describeHttpError, KEY_STORAGE, refresh, settingsFor } from "./controls.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conversation: $("conversation"), empty: $("empty"), model: $("model"), composer: $("composer"),
  message: $("message"), send: $("send"), stop: $("stop"), newChat: $("new-chat"),
  showReasoning: $("show-reasoning"), thinking: $("thinking"), effort: $("effort"), budget: $("budget"),
  keyRow: $("key-row"), apiKey: $("api-key"), template: $("reply-template"),
};

const chat = { model: null, turns: [], current: null };  // turns: {user, answer}

function headers() {
  const h = { "content-type": "application/json" };
  const key = ui.apiKey.value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

async function loadModel() {
  ui.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.status === 401 || r.status === 403) {
      ui.keyRow.hidden = false;
      ui.model.textContent = ui.apiKey.value ? "the server refused this API key" : "this server needs an API key";
      document.body.dataset.ready = "key";
      ui.apiKey.focus();
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const card = (await r.json()).data[0];
    chat.model = card.id;
    ui.model.textContent = card.id;
    applyCard(ui, card.reasoning);
    ui.keyRow.hidden = !ui.apiKey.value;
    document.body.dataset.ready = "true";
  } catch (err) {
    ui.model.textContent = `server unreachable (${err.message}); retrying…`;
    setTimeout(loadModel, 3000);
  }
}

function addUserTurn(text) {
  ui.empty.hidden = true;
  const el = document.createElement("article");
  el.className = "turn user";
  el.setAttribute("aria-label", "You");
  el.textContent = text;
  ui.conversation.append(el);
}

class Reply {
  constructor() {
    this.el = ui.template.content.firstElementChild.cloneNode(true);
    ui.conversation.append(this.el);
    this.panel = this.el.querySelector(".reasoning");
    this.summary = this.el.querySelector(".reasoning-summary");
    this.reasoningEl = this.el.querySelector(".reasoning-text");
    this.answerEl = this.el.querySelector(".answer");
    this.status = this.el.querySelector(".status");
    this.usageEl = this.el.querySelector(".usage");
    this.copyButton = this.el.querySelector(".copy");
    this.reasoning = "";
    this.answer = "";
    this.reasoningTokens = 0;  // counted from deltas while streaming; usage corrects it at the end
    this.t0 = performance.now();
    this.tFirst = null;
    this.tThinkStart = null;
    this.tAnswer = null;
    this.usage = null;
    this.pending = false;
    this.copyButton.addEventListener("click", () => copy(this.answer.trim(), this.copyButton));
  }

  set phase(p) { this.el.dataset.phase = p; }
  get phase() { return this.el.dataset.phase; }

  firstToken() { if (this.tFirst === null) this.tFirst = performance.now(); }

  thinking(text, tokens) {
    this.firstToken();
    if (this.tThinkStart === null) this.tThinkStart = performance.now();
    this.panel.hidden = false;
    if (text) { this.reasoning += text; this.reasoningTokens += 1; }
    if (tokens !== undefined) this.reasoningTokens = tokens;
    this.phase = "thinking";
    this.summary.textContent = `Thinking… ${tokensText(this.reasoningTokens)}`;
    this.render();
  }

  answering(text) {
    this.firstToken();
    if (this.tAnswer === null) {
      this.tAnswer = performance.now();
      if (!this.panel.hidden) { this.panel.open = false; this.summarize(); }
    }
    this.answer += text;
    this.phase = "answering";
    this.render();
  }

  summarize() {
    const end = this.tAnswer ?? performance.now();
    const seconds = ((end - (this.tThinkStart ?? this.t0)) / 1000).toFixed(1);
    this.summary.textContent = `Thought for ${tokensText(this.reasoningTokens)}, ${seconds} s`;
  }

  render() {  // at most once a frame: Markdown of a long answer is not re-parsed per token
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.reasoningEl.textContent = this.reasoning;
      showMarkdown(this.answerEl, this.answer);
      keepScrolled();
    });
  }

  finish(phase, message) {
    this.phase = phase;
    if (this.usage) {
      const details = this.usage.completion_tokens_details || {};
      if (details.reasoning_tokens !== undefined) this.reasoningTokens = details.reasoning_tokens;
    }
    if (!this.panel.hidden) { this.panel.open = false; this.summarize(); }
    if (message) this.status.textContent = message;
    this.status.classList.toggle("error", phase === "error");
    this.copyButton.hidden = !this.answer;
    this.showUsage();
    this.render();
  }

  showUsage() {
    const end = performance.now();
    const parts = [];
    if (this.usage) {
      const r = this.usage.completion_tokens_details?.reasoning_tokens ?? 0;
      parts.push(`reasoning ${r} · answer ${this.usage.completion_tokens - r} tokens`);
    }
    if (this.tFirst !== null) {
      parts.push(`TTFT ${((this.tFirst - this.t0) / 1000).toFixed(2)} s`);
      const n = this.usage?.completion_tokens;
      const secs = (end - this.tFirst) / 1000;
      if (n && secs > 0) parts.push(`${(n / secs).toFixed(1)} tokens/s`);
    }
    this.usageEl.textContent = parts.join(" · ");
  }

  served(response) {
    const get = (name) => response.headers.get(name) || "?";
    this.usageEl.title = `prefill: ${get("x-splitmind-prefill")} · decode: ${get("x-splitmind-decode")}` +
      ` · request ${get("x-request-id")}`;
    this.el.dataset.prefill = get("x-splitmind-prefill");
    this.el.dataset.decode = get("x-splitmind-decode");
  }
}

const tokensText = (n) => `${n} token${n === 1 ? "" : "s"}`;

function keepScrolled() {
  const c = document.scrollingElement;
  if (c.scrollHeight - c.scrollTop - c.clientHeight < 200) c.scrollTop = c.scrollHeight;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function history(question) {
  const messages = [];
  for (const t of chat.turns) {  // earlier turns without their reasoning; failed ones left out
    if (!t.answer) continue;
    messages.push({ role: "user", content: t.user }, { role: "assistant", content: t.answer });
  }
  messages.push({ role: "user", content: question });
  return messages;
}

function setStreaming(on) {
  ui.send.hidden = on;
  ui.stop.hidden = !on;
  ui.conversation.setAttribute("aria-busy", on ? "true" : "false");
  if (on) ui.stop.focus();
  else if (document.activeElement === ui.stop || document.activeElement === document.body) ui.message.focus();
}

async function send(question) {
  if (!question.trim() || chat.current) return;
  addUserTurn(question);
  const turn = { user: question, answer: "" };
  const reply = new Reply();
  const controller = new AbortController();
  chat.current = { reply, controller };
  setStreaming(true);
  const body = {
    model: chat.model || "default", messages: history(question), stream: true,
    // Usage in every chunk (vLLM's extension): the live reasoning count is exact, not a guess.
    stream_options: { include_usage: true, continuous_usage_stats: true }, ...settingsFor(ui),
  };
  let outcome = ["error", "The reply was cut short: the stream ended before it finished."];
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    reply.served(response);
    if (!response.ok) {
      outcome = ["error", await describeHttpError(response)];
      if (response.status === 401) ui.keyRow.hidden = false;
    } else {
      outcome = await consume(response, reply, controller.signal) ?? outcome;
    }
  } catch (err) {
    if (controller.signal.aborted) outcome = ["stopped", "Stopped."];
    else if (reply.tFirst === null) {
      outcome = ["error", `Network error: the server could not be reached (${err.message}).`];
    } else outcome = ["error", `The reply was cut short: the connection was lost (${err.message}).`];
  }
  if (controller.signal.aborted && outcome[0] !== "done") outcome = ["stopped", "Stopped."];
  reply.finish(...outcome);
  turn.answer = outcome[0] === "done" ? reply.answer : "";
  chat.turns.push(turn);
  chat.current = null;
  setStreaming(false);
}

// Reads the stream into `reply`; the outcome, or null when the stream ended without [DONE].
async function consume(response, reply, signal) {
  for await (const event of readEvents(response.body, signal)) {
    if (event.comment !== undefined) {
      const m = /^thinking: (\d+)/.exec(event.comment);
      if (m) reply.thinking("", Number(m[1]));
      continue;
    }
    if (event.data === "[DONE]") return reply.phase === "error" ? ["error", reply.status.textContent] : ["done", ""];
    let chunk;
    try { chunk = JSON.parse(event.data); } catch { continue; }
    if (chunk.error) {
      reply.phase = "error";
      reply.status.textContent = `The server stopped this reply: ${chunk.error.message}`;
      continue;
    }
    if (chunk.usage) reply.usage = chunk.usage;
    const delta = chunk.choices?.[0]?.delta;
    if (!delta) continue;
    const thought = delta.reasoning_content ?? delta.reasoning;
    if (thought) reply.thinking(thought, chunk.usage?.completion_tokens_details?.reasoning_tokens);
    if (delta.content) reply.answering(delta.content);
  }
  return null;
}

function stop() { chat.current?.controller.abort(); }

function newChat() {
  stop();
  chat.turns = [];
  for (const el of [...ui.conversation.querySelectorAll(".turn")]) el.remove();
  ui.empty.hidden = false;
  ui.message.value = "";
  ui.message.focus();
}

function wire() {
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.message.value;
    if (!text.trim() || chat.current) return;
    ui.message.value = "";
    send(text);
  });
  ui.message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && chat.current) stop(); });
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);
  ui.showReasoning.addEventListener("change", () => {
    document.body.classList.toggle("reasoning-off", !ui.showReasoning.checked);
  });
  for (const c of [ui.thinking, ui.effort, ui.budget]) c.addEventListener("input", () => refresh(ui));
  refresh(ui);
  const useKey = () => {
    sessionStorage.setItem(KEY_STORAGE, ui.apiKey.value.trim());
    loadModel();
  };
  ui.apiKey.addEventListener("change", useKey);
  ui.apiKey.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); useKey(); }
  });
}

wire();
await loadMarkdown();
loadModel();
