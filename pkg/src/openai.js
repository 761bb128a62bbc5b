// OpenAI-shaped chat completions over Engine. Shapes follow the OpenAI Chat Completions API
// (openai-node's ChatCompletion / ChatCompletionChunk); deviations are listed in README.md:
// usage (with timings) rides on the final chunk of every stream, `finish_reason` can be "abort",
// sampling defaults to greedy (temperature 0), and fields we cannot honour are rejected, not ignored.

import { BadRequestError } from "./errors.js";

/** Request fields we honour (or accept as no-ops), with the engine option they map to. */
const SAMPLING_FIELDS = {
  temperature: "temperature",
  top_p: "topP",
  top_k: "topK",
  min_p: "minP",
  repetition_penalty: "repetitionPenalty",
  presence_penalty: "presencePenalty",
  frequency_penalty: "frequencyPenalty",
  seed: "seed",
};
const ACCEPTED = new Set([
  "messages",
  "model", // informational: the engine serves the model it loaded
  "stream",
  "stream_options",
  "max_tokens",
  "max_completion_tokens",
  "stop",
  "n",
  "user",
  "logprobs",
  "response_format",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "chat_template_kwargs",
  "signal",
  "logit_bias",
  ...Object.keys(SAMPLING_FIELDS),
]);

/**
 * `engine.chat.completions.create(request, {signal})`: a ChatCompletion, or with `stream: true` an
 * async iterable of ChatCompletionChunk, once the prompt has been processed (so a stream's create()
 * rejects for BUSY and bad options, as a server answers with an error status, not a broken stream).
 */
export async function createChatCompletion(engine, request, requestOptions = {}) {
  const { input, options, stream, tools } = parseRequest(request);
  const signal = requestOptions?.signal ?? request.signal;
  if (signal) options.signal = signal;
  const gen = engine._start(input, options);
  const id = `chatcmpl-${randomId()}`;
  const created = Math.floor(Date.now() / 1000);
  const model = engine.modelId;
  if (stream) {
    await gen._started.catch((err) => chatError(err, request));
    return chunkStream(gen, { id, created, model, tools });
  }
  const r = await gen.result.catch((err) => chatError(err, request));
  const calls = r.toolCalls?.length ? r.toolCalls : undefined;
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [
      {
        index: 0,
        message: calls ? { role: "assistant", content: r.content || null, tool_calls: calls } : { role: "assistant", content: r.text },
        finish_reason: r.finishReason,
        logprobs: null,
      },
    ],
    usage: usageOf(r),
    timings: timingsOf(r),
  };
}

/** An engine error in the request's terms: a bad schema is the `response_format` field's. */
function chatError(err, request) {
  if (err?.option === "jsonSchema" && request.response_format) err.option = "response_format";
  throw err;
}

