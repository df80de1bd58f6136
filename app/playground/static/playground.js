// Tandem playground: a chat client of Tandem's public HTTP API, in plain JavaScript.
//
// It does what any frontend would: lists workflows, posts turns with
// `Accept: text/event-stream` and reads the stream with fetch (an EventSource cannot
// POST or send an API key), stops runs with DELETE /v1/runs/{id}, and replays a run
// from GET /v1/runs/{id}/events. Nothing here is private to the server.
"use strict";

const KEY_STORAGE = "tandem.apiKey";
const EXECUTION_SOURCE = "PLAYGROUND";
const RUN_ID = /^[0-9a-f]{24}$/;
const TERMINAL = new Set(["completed", "failed", "cancelled", "aborted_looping_risk"]);

const $ = (id) => document.getElementById(id);

const session = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  workflows: new Map(), // workflow_id -> summary
  run: null, // {runId, workflowId, version, status, turn, waitingFor, lastSeq}
  turnInFlight: null, // AbortController of the stream being read
};

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `The server answered ${status}.`);
    this.status = status;
    this.code = body?.code || null;
  }
}

// ---------------------------------------------------------------------------------
// HTTP

function authHeaders(extra = {}) {
  return {"X-API-Key": session.key, ...extra};
}

async function api(method, path, body) {
  const headers = authHeaders({Accept: "application/json"});
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// The messages of a Server-Sent Events response as they arrive: {event, id, data}.
async function* sseMessages(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = /\r?\n\r?\n/.exec(buffer)) !== null) {
      const block = buffer.slice(0, end.index);
      buffer = buffer.slice(end.index + end[0].length);
      const fields = {event: "message", id: null, data: null};
      for (const line of block.split(/\r?\n/)) {
        if (line === "" || line.startsWith(":")) continue; // a keepalive comment
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") fields.data = fields.data === null ? value : `${fields.data}\n${value}`;
        else if (name === "event" || name === "id") fields[name] = value;
      }
      if (fields.data !== null) yield {...fields, data: JSON.parse(fields.data)};
    }
  }
}

async function openStream(path, init) {
  const response = await fetch(path, init);
  if (!response.headers.get("content-type")?.startsWith("text/event-stream")) {
    // Errors found before the turn starts (400, 401, 404, 409, 422) are plain JSON.
    throw new ApiError(response.status, await response.json().catch(() => null));
  }
  return response;
}

// ---------------------------------------------------------------------------------
// The conversation: one section per turn, with its bubbles and a collapsible panel of
// the turn's events. Live turns and replayed runs go through the same addEvent.

class Conversation {
  constructor(root) {
    this.root = root;
    this.turns = new Map();
  }

  clear() {
    this.root.replaceChildren();
    this.turns.clear();
  }

  turn(number) {
    let view = this.turns.get(number);
    if (view !== undefined) return view;
    this.root.querySelector(".empty")?.remove();
    const section = element("section", {class: "turn", "data-turn": String(number)});
    section.setAttribute("aria-label", `Turn ${number}`);
    const bubbles = element("div", {class: "bubbles"});
    const details = element("details", {class: "events"});
    const summary = element("summary");
    const list = element("ol");
    details.append(summary, list);
    section.append(bubbles, details);
    // Turns are shown in order even if a later one was drawn first.
    const next = [...this.turns.keys()].filter((n) => n > number).sort((a, b) => a - b)[0];
    this.root.insertBefore(section, next === undefined ? null : this.turns.get(next).section);
    view = {number, section, bubbles, summary, list, count: 0, llm: null, pendingUser: null};
    this.turns.set(number, view);
    this.countEvents(view);
    return view;
  }

  countEvents(view) {
    view.summary.textContent = `Turn ${view.number}: ${view.count} event${view.count === 1 ? "" : "s"}`;
  }

  bubble(view, kind, text, note) {
    const bubble = element("div", {class: `bubble ${kind}`});
    const body = element("span", {class: "text"});
    body.textContent = text;
    bubble.append(body);
    if (note) addNote(bubble, note);
    view.bubbles.append(bubble);
    this.scroll();
    return bubble;
  }

  // The user's message, shown as soon as it is sent; its input_received (or
  // input_rejected) event confirms it rather than drawing it again.
  pendingUserMessage(turnNumber, text) {
    const view = this.turn(turnNumber);
    view.pendingUser = this.bubble(view, "user pending", text);
    return view.pendingUser;
  }

