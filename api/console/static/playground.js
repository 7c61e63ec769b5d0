// The playground: a chat over POST /v1/chat/completions with the developer's key, each answer
// streamed in. Same endpoint, limits and metering as any client; the key comes from this tab's
// sessionStorage (stashed at sign-in) or the key field. Text is inserted as text, never HTML.
// The conversation so far is sent with each message; "New chat" starts over.
(function () {
  "use strict";
  var STASH = "sluicegate.key";
  var form = document.getElementById("playground-form");
  if (!form) return;
  var output = document.getElementById("pg-output");
  var status = document.getElementById("pg-status");
  var keyField = document.getElementById("pg-key");
  var send = document.getElementById("pg-send");
  var stop = document.getElementById("pg-stop");
  var reset = document.getElementById("pg-reset");
  var controller = null;
  var history = [];  // [{role, content}] of the finished turns
  var answer = null;  // the element the streamed answer goes into

  keyField.value = sessionStorage.getItem(STASH) || "";

  function setUsage(usage) {
    document.getElementById("pg-usage").hidden = false;
    document.getElementById("pg-prompt-tokens").textContent = usage.prompt_tokens;
    document.getElementById("pg-completion-tokens").textContent = usage.completion_tokens;
    document.getElementById("pg-total-tokens").textContent = usage.total_tokens;
  }

  function addTurn(role, text) {
    var turn = document.createElement("div");
    turn.className = "turn turn-" + role;
    var who = document.createElement("span");
    who.className = "turn-role";
    who.textContent = role === "user" ? "You" : "Model";
    var content = document.createElement("div");
    content.className = "turn-text";
    content.textContent = text;
    turn.appendChild(who);
    turn.appendChild(content);
    output.appendChild(turn);
    return content;
  }

  function body(message) {
    var messages = [];
    var system = form.elements.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages = messages.concat(history);
    messages.push({ role: "user", content: message });
    return JSON.stringify({
      model: form.elements.model.value,
      messages: messages,
      max_tokens: parseInt(form.elements.max_tokens.value, 10) || 64,
      temperature: parseFloat(form.elements.temperature.value) || 0,
      stream: true,
      stream_options: { include_usage: true }
    });
  }

  // One SSE event ("data: {...}"); returns false at [DONE].
  function handleEvent(line) {
    if (line.indexOf("data:") !== 0) return true;
    var data = line.slice(5).trim();
    if (data === "[DONE]") return false;
    var chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    if (chunk.choices && chunk.choices.length && chunk.choices[0].delta.content) {
      answer.textContent += chunk.choices[0].delta.content;
    }
    if (chunk.usage) setUsage(chunk.usage);
    return true;
  }

  async function readStream(response) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) return;
      buffer += decoder.decode(part.value, { stream: true });
      var events = buffer.split("\n\n");
      buffer = events.pop();
      for (var i = 0; i < events.length; i++) {
        if (!handleEvent(events[i].trim())) return;
      }
    }
  }

  async function run() {
    var key = keyField.value.trim();
    if (!key) {
      status.textContent = "Enter an API key (or sign in again in this tab).";
      return;
    }
    var message = form.elements.message.value;
    if (!message.trim()) {
      status.textContent = "Write a message first.";
      return;
    }
    sessionStorage.setItem(STASH, key);
    addTurn("user", message);
    answer = addTurn("assistant", "");
    status.textContent = "Waiting for the first token…";
    send.disabled = true;
    stop.disabled = false;
    controller = new AbortController();
    try {
      var response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
        body: body(message),
        signal: controller.signal
      });
      if (!response.ok) {
        var problem = await response.json().catch(function () { return {}; });
        var message = problem.error ? problem.error.message : response.statusText;
        throw new Error(response.status + ": " + message);
      }
      status.textContent = "Streaming…";
      await readStream(response);
      history.push({ role: "user", content: message });
      history.push({ role: "assistant", content: answer.textContent });
      form.elements.message.value = "";
      status.textContent = "Done.";
    } catch (error) {
      status.textContent = error.name === "AbortError" ? "Stopped." : "Error " + error.message;
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    run();
  });
  stop.addEventListener("click", function () {
    if (controller) controller.abort();
  });
  reset.addEventListener("click", function () {
    if (controller) controller.abort();
    history = [];
    output.textContent = "";
    status.textContent = "New chat.";
  });
})();