/** Validate an OpenAI request; returns the engine input and generation options. */
export function parseRequest(request) {
  if (!request || typeof request !== "object") {
    throw new BadRequestError("chat.completions.create needs a request object: { messages: [...] }");
  }
  const unknown = Object.keys(request).filter((k) => !ACCEPTED.has(k) && request[k] !== undefined);
  if (unknown.length) {
    throw new BadRequestError(`chat.completions.create: unsupported field(s) ${unknown.join(", ")}`);
  }
  const unsupported = [];
  if (request.n !== undefined && request.n !== null && request.n !== 1) unsupported.push("n (only 1)");
  if (request.logprobs) unsupported.push("logprobs");
  if (unsupported.length) {
    throw new BadRequestError(`chat.completions.create: not supported: ${unsupported.join(", ")}`);
  }
  if (!Array.isArray(request.messages) || request.messages.length === 0) {
    throw new BadRequestError("chat.completions.create: messages must be a non-empty array of {role, content}");
  }
  const messages = request.messages.map((m, i) => {
    if (!m || typeof m.role !== "string") throw new BadRequestError(`messages[${i}]: role must be a string`);
    const out = { role: m.role, content: contentText(m.content, i, m) };
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (!Array.isArray(m.tool_calls)) throw new BadRequestError(`messages[${i}].tool_calls must be an array`);
      out.tool_calls = m.tool_calls.map((c, j) => {
        const f = c?.function;
        if (!f || typeof f.name !== "string") throw new BadRequestError(`messages[${i}].tool_calls[${j}].function.name must be a string`);
        const args = typeof f.arguments === "string" ? f.arguments : JSON.stringify(f.arguments ?? {});
        return { id: String(c.id ?? `call_${i}_${j}`), type: "function", function: { name: f.name, arguments: args } };
      });
    }
    if (m.tool_call_id !== undefined && m.tool_call_id !== null) out.tool_call_id = String(m.tool_call_id);
    if (typeof m.name === "string") out.name = m.name;
    return out;
  });
  const options = {};
  for (const [field, key] of Object.entries(SAMPLING_FIELDS)) {
    const v = request[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isFinite(v)) throw new BadRequestError(`${field} must be a number, not ${JSON.stringify(v)}`);
    options[key] = v;
  }
  if (request.logit_bias !== undefined && request.logit_bias !== null) {
    const lb = request.logit_bias;
    if (typeof lb !== "object" || Array.isArray(lb)) throw new BadRequestError("logit_bias must be an object {token id: bias}");
    for (const [id, bias] of Object.entries(lb)) {
      if (!/^\d+$/.test(id)) throw new BadRequestError(`logit_bias key ${JSON.stringify(id)} is not a token id`);
      if (typeof bias !== "number" || !Number.isFinite(bias)) throw new BadRequestError(`logit_bias[${id}] must be a number, not ${JSON.stringify(bias)}`);
    }
    options.logitBias = lb;
  }
  Object.assign(options, responseFormat(request.response_format));
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  if (maxTokens !== undefined && maxTokens !== null) {
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new BadRequestError(`max_tokens must be a positive integer, not ${maxTokens}`);
    options.maxTokens = maxTokens;
  }
  if (request.stop !== undefined && request.stop !== null) {
    const stop = [request.stop].flat();
    if (!stop.every((s) => typeof s === "string")) throw new BadRequestError("stop must be a string or an array of strings");
    options.stop = stop;
  }
  // Tools: the engine checks them against the model's template (BAD_REQUEST naming the field)
  // and renders them; "none" hides them.
  const input = { messages };
  // Template variables (vLLM's name), e.g. {enable_thinking: false}: the engine renders and checks them.
  if (request.chat_template_kwargs !== undefined && request.chat_template_kwargs !== null) {
    input.chatTemplateKwargs = request.chat_template_kwargs;
  }
  const hasTools = request.tools !== undefined && request.tools !== null;
  if (hasTools) {
    if (!Array.isArray(request.tools)) throw new BadRequestError("tools must be an array of {type: \"function\", function}");
    input.tools = request.tools;
    options.tools = request.tools;
  }
  if (request.tool_choice !== undefined && request.tool_choice !== null) {
    input.toolChoice = request.tool_choice;
    options.toolChoice = request.tool_choice;
  }
  if (request.parallel_tool_calls !== undefined && request.parallel_tool_calls !== null) {
    if (typeof request.parallel_tool_calls !== "boolean") throw new BadRequestError("parallel_tool_calls must be a boolean");
    if (hasTools) options.parallelToolCalls = request.parallel_tool_calls;
  }
  // Under "required" or a named function the whole reply is calls.
  const choice = request.tool_choice;
  const callsOnly = hasTools && request.tools.length > 0 && (choice === "required" || (choice && typeof choice === "object"));
  const toolsOn = hasTools && request.tools.length > 0 && choice !== "none";
  return { input, options, stream: request.stream === true, tools: toolsOn ? { callsOnly } : undefined };
}

/**
 * `response_format` → the engine's constraint option: json_object is any JSON object, json_schema
 * its `schema` (the engine compiles it and answers BAD_REQUEST naming what it cannot honour).
 * `strict` needs no flag: the output always validates.
 */