  userMessage(view, text, rejectedReason) {
    let bubble = view.pendingUser;
    view.pendingUser = null;
    if (bubble === null) bubble = this.bubble(view, "user", text);
    bubble.classList.remove("pending");
    bubble.querySelector(".text").textContent = text;
    if (rejectedReason) {
      bubble.classList.add("rejected");
      addNote(bubble, `Not accepted: ${rejectedReason}`);
    }
  }

  addEvent(event) {
    const view = this.turn(event.turn);
    view.count += 1;
    this.countEvents(view);
    const item = element("li", {"data-seq": String(event.seq), "data-type": event.type});
    const type = element("span", {class: "type"});
    type.textContent = event.type;
    item.append(`#${event.seq} `, type);
    if (event.node_id) item.append(` at ${event.node_id}`);
    if (event.data && Object.keys(event.data).length > 0) {
      const data = element("code");
      data.textContent = JSON.stringify(event.data);
      item.append(": ", data);
    }
    view.list.append(item);

    const data = event.data || {};
    switch (event.type) {
      case "message":
        // An llm node with `show` says its reply again as a message: it is on screen.
        if (view.llm?.nodeId === event.node_id && view.llm.text === data.text) break;
        this.bubble(view, "assistant", data.text);
        break;
      case "llm_started":
        view.llm = {nodeId: event.node_id, text: "", done: false,
                    bubble: this.bubble(view, "assistant streaming", "")};
        view.llm.bubble.setAttribute("aria-busy", "true");
        break;
      case "llm_completed":
        if (view.llm === null) view.llm = {nodeId: event.node_id, bubble: this.bubble(view, "assistant", "")};
        view.llm.text = data.text;
        view.llm.done = true;
        view.llm.bubble.querySelector(".text").textContent = data.text;
        this.settleReply(view);
        break;
      case "input_received":
        this.userMessage(view, data.message, null);
        break;
      case "input_rejected":
        this.userMessage(view, data.message, data.reason || "it was rejected");
        break;
      case "state":
        this.stateCard(view, data.values || {});
        break;
      case "waiting_for_input":
      case "paused":
        if (data.prompt) this.bubble(view, "prompt", data.prompt);
        break;
      case "run_completed": {
        const bubble = this.bubble(view, "system", "The run is completed.");
        if (data.output !== null && data.output !== undefined) {
          const output = element("pre");
          output.textContent = `Output: ${JSON.stringify(data.output, null, 2)}`;
          bubble.append(output);
        }
        break;
      }
      case "run_failed":
        this.bubble(view, "system error", `The run failed: ${data.error}`);
        break;
      case "run_aborted":
        this.bubble(view, "system error", `The run was aborted: ${data.reason}`);
        break;
      case "run_cancelled":
        if (view.llm !== null && !view.llm.done) {
          addNote(view.llm.bubble, view.llm.text ? "Stopped before the reply was complete."
                                                 : "Stopped before any reply was stored.");
          this.settleReply(view);
        }
        if (view.pendingUser !== null) view.pendingUser.classList.remove("pending");
        this.bubble(view, "system", "The run was stopped.");
        break;
      default:
        break;
    }
    this.scroll();
  }

  // Text of the LLM reply in flight, as it is generated (never stored by the server).
  addText(turnNumber, text) {
    const view = this.turn(turnNumber);
    if (view.llm === null || view.llm.done) return;
    view.llm.text += text;
    view.llm.bubble.querySelector(".text").textContent = view.llm.text;
    this.scroll();
  }

  settleReply(view) {
    view.llm.bubble.classList.remove("streaming");
    view.llm.bubble.removeAttribute("aria-busy");
    view.llm.done = true;
  }

  stateCard(view, values) {
    const bubble = this.bubble(view, "assistant", "Values so far:");
    const table = element("table", {class: "state-values"});
    for (const [name, value] of Object.entries(values)) {
      const row = element("tr");
      const key = element("th", {scope: "row"});
      key.textContent = name;
      const cell = element("td");
      cell.textContent = typeof value === "string" ? value : JSON.stringify(value);
      row.append(key, cell);
      table.append(row);
    }
    bubble.append(table);
  }

  scroll() {
    this.root.scrollTop = this.root.scrollHeight;
  }
}

function element(tag, attributes = {}) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function addNote(bubble, text) {
  const note = element("span", {class: "note"});
  note.textContent = text;
  bubble.append(note);
}

const conversation = new Conversation($("conversation"));

// ---------------------------------------------------------------------------------
// What the page shows about the run, and which controls it offers.

