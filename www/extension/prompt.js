// Turning a page and a request into chat messages for the local model.
//
// The page comes first and the request last, so asking something else about the same page gives a
// prompt that shares its whole page part with the previous one: the engine keeps the KV cache of the
// longest common prefix, and only the new request is prefilled (seconds instead of a full prefill).

export const SYSTEM_PROMPT =
  "You answer questions about the web page the user is reading. Use only the page text given. Be brief.";

/** What each button asks for. */
export const TASKS = {
  summarize: () => "Summarize this page in two or three sentences.",
  explain: (selection) => `Explain this passage from the page in simple words:\n\u201c${selection}\u201d`,
  question: (question) => `Answer this question about the page: ${question}`,
  // The output is constrained to the schema (schemas.js); the words say what to look for.
  extract: (what) => `Extract ${what} from this page as JSON. Use only what the page says; give an empty list if it has none.`,
};

/** The marker put where page text was cut to fit the token budget. */
export const TRUNCATED = "[\u2026 the rest of the page was cut to fit the model]";

/**
 * Cut `text` to at most `budget` tokens of `engine`'s tokenizer (encode, keep the first `budget` ids,
 * decode), at a word boundary. Resolves with {text, tokens, truncated}.
 */
export async function fitToBudget(engine, text, budget) {
  const ids = await engine.encode(text, { addSpecialTokens: false });
  if (ids.length <= budget) return { text, tokens: ids.length, truncated: false };
  let cut = await engine.decode(ids.slice(0, Math.max(0, budget)));
  cut = cut.replace(/\uFFFD+$/, ""); // a UTF-8 character split by the cut
  const space = cut.search(/\s\S*$/); // drop the last, possibly partial, word
  if (space > cut.length * 0.8) cut = cut.slice(0, space);
  return { text: cut.trimEnd(), tokens: budget, truncated: true };
}

/**
 * Chat messages for `task` ("summarize" | "explain" | "question" | "extract") about `page` ({title, text}),
 * whose text already fits the budget (see fitToBudget). `what` is what "extract" looks for, in words.
 */
export function buildMessages(task, page, { pageText, truncated, selection = "", question = "", what = "" }) {
  if (!TASKS[task]) throw new Error(`unknown task ${task}`);
  const title = page.title ? `Title: ${page.title}\n\n` : "";
  // Many pages start their text with the title again; say it once.
  let body = pageText;
  if (page.title && body.startsWith(page.title)) body = body.slice(page.title.length).trimStart();
  const content =
    `${title}Page text:\n${body || "(the page has no text)"}${truncated ? `\n${TRUNCATED}` : ""}\n\n` +
    TASKS[task]({ explain: selection, extract: what }[task] ?? question);
  return [
    { role: "system", content: SYSTEM_PROMPT },
    { role: "user", content },
  ];
}