function responseFormat(format) {
  if (format === undefined || format === null) return {};
  if (typeof format !== "object" || Array.isArray(format)) {
    throw new BadRequestError("response_format must be an object: {type: \"text\" | \"json_object\" | \"json_schema\"}");
  }
  switch (format.type) {
    case "text":
      return {};
    case "json_object":
      return { jsonSchema: { type: "object" } };
    case "json_schema": {
      const js = format.json_schema;
      if (!js || typeof js !== "object" || Array.isArray(js)) {
        throw new BadRequestError("response_format.json_schema must be an object: {name, schema, strict?}");
      }
      if (js.name !== undefined && (typeof js.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name))) {
        throw new BadRequestError(`response_format.json_schema.name must be 1-64 letters, digits, _ or -, not ${JSON.stringify(js.name)}`);
      }
      if (js.strict !== undefined && js.strict !== null && typeof js.strict !== "boolean") {
        throw new BadRequestError("response_format.json_schema.strict must be a boolean");
      }
      const schema = js.schema ?? { type: "object" };
      if (typeof schema !== "object" && typeof schema !== "boolean") {
        throw new BadRequestError("response_format.json_schema.schema must be a JSON Schema object");
      }
      return { jsonSchema: schema };
    }
    default:
      throw new BadRequestError(
        `response_format.type must be "text", "json_object" or "json_schema", not ${JSON.stringify(format.type)}`,
      );
  }
}

/** A message's text: a string, or the text parts of a content array (null for a turn with tool calls). */
function contentText(content, i, m) {
  if (typeof content === "string") return content;
  if ((content === null || content === undefined) && (m.tool_calls || m.role === "assistant")) return "";
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        if (part?.type === "text" && typeof part.text === "string") return part.text;
        throw new BadRequestError(`messages[${i}].content[${j}]: only text parts are supported, not ${JSON.stringify(part?.type)}`);
      })
      .join("");
  }
  throw new BadRequestError(`messages[${i}].content must be a string or an array of text parts`);
}

/**
 * The chunk stream: role first, then one chunk per piece of text, then finish_reason + usage.
 * With tools, a call's text is not content: the calls come as `delta.tool_calls` (each whole, at
 * the end), and trailing blanks before a call are held back (the message's content drops them).
 */
async function* chunkStream(gen, { id, created, model, tools }) {
  const chunk = (delta, finishReason) => ({
    id,
    object: "chat.completion.chunk",
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
  });
  yield chunk({ role: "assistant", content: "" }, null);
  let held = ""; // trailing blanks (with tools)
  let skipped = ""; // call text not streamed as content
  for await (const c of gen) {
    if (!c.text) continue;
    if (!tools) {
      yield chunk({ content: c.text }, null);
    } else if (tools.callsOnly || c.toolCall) {
      skipped += c.text;
    } else {
      const text = held + c.text;
      const body = text.trimEnd();
      held = text.slice(body.length);
      if (body) yield chunk({ content: body }, null);
    }
  }
  const r = await gen.result;
  if (r.toolCalls?.length) {
    const deltas = r.toolCalls.map((c, index) => ({ index, id: c.id, type: "function", function: { ...c.function } }));
    yield chunk({ tool_calls: deltas }, null);
  } else if (held + skipped) {
    // No call came of it (cut by max_tokens, or not a valid call): it is text after all.
    yield chunk({ content: held + skipped }, null);
  }
  yield { ...chunk({}, r.finishReason), usage: usageOf(r), timings: timingsOf(r) };
}

function usageOf(r) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
    // Prompt tokens whose KV entries were kept from the previous turn (not prefilled again).
    prompt_tokens_details: { cached_tokens: r.reusedTokens },
  };
}

/** Timing figures (an extension of the OpenAI shape), snake_case like the rest of it. */
function timingsOf(r) {
  const t = r.timings ?? {};
  return {
    prefill_ms: t.prefillMs,
    decode_ms: t.decodeMs,
    total_ms: t.totalMs,
    time_to_first_token_ms: t.timeToFirstTokenMs,
    prefill_tokens_per_second: t.prefillTokensPerSecond,
    decode_tokens_per_second: t.decodeTokensPerSecond,
  };
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