function showNotice(error) {
  const notice = $("notice");
  if (!error) {
    notice.hidden = true;
    notice.textContent = "";
    return;
  }
  notice.textContent = error instanceof ApiError && error.code
    ? `${error.message} (${error.code})`
    : error.message || String(error);
  notice.hidden = false;
}

function announce(text) {
  $("live-status").textContent = text;
}

function setRun(run) {
  session.run = run;
  if (run !== null && location.hash !== `#run=${run.runId}`) {
    history.replaceState(null, "", `#run=${run.runId}`);
  }
  render();
}

function applyAnswer(answer) {
  // A turn's answer (or a stream's turn_result) says where the run is now.
  const run = session.run;
  run.runId = answer.run_id;
  run.workflowId = answer.workflow_id;
  run.version = answer.version;
  run.status = answer.status;
  run.turn = answer.turn;
  run.waitingFor = answer.waiting_for;
  for (const event of answer.events || []) run.lastSeq = Math.max(run.lastSeq, event.seq);
  if (TERMINAL.has(answer.status)) run.progress = 100;
  setRun(run);
}

function render() {
  const run = session.run;
  const busy = session.turnInFlight !== null;
  const workflowName = run ? session.workflows.get(run.workflowId)?.name : null;
  $("run-id").textContent = run?.runId || (busy ? "starting…" : "none");
  $("run-workflow").textContent = run?.workflowId
    ? `${workflowName || run.workflowId}, version ${run.version}` : "none";
  $("run-state").textContent = run?.status || "not started";
  $("run-turn").textContent = String(run?.turn || 0);
  const progress = run?.progress ?? 0;
  $("run-progress").value = progress;
  $("run-progress-text").textContent = `${progress} %`;

  const open = run !== null && run.runId !== null && !TERMINAL.has(run.status);
  $("stop").disabled = !open;

  const waiting = open && !busy ? run.waitingFor : null;
  const message = $("message");
  message.disabled = !open;
  if (!run) message.placeholder = "Start a run to chat";
  else if (!open) message.placeholder = run.runId ? "The run has ended" : "Starting…";
  else if (busy) message.placeholder = "The run is executing a turn…";
  else if (waiting?.kind === "continue") {
    message.placeholder = `${waiting.prompt || "Paused"} (a message is optional)`;
  } else message.placeholder = waiting?.prompt || "Your message";
  // Send stays focusable while a turn executes, so that focus is never lost.
  $("send").disabled = !open;
  $("send").setAttribute("aria-disabled", String(busy || waiting === null));
  $("continue").hidden = waiting?.kind !== "continue";

  const choices = $("choices");
  choices.replaceChildren();
  for (const choice of waiting?.choices || []) {
    const button = element("button", {type: "button"});
    button.textContent = choice;
    button.addEventListener("click", () => sendTurn(choice));
    choices.append(button);
  }
  choices.hidden = choices.childElementCount === 0;
  $("start").disabled = busy || !$("workflow").value;
  $("open").disabled = busy;
  $("conversation").setAttribute("aria-busy", String(busy));
}

// After a control the user was on is disabled, put focus where the next step is.
function keepFocus() {
  const active = document.activeElement;
  if (active && active !== document.body && !active.disabled && active.isConnected) return;
  const next = [$("continue"), $("message"), $("start")].find((c) => !c.disabled && !c.hidden);
  next?.focus();
}

async function refreshRun() {
  const run = session.run;
  if (!run?.runId) return;
  try {
    const status = await api("GET", `/v1/runs/${run.runId}`);
    if (session.run !== run) return;
    run.status = status.status;
    run.turn = status.turn;
    run.waitingFor = status.waiting_for;
    run.progress = status.progress ?? run.progress;
    render();
  } catch (error) {
    showNotice(error);
  }
}

// ---------------------------------------------------------------------------------
// Workflows

async function loadWorkflows() {
  const select = $("workflow");
  const chosen = select.value;
  session.workflows.clear();
  let cursor = null;
  for (let page = 0; page < 20; page += 1) {
    const query = new URLSearchParams({limit: "100"});
    if (cursor) query.set("cursor", cursor);
    const answer = await api("GET", `/v1/workflows?${query}`);
    for (const item of answer.items) session.workflows.set(item.workflow_id, item);
    cursor = answer.next_cursor;
    if (!cursor) break;
  }
  select.replaceChildren();
  if (session.workflows.size === 0) {
    select.append(new Option("No workflows for this key", ""));
    select.disabled = true;
  } else {
    for (const workflow of session.workflows.values()) {
      select.append(new Option(workflow.name, workflow.workflow_id));
    }
    select.disabled = false;
    if (session.workflows.has(chosen)) select.value = chosen;
  }
  await loadVersions();
}

