// Talking to the loraloop API on this page's origin.
//
// Every call is bounded in time (an AbortController), and every failure becomes an
// ApiError carrying the HTTP status (0: no answer) and the API's own words: the
// `error.message` of its OpenAI-style error body. Nothing here waits forever.

export const TIMEOUT_MS = 15000;
export const STREAM_FIRST_BYTE_MS = 120000; // queueing plus prefill on a busy CPU
export const STREAM_IDLE_MS = 60000; // between two chunks of a streamed answer

export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  // "HTTP 409 conflict: the live version ... " or "API unreachable: ..."
  describe() {
    if (this.status === 0) return this.message;
    return `HTTP ${this.status}${this.code ? " " + this.code : ""}: ${this.message}`;
  }
}

function noAnswer(err, timeoutMs) {
  if (err instanceof ApiError) return err;
  if (err && err.name === "AbortError") {
    return new ApiError(0, `the API did not answer within ${timeoutMs / 1000} s`, "timeout");
  }
  return new ApiError(0, `API unreachable (${err && err.message ? err.message : err})`,
    "unreachable");
}

function refusal(status, text) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  const error = body && body.error;
  if (error && error.message) return new ApiError(status, error.message, error.code || null);
  if (body && typeof body.detail === "string") return new ApiError(status, body.detail);
  return new ApiError(status, text ? text.slice(0, 300) : `no body (status ${status})`);
}

function headersFor(token, extra, hasBody) {
  const headers = { ...extra };
  if (hasBody) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// One JSON request: resolves { data, headers, status } or throws ApiError.
export async function call(path, { method = "GET", body, token, headers = {},
  timeoutMs = TIMEOUT_MS } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(path, {
      method,
      headers: headersFor(token, headers, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
    const text = await response.text();
    if (!response.ok) throw refusal(response.status, text);
    return { data: text ? JSON.parse(text) : null, headers: response.headers,
      status: response.status };
  } catch (err) {
    throw noAnswer(err, timeoutMs);
  } finally {
    clearTimeout(timer);
  }
}

// Server-sent events of one streamed chat completion.
//
// onOpen(headers) is called once the answer starts, onEvent(chunk) for each chunk
// (JSON), in order. Resolves at [DONE]; throws ApiError for a refusal, an in-band
// error event, a stream cut short, or silence longer than the limits. `signal`
// (optional) lets the person stop the answer.
export async function streamChat(body, { token, onOpen, onEvent, signal } = {}) {
  const controller = new AbortController();
  let limit = STREAM_FIRST_BYTE_MS;
  let timer = setTimeout(() => controller.abort(), limit);
  const rearm = (ms) => {
    clearTimeout(timer);
    limit = ms;
    timer = setTimeout(() => controller.abort(), ms);
  };
  if (signal) signal.addEventListener("abort", () => controller.abort(), { once: true });
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headersFor(token, { Accept: "text/event-stream" }, true),
      body: JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw refusal(response.status, await response.text());
    onOpen(response.headers);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      rearm(STREAM_IDLE_MS);
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        const event = JSON.parse(data);
        if (event.error) {
          throw new ApiError(0, `the answer stopped: ${event.error.message}`,
            event.error.code || null);
        }
        onEvent(event);
      }
    }
    throw new ApiError(0, "the answer was cut off: the connection closed before its end",
      "cut");
  } catch (err) {
    if (signal && signal.aborted) throw new ApiError(0, "stopped", "stopped");
    throw noAnswer(err, limit);
  } finally {
    clearTimeout(timer);
  }
}