async function loadVersions() {
  const workflowId = $("workflow").value;
  const select = $("version");
  const workflow = session.workflows.get(workflowId);
  $("workflow-description").textContent = workflow?.description || "";
  select.replaceChildren(new Option("Latest", ""));
  select.disabled = !workflow;
  render();
  if (!workflow) return;
  const detail = await api("GET", `/v1/workflows/${workflowId}`);
  if ($("workflow").value !== workflowId) return;
  select.replaceChildren(new Option(`Latest (version ${detail.latest_version})`, ""));
  for (const {version} of [...detail.versions].reverse()) {
    select.append(new Option(`Version ${version}`, String(version)));
  }
}

// ---------------------------------------------------------------------------------
// Turns

async function startRun() {
  const workflowId = $("workflow").value;
  if (!workflowId || session.turnInFlight) return;
  let inputs;
  const rawInputs = $("inputs").value.trim();
  if (rawInputs) {
    try {
      inputs = JSON.parse(rawInputs);
    } catch (error) {
      showNotice(new Error(`The run inputs are not valid JSON: ${error.message}`));
      $("inputs").focus();
      return;
    }
  }
  conversation.clear();
  history.replaceState(null, "", location.pathname);
  const version = $("version").value;
  session.run = {runId: null, workflowId, version: version === "" ? null : Number(version),
                 status: null, turn: 0, waitingFor: null, lastSeq: 0, progress: 0};
  const query = version === "" ? "" : `?version=${encodeURIComponent(version)}`;
  await postTurn(`/v1/workflows/${workflowId}/execute${query}`, inputs ? {inputs} : {}, null);
}

// A later turn: a message (or a choice) for the node the run waits at, or an empty
// turn that lets a paused run go on.
async function sendTurn(message) {
  const run = session.run;
  if (!run?.runId || TERMINAL.has(run.status)) return;
  if (session.turnInFlight) {
    showNotice(new Error("A turn is executing: wait for its reply, or stop the run."));
    return;
  }
  const waiting = run.waitingFor;
  if (waiting === null) return;
  if (message === null && waiting.kind === "message") {
    showNotice(new Error("This step waits for a message."));
    $("message").focus();
    return;
  }
  const body = {run_id: run.runId};
  if (message !== null) body.run_input = {message};
  $("message").value = "";
  const pending = message === null ? null : conversation.pendingUserMessage(run.turn + 1, message);
  await postTurn(`/v1/workflows/${run.workflowId}/execute`, body, pending);
}

// POST the turn with Accept: text/event-stream and draw its events as they come.
async function postTurn(path, body, pendingBubble) {
  const controller = new AbortController();
  session.turnInFlight = controller;
  showNotice(null);
  announce("The turn is executing.");
  const run = session.run;
  run.status = "running";
  render();
  let currentTurn = run.turn + 1;
  try {
    const response = await openStream(path, {
      method: "POST",
      headers: authHeaders({
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "X-Execution-Source": EXECUTION_SOURCE,
      }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    let result = null;
    for await (const message of sseMessages(response)) {
      if (message.event === "llm_delta") {
        conversation.addText(currentTurn, message.data.text);
      } else if (message.event === "turn_result") {
        result = message.data;
      } else if (message.event === "error") {
        throw new ApiError(500, message.data);
      } else {
        const event = message.data;
        currentTurn = event.turn;
        run.lastSeq = Math.max(run.lastSeq, event.seq);
        conversation.addEvent(event);
        if (run.turn !== event.turn) {
          run.turn = event.turn; // the turn executing now
          render();
        }
      }
    }
    if (result === null) throw new Error("The stream ended before the turn's result.");
    applyAnswer(result);
    announce(`Turn ${result.turn}: ${result.status.replaceAll("_", " ")}.`);
  } catch (error) {
    if (pendingBubble?.classList.contains("pending")) {
      pendingBubble.classList.replace("pending", "rejected");
      addNote(pendingBubble, "Not sent.");
    }
    showNotice(error);
    announce("The turn did not complete.");
  } finally {
    session.turnInFlight = null;
    if (run.status === "running") run.status = null;
    render();
    await refreshRun();
    keepFocus();
    if (!TERMINAL.has(session.run?.status) && document.activeElement === document.body) {
      $("message").focus();
    }
  }
}

async function stopRun() {
  const run = session.run;
  if (!run?.runId) return;
  try {
    const answer = await api("DELETE", `/v1/runs/${run.runId}`);
    announce(answer.message);
    // A stream in flight shows run_cancelled and its turn_result; otherwise the stop
    // is a turn of its own, read back from the event log.
    if (session.turnInFlight === null) await catchUp(run);
  } catch (error) {
    showNotice(error);
    await refreshRun();
  }
  keepFocus();
}

// Draw what the run's log holds past what is on screen (the events of its last turn).
async function catchUp(run) {
  await refreshRun();
  const answer = await api("GET", `/v1/runs/${run.runId}/events?turn=${run.turn}`);
  for (const event of answer.events) {
    if (event.seq > run.lastSeq) {
      conversation.addEvent(event);
      run.lastSeq = event.seq;
    }
  }
}

// ---------------------------------------------------------------------------------
// Opening a run by id: its conversation replayed from the event log.

async function openRun(runId) {
  if (session.turnInFlight) return;
  showNotice(null);
  try {
    const status = await api("GET", `/v1/runs/${runId}`);
    const log = await api("GET", `/v1/runs/${runId}/events`);
    conversation.clear();
    const run = {runId, workflowId: status.workflow_id, version: status.version,
                 status: status.status, turn: status.turn, waitingFor: status.waiting_for,
                 lastSeq: 0, progress: status.progress ?? 0};
    for (const event of log.events) {
      conversation.addEvent(event);
      run.lastSeq = Math.max(run.lastSeq, event.seq);
    }
    if (log.events.length === 0) conversation.root.append(element("p", {class: "empty"}));
    if (session.workflows.has(run.workflowId) && $("workflow").value !== run.workflowId) {
      $("workflow").value = run.workflowId;
      await loadVersions();
    }
    setRun(run);
    announce(`Opened run ${runId}: ${run.status.replaceAll("_", " ")}, turn ${run.turn}.`);
    if (run.status === "running") await followRun(run);
  } catch (error) {
    showNotice(error);
  }
}

// A run that is executing a turn (in another tab, say) is followed live on its stream.
async function followRun(run) {
  const controller = new AbortController();
  session.turnInFlight = controller;
  render();
  try {
    const response = await openStream(`/v1/runs/${run.runId}/stream`, {
      headers: authHeaders({Accept: "text/event-stream", "Last-Event-ID": String(run.lastSeq)}),
      signal: controller.signal,
    });
    let currentTurn = run.turn;
    for await (const message of sseMessages(response)) {
      if (message.event === "llm_delta") conversation.addText(currentTurn, message.data.text);
      else if (message.event === "error") throw new ApiError(500, message.data);
      else {
        currentTurn = message.data.turn;
        run.lastSeq = Math.max(run.lastSeq, message.data.seq);
        conversation.addEvent(message.data);
        if (run.turn !== currentTurn) {
          run.turn = currentTurn;
          render();
        }
      }
    }
  } catch (error) {
    showNotice(error);
  } finally {
    session.turnInFlight = null;
    await refreshRun();
  }
}

// ---------------------------------------------------------------------------------
// Wiring

async function useKey(key) {
  session.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  showNotice(null);
  try {
    await loadWorkflows();
    announce(`${session.workflows.size} workflows available.`);
    return true;
  } catch (error) {
    showNotice(error.status === 401 ? new Error(`This key is not accepted: ${error.message}`) : error);
    return false;
  }
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key && (await useKey(key))) $("workflow").focus();
});

$("workflow").addEventListener("change", () => loadVersions().catch(showNotice));

$("start-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startRun();
});

$("turn-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value;
  const waiting = session.run?.waitingFor;
  if (text.trim() === "" && waiting?.kind === "continue") sendTurn(null);
  else if (text.trim() !== "") sendTurn(text);
});

$("continue").addEventListener("click", () => {
  const text = $("message").value;
  sendTurn(text.trim() === "" ? null : text);
});

$("stop").addEventListener("click", stopRun);

$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const runId = $("open-run-id").value.trim().toLowerCase();
  if (!RUN_ID.test(runId)) {
    showNotice(new Error("A run id is 24 hexadecimal digits."));
    $("open-run-id").focus();
    return;
  }
  openRun(runId);
});

window.addEventListener("DOMContentLoaded", async () => {
  render();
  if (!session.key) {
    $("api-key").focus();
    return;
  }
  $("api-key").value = session.key;
  if (!(await useKey(session.key))) return;
  const linked = /^#run=([0-9a-f]{24})$/.exec(location.hash);
  if (linked) {
    $("open-run-id").value = linked[1];
    await openRun(linked[1]);
  }
});
